"""Procedural shape scenes: sampling, rendering, captions and the Shapes-GenEval prompt set.

A :class:`Scene` is one to three *groups* of coloured shapes (a group is 1-3 objects of one shape and one colour,
so that counting prompts exist) over a background that is either flat or a high-frequency texture (stripes,
checkers, noise). Flat regions need little refinement and textures need a lot, which is the premise of MoSs.

Geometry is in fractions of the image side: an object's ``(cx, cy)`` is the centre of its tight bounding box and
``size`` is the longer side of that box, so the same scene renders at any resolution. Shapes are upright (no
rotation): the captions do not talk about orientation, and the detector matches upright templates.

Everything is deterministic in its inputs: :func:`sample_scene` draws only from the ``numpy.random.Generator`` it
is given, a noise background carries its own seed, and ``ShapesDataset`` item ``i`` of seed ``s`` is drawn
from ``numpy.random.default_rng([s, i])``, so training can resume at any index.

Captions are lowercase words separated by single spaces, without punctuation: ``caption(scene).split()`` is a
subset of :func:`vocabulary` (the closed word list a word-level text encoder needs).

NumPy only; the torch training set is :class:`moss_eval.quality.shapes.dataset.ShapesDataset`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "BACKGROUNDS",
    "COLORS",
    "LAYOUTS",
    "PALETTE",
    "RELATIONS",
    "SHAPES",
    "TASKS",
    "Background",
    "Group",
    "Scene",
    "ShapeObject",
    "ShapesPrompt",
    "caption",
    "evaluation_prompts",
    "group_phrase",
    "groups",
    "render",
    "sample_scene",
    "scene_from_dict",
    "scene_to_dict",
    "shape_sdf",
    "vocabulary",
]

SHAPES = ("circle", "square", "triangle", "star", "diamond")
PLURALS = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "star": "stars",
    "diamond": "diamonds",
}
# Saturated colours (CIE Lab chroma 77-88) whose Lab hue angles are at least 29 degrees apart (red 36, orange 65,
# yellow 97, green 140, blue 291, purple 326), so the detector tells them apart by hue even where blur mixes them
# with the background; backgrounds stay far below their chroma.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (225, 30, 30),
    "orange": (250, 140, 0),
    "yellow": (245, 225, 20),
    "green": (30, 170, 50),
    "blue": (20, 100, 230),
    "purple": (180, 30, 190),
}
COLORS = tuple(PALETTE)
BACKGROUNDS = ("flat", "stripes", "checkers", "noise")
BACKGROUND_WORDS = {"flat": "plain", "stripes": "striped", "checkers": "checkered", "noise": "noisy"}
RELATIONS = ("left of", "right of", "above", "below")
NUMBER_WORDS = {2: "two", 3: "three"}
# GenEval-like tasks of the evaluation prompt set (the tag of each prompt), in the order prompts cycle through.
TASKS = ("single_object", "two_object", "counting", "colors", "position")

MAX_COUNT = 3  # objects per group
MAX_OBJECTS = 6  # per scene: keeps objects large enough to be drawn and detected at 128 px
MARGIN = 0.04  # free space between object boxes and around the border (fraction of the side)
HALF_GAP = 0.03  # a relation puts its groups in opposite halves, this far from the middle line
#: how a training scene places its objects: ``random`` anywhere (what the evaluation prompts' scenes do);
#: ``ordered`` two or three objects of a caption without a relation in caption order, left to right, one vertical
#: strip each; ``canonical`` every object in a slot fixed by the caption (its group, the group's count and the
#: relation), so the caption decides the whole coarse layout (see :func:`sample_scene`)
LAYOUTS = ("random", "ordered", "canonical")
# at most this far (fraction of the side) from its slot's centre: a third of an 8-px token
CANONICAL_JITTER = 0.03
FULL_REGION = (MARGIN, MARGIN, 1 - MARGIN, 1 - MARGIN)  # (x0, y0, x1, y1): the picture less its border


# ---------------------------------------------------------------------------------------------- data classes


@dataclass(frozen=True)
class ShapeObject:
    """One shape: ``shape`` in :data:`SHAPES`, ``color`` in :data:`COLORS`, box centre and longer box side as
    fractions of the image side."""

    shape: str
    color: str
    cx: float
    cy: float
    size: float


@dataclass(frozen=True)
class Background:
    """``kind`` in :data:`BACKGROUNDS`; ``colors``: one (flat, noise) or two (stripes, checkers) muted RGB colours;
    ``period``: stripe period / checker cell / noise grain in pixels at 128 px (scaled with the image);
    ``orientation``: stripes ``horizontal``, ``vertical`` or ``diagonal``; ``amplitude``: noise strength (0-255
    grey levels); ``seed``: the noise pattern, so rendering needs no outside randomness."""

    kind: str
    colors: tuple[tuple[int, int, int], ...]
    period: int = 8
    orientation: str = "vertical"
    amplitude: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class Scene:
    """Objects (grouped: the objects of one (shape, colour) group are consecutive), a background, and optionally
    a stated relation ``(group a, relation, group b)`` between two groups (indices into :func:`groups`), which
    the caption then states and which holds for every object pair of the two groups."""

    objects: tuple[ShapeObject, ...]
    background: Background
    relation: tuple[int, str, int] | None = None


@dataclass(frozen=True)
class Group:
    """The objects of one shape and colour in a scene (``count`` of them)."""

    shape: str
    color: str
    count: int
    objects: tuple[ShapeObject, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class ShapesPrompt:
    """One prompt of the Shapes-GenEval set: its index, caption, ground-truth scene (:func:`scene_to_dict`) and task
    tag (one of :data:`TASKS`)."""

    index: int
    prompt: str
    scene_dict: dict[str, Any]
    tag: str


def groups(scene: Scene) -> list[Group]:
    """The scene's groups in order of first appearance."""
    order: dict[tuple[str, str], list[ShapeObject]] = {}
    for obj in scene.objects:
        order.setdefault((obj.shape, obj.color), []).append(obj)
    return [Group(s, c, len(objs), tuple(objs)) for (s, c), objs in order.items()]


# ---------------------------------------------------------------------------------------------- vocabulary


def vocabulary() -> list[str]:
    """Every word any caption can contain, in a fixed order (a word-level text encoder's closed vocabulary)."""
    words = ["a", "an", *NUMBER_WORDS.values(), *COLORS, *SHAPES, *PLURALS.values(), "and"]
    for rel in RELATIONS:
        words.extend(w for w in rel.split() if w not in words)
    words += ["on", *BACKGROUND_WORDS.values(), "background"]
    return words


def group_phrase(shape: str, color: str, count: int) -> str:
    """``"a red circle"``, ``"an orange star"``, ``"three blue squares"``."""
    if count == 1:
        return f"{'an' if color[0] in 'aeiou' else 'a'} {color} {shape}"
    return f"{NUMBER_WORDS[count]} {color} {PLURALS[shape]}"


def caption(scene: Scene) -> str:
    """The template caption: ``"two red circles left of a blue square on a striped background"``,
    ``"a green star on a checkered background"``, ``"a red circle and two blue squares and a green star on a
    plain background"``."""
    gs = groups(scene)
    phrases = [group_phrase(g.shape, g.color, g.count) for g in gs]
    if scene.relation is not None:
        a, rel, b = scene.relation
        rest = [p for i, p in enumerate(phrases) if i not in (a, b)]
        body = " and ".join([f"{phrases[a]} {rel} {phrases[b]}", *rest])
    else:
        body = " and ".join(phrases)
    return f"{body} on a {BACKGROUND_WORDS[scene.background.kind]} background"


# ---------------------------------------------------------------------------------------------- (de)serialise


def scene_to_dict(scene: Scene) -> dict[str, Any]:
    """A JSON-able dict: ``objects`` (list of dicts), ``background`` (dict), ``relation`` (``[a, rel, b]`` or
    None) and, for readers that do not rebuild the scene, ``groups`` (``[{"shape", "color", "count"}]``)."""
    bg = scene.background
    return {
        "objects": [
            {"shape": o.shape, "color": o.color, "cx": o.cx, "cy": o.cy, "size": o.size}
            for o in scene.objects
        ],
        "background": {
            "kind": bg.kind,
            "colors": [list(c) for c in bg.colors],
            "period": bg.period,
            "orientation": bg.orientation,
            "amplitude": bg.amplitude,
            "seed": bg.seed,
        },
        "relation": None if scene.relation is None else list(scene.relation),
        "groups": [{"shape": g.shape, "color": g.color, "count": g.count} for g in groups(scene)],
    }


def scene_from_dict(data: Mapping[str, Any]) -> Scene:
    """The inverse of :func:`scene_to_dict` (``groups`` is derived, so it is ignored); unknown shapes, colours,
    backgrounds or relations are a ``ValueError`` naming the value."""
    objects = []
    for i, o in enumerate(data["objects"]):
        if o["shape"] not in SHAPES or o["color"] not in PALETTE:
            raise ValueError(f"scene objects[{i}]: unknown shape {o['shape']!r} or colour {o['color']!r}")
        objects.append(ShapeObject(o["shape"], o["color"], float(o["cx"]), float(o["cy"]), float(o["size"])))
    b = data["background"]
    if b["kind"] not in BACKGROUNDS:
        raise ValueError(f"scene background.kind={b['kind']!r}: expected one of {BACKGROUNDS}")
    background = Background(
        b["kind"],
        tuple(tuple(int(v) for v in c) for c in b["colors"]),
        int(b.get("period", 8)),
        str(b.get("orientation", "vertical")),
        float(b.get("amplitude", 0.0)),
        int(b.get("seed", 0)),
    )
    rel = data.get("relation")
    relation = None
    if rel is not None:
        if rel[1] not in RELATIONS:
            raise ValueError(f"scene relation={rel!r}: expected [group, one of {RELATIONS}, group]")
        relation = (int(rel[0]), str(rel[1]), int(rel[2]))
    return Scene(tuple(objects), background, relation)


# ---------------------------------------------------------------------------------------------- geometry


def _convex(vertices: Sequence[tuple[float, float]]) -> np.ndarray:
    """Half-planes ``(nx, ny, c)`` of a convex polygon: a point is inside when ``nx*u + ny*v - c <= 0`` for all."""
    pts = np.asarray(vertices, dtype=np.float64)
    centre = pts.mean(axis=0)
    rows = []
    for p0, p1 in zip(pts, np.roll(pts, -1, axis=0), strict=True):
        d = p1 - p0
        n = np.array([d[1], -d[0]]) / np.hypot(*d)
        if n @ (centre - p0) > 0:  # make the normal point outwards whatever the vertex order
            n = -n
        rows.append((n[0], n[1], n @ p0))
    return np.array(rows)


def _star_polygon(points: int = 5, inner: float = 0.5) -> tuple[np.ndarray, tuple[float, float]]:
    """The star's outline (tips and inner corners alternating), scaled so its tight box has longer side 1 and is
    centred on the origin; the box's (width, height) in those units."""
    step = math.pi / points
    # the first tip points up (image y grows down), then alternate inner corner / tip
    angles = -math.pi / 2 + step * np.arange(2 * points)
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    verts = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    lo, hi = verts.min(axis=0), verts.max(axis=0)
    scale = 1.0 / (hi - lo).max()
    return (verts - (lo + hi) / 2) * scale, tuple(((hi - lo) * scale).tolist())


def _polygon_sdf_exact(verts: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Exact signed distance to a simple (possibly concave) polygon: distance to the nearest edge, negative
    where the even-odd crossing test says inside. (A union of convex pieces would leave seams of half
    coverage along the pieces' shared edges.)"""
    a = verts[:, None, None, :]
    e = np.roll(verts, -1, axis=0)[:, None, None, :] - a
    wx, wy = u[None] - a[..., 0], v[None] - a[..., 1]
    t = np.clip((wx * e[..., 0] + wy * e[..., 1]) / (e[..., 0] ** 2 + e[..., 1] ** 2), 0.0, 1.0)
    dist2 = ((wx - t * e[..., 0]) ** 2 + (wy - t * e[..., 1]) ** 2).min(axis=0)
    ay, by = a[..., 1], a[..., 1] + e[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = a[..., 0] + e[..., 0] * (v[None] - ay) / e[..., 1]
    crossings = ((ay > v[None]) != (by > v[None])) & (u[None] < x_cross)
    inside = crossings.sum(axis=0) % 2 == 1
    return np.where(inside, -1.0, 1.0) * np.sqrt(dist2)


_TRIANGLE = _convex([(0.0, -0.5), (0.5, 0.5), (-0.5, 0.5)])  # upright, filling its box
_STAR, _ = _star_polygon()  # its tight box is wider than tall (1 x 0.95); the others fill a square box


def _polygon_sdf(planes: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # planes (..., E, 3) -> max over edges of the signed distance to each edge line: exact inside a convex
    # polygon, a lower bound outside it (only the anti-aliasing band, one pixel wide, depends on it)
    d = planes[..., 0, None, None] * u + planes[..., 1, None, None] * v - planes[..., 2, None, None]
    return d.max(axis=-3)


def shape_sdf(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) of ``shape`` in unit coordinates: the shape's tight box has longer side
    1 and is centred on ``(0, 0)``; ``v`` grows downwards."""
    if shape == "circle":
        return np.sqrt(u * u + v * v) - 0.5
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.5
    if shape == "diamond":
        return (np.abs(u) + np.abs(v) - 0.5) * (1 / math.sqrt(2))
    if shape == "triangle":
        return _polygon_sdf(_TRIANGLE, u, v)
    if shape == "star":
        return _polygon_sdf_exact(_STAR, u, v)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


# ---------------------------------------------------------------------------------------------- rendering


def _background(bg: Background, size: int) -> np.ndarray:
    scale = size / 128  # texture periods are given at 128 px so a scene looks the same at any resolution
    period = max(2.0, bg.period * scale)
    c0 = np.asarray(bg.colors[0], dtype=np.float32)
    if bg.kind == "flat":
        return np.broadcast_to(c0, (size, size, 3)).copy()
    idx = np.arange(size, dtype=np.float32)
    if bg.kind in ("stripes", "checkers"):
        c1 = np.asarray(bg.colors[1], dtype=np.float32)
        if bg.kind == "checkers":
            cell = (idx // period).astype(np.int64)
            sel = (cell[:, None] + cell[None, :]) % 2 == 1
        else:
            coord = {
                "vertical": np.broadcast_to(idx[None, :], (size, size)),
                "horizontal": np.broadcast_to(idx[:, None], (size, size)),
                "diagonal": (idx[:, None] + idx[None, :]) / math.sqrt(2),
            }[bg.orientation]
            sel = (coord % period) >= period / 2
        return np.where(sel[..., None], c1, c0)
    if bg.kind == "noise":
        grain = max(1, round(bg.period * scale))
        cells = -(-size // grain)
        rng = np.random.default_rng(bg.seed)
        noise = rng.standard_normal((cells, cells), dtype=np.float32) * bg.amplitude
        noise = np.repeat(np.repeat(noise, grain, axis=0), grain, axis=1)[:size, :size]
        return c0 + noise[..., None]  # grey noise: it changes lightness, never the hue
    raise ValueError(f"unknown background kind {bg.kind!r}; expected one of {BACKGROUNDS}")


def render(scene: Scene, size: int = 128) -> np.ndarray:
    """The scene as a ``uint8`` ``(size, size, 3)`` RGB array. Edges are anti-aliased over one pixel (coverage from
    the signed distance); every pixel fully inside a shape has exactly the palette colour."""
    img = _background(scene.background, size)
    for obj in scene.objects:
        side = obj.size * size
        x0, x1 = (
            max(0, math.floor(obj.cx * size - side / 2) - 1),
            min(size, math.ceil(obj.cx * size + side / 2) + 2),
        )
        y0, y1 = (
            max(0, math.floor(obj.cy * size - side / 2) - 1),
            min(size, math.ceil(obj.cy * size + side / 2) + 2),
        )
        if x0 >= x1 or y0 >= y1:
            continue
        u = ((np.arange(x0, x1, dtype=np.float32) + 0.5) - obj.cx * size)[None, :] / side
        v = ((np.arange(y0, y1, dtype=np.float32) + 0.5) - obj.cy * size)[:, None] / side
        alpha = np.clip(0.5 - shape_sdf(obj.shape, u, v) * side, 0.0, 1.0)[..., None]
        color = np.asarray(PALETTE[obj.color], dtype=np.float32)
        win = img[y0:y1, x0:x1]
        img[y0:y1, x0:x1] = win + alpha * (color - win)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- sampling


def _muted(rng: np.random.Generator, lightness: tuple[float, float] = (0.3, 0.85)) -> tuple[int, int, int]:
    """A low-saturation colour (HSV saturation <= 0.2): far in chroma from every palette colour."""
    h, s, v = rng.uniform(0, 1), rng.uniform(0.0, 0.2), rng.uniform(*lightness)
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return tuple(round(c * 255) for c in rgb)  # type: ignore[return-value]


def sample_background(rng: np.random.Generator, kind: str | None = None) -> Background:
    """A random background (``kind`` from :data:`BACKGROUNDS`, uniform when None)."""
    kind = kind or BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    if kind == "flat":
        return Background("flat", (_muted(rng),))
    if kind in ("stripes", "checkers"):
        # two muted colours of clearly different lightness, so the texture is high-contrast
        dark, light = _muted(rng, (0.25, 0.45)), _muted(rng, (0.6, 0.85))
        colors = (dark, light) if rng.uniform() < 0.5 else (light, dark)
        orientation = ("horizontal", "vertical", "diagonal")[int(rng.integers(3))]
        return Background(
            kind, colors, int(rng.integers(4, 13)), orientation if kind == "stripes" else "vertical"
        )
    if kind == "noise":
        return Background(
            "noise",
            (_muted(rng, (0.4, 0.7)),),
            int(rng.integers(1, 4)),
            amplitude=float(rng.uniform(15, 35)),
            seed=int(rng.integers(2**31)),
        )
    raise ValueError(f"unknown background kind {kind!r}; expected one of {BACKGROUNDS}")


def _place(
    rng: np.random.Generator,
    specs: Sequence[tuple[str, str]],
    regions: Sequence[tuple[float, float, float, float]],
    size_range: tuple[float, float],
) -> list[ShapeObject] | None:
    """Non-overlapping placement by rejection: boxes at least :data:`MARGIN` apart and inside their region
    ``(x0, y0, x1, y1)``. None when an object finds no place (the caller retries with smaller sizes)."""
    placed: list[ShapeObject] = []
    for (shape, color), (rx0, ry0, rx1, ry1) in zip(specs, regions, strict=True):
        s = float(rng.uniform(*size_range))
        for _ in range(60):
            lo_x, hi_x = rx0 + s / 2, rx1 - s / 2
            lo_y, hi_y = ry0 + s / 2, ry1 - s / 2
            if lo_x > hi_x or lo_y > hi_y:
                return None
            cx, cy = float(rng.uniform(lo_x, hi_x)), float(rng.uniform(lo_y, hi_y))
            if all(
                abs(cx - o.cx) >= (s + o.size) / 2 + MARGIN or abs(cy - o.cy) >= (s + o.size) / 2 + MARGIN
                for o in placed
            ):
                placed.append(ShapeObject(shape, color, round(cx, 4), round(cy, 4), round(s, 4)))
                break
        else:
            return None
    return placed


def _relation_regions(rel: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    lo, hi = MARGIN, 1 - MARGIN
    first, second = (lo, lo, 0.5 - HALF_GAP, hi), (0.5 + HALF_GAP, lo, hi, hi)  # left half, right half
    if rel in ("above", "below"):
        first, second = (lo, lo, hi, 0.5 - HALF_GAP), (lo, 0.5 + HALF_GAP, hi, hi)  # top half, bottom half
    return (first, second) if rel in ("left of", "above") else (second, first)


def _layout(
    rng: np.random.Generator,
    group_specs: Sequence[tuple[str, str, int]],
    relation: str | None,
    layout: str = "random",
) -> list[ShapeObject]:
    specs, regions = [], []
    rel_regions = _relation_regions(relation) if relation is not None else None
    for g, (shape, color, count) in enumerate(group_specs):
        region = rel_regions[g] if rel_regions is not None and g < 2 else FULL_REGION
        specs += [(shape, color)] * count
        regions += [region] * count
    n = len(specs)
    if layout == "canonical":
        return _canonical(rng, group_specs, specs, rel_regions)
    if layout == "ordered" and relation is None and 2 <= n <= 3:  # one strip per object, in caption order
        width = (1 - 2 * MARGIN) / n
        regions = [(MARGIN + k * width, MARGIN, MARGIN + (k + 1) * width, 1 - MARGIN) for k in range(n)]
    # Larger objects when there are few. Every scene of the evaluation tasks has at most three objects, which get at
    # least 0.2 of the side (26 px, three 8-px tokens at 128²): with the first sizes (0.13-0.26, two to four tokens)
    # the testbed drew blobs, because a shape of two tokens is decided by a few bits, and an object that covers a
    # twentieth of a 4² scale's token hardly tilts that token's bits, so whether it is there at all is decided
    # token by token. Crowded training scenes (4-6 objects) shrink towards the floor, which keeps a star
    # detectable at 128 px (about 15 px).
    lo, hi = _size_range(n)
    for attempt in range(60):
        placed = _place(rng, specs, regions, (lo, hi))
        if placed is not None:
            return placed
        hi = max(lo, hi * 0.92)
        if attempt >= 20:  # a tight layout (a relation's half, many objects): let the floor give way too
            lo = max(0.12, lo * 0.95)
            hi = max(hi, lo)
    raise RuntimeError(f"could not place {n} objects without overlap: {group_specs} (relation {relation})")


def _size_range(n: int) -> tuple[float, float]:
    """The object sizes (longer box side, fraction of the image side) of a scene of ``n`` objects."""
    hi = {1: 0.42, 2: 0.36, 3: 0.3}.get(n, 0.24 if n == 4 else 0.2)
    lo = 0.24 if n <= 2 else 0.2 if n == 3 else 0.13
    return lo, hi


def _slots(region: tuple[float, ...], k: int) -> tuple[list[tuple[float, float]], float]:
    """``k`` slot centres in ``region`` ``(x0, y0, x1, y1)``, in reading order, and the largest object a slot
    holds with :data:`MARGIN` to its neighbours: up to three in a row along the region's longer side, more in two
    rows."""
    x0, y0, x1, y1 = region
    w, h = x1 - x0, y1 - y0
    if k <= 3:
        cols, rows = (k, 1) if w >= h else (1, k)
    else:
        cols, rows = -(-k // 2), 2
    cw, ch = w / cols, h / rows
    centres = [(x0 + (j % cols + 0.5) * cw, y0 + (j // cols + 0.5) * ch) for j in range(k)]
    return centres, min(cw, ch) - MARGIN


def _canonical(
    rng: np.random.Generator,
    group_specs: Sequence[tuple[str, str, int]],
    specs: Sequence[tuple[str, str]],
    rel_regions: tuple[tuple[float, ...], tuple[float, ...]] | None,
) -> list[ShapeObject]:
    """Every object in a slot the caption fixes: with a relation, each group in its half (a row or column of its
    count); without, all objects in caption order, a row of up to three, else two rows. Only the sizes and a
    jitter of at most :data:`CANONICAL_JITTER` inside the slot are random, so boxes stay :data:`MARGIN` apart."""
    if rel_regions is None:
        centres, cap = _slots(FULL_REGION, len(specs))
    else:
        if len(group_specs) != 2:  # sample_scene states relations between two groups only
            raise ValueError(f"a relation needs two groups, got {len(group_specs)}: {group_specs}")
        centres, caps = [], []
        for g, (_, _, count) in enumerate(group_specs):
            c, cap_g = _slots(rel_regions[g], count)
            centres += c
            caps.append(cap_g)
        cap = min(caps)
    lo, hi = _size_range(len(specs))
    hi = min(hi, cap)
    lo = min(lo, hi)
    placed = []
    for (shape, color), (cx, cy) in zip(specs, centres, strict=True):
        s = float(rng.uniform(lo, hi))
        j = min(CANONICAL_JITTER, (cap - s) / 2)
        dx, dy = (float(v) for v in rng.uniform(-j, j, size=2))
        placed.append(ShapeObject(shape, color, round(cx + dx, 4), round(cy + dy, 4), round(s, 4)))
    return placed


def _distinct_groups(
    rng: np.random.Generator, counts: Sequence[int], shapes: str = "any"
) -> list[tuple[str, str, int]]:
    """``(shape, colour, count)`` per count, the pairs distinct; ``shapes``: ``"any"``, ``"same"`` (one shape,
    so the colours differ) or ``"different"`` (no shape twice)."""
    pairs: list[tuple[str, str, int]] = []
    shape0 = SHAPES[int(rng.integers(len(SHAPES)))]
    for count in counts:
        while True:
            shape = shape0 if shapes == "same" else SHAPES[int(rng.integers(len(SHAPES)))]
            color = COLORS[int(rng.integers(len(COLORS)))]
            if all((shape, color) != (s, c) and (shapes != "different" or shape != s) for s, c, _ in pairs):
                break
        pairs.append((shape, color, int(count)))
    return pairs


def sample_scene(
    rng: np.random.Generator, task: str | None = None, layout: str = "random", relation_rate: float = 0.5
) -> Scene:
    """A random scene drawn from ``rng`` alone.

    ``task=None`` (training): 1, 2 or 3 groups (probabilities 0.4 / 0.4 / 0.2), each of 1-3 objects (0.6 / 0.25 /
    0.15; at most :data:`MAX_OBJECTS` in all), shape and colour pairs distinct; two-group scenes state a relation
    with probability ``relation_rate`` (0.5: a fifth of all scenes; the draws are the same at any rate, so only
    that choice changes). This covers every evaluation task. A task name from :data:`TASKS` draws a scene of that
    task (what :func:`evaluation_prompts` uses): ``single_object`` one object; ``two_object`` two objects of
    different shapes; ``counting`` one group of 2 or 3; ``colors`` two objects of the same shape in different
    colours; ``position`` two objects of different shapes in a stated relation.

    ``layout`` (one of :data:`LAYOUTS`) places the objects: ``random`` anywhere (a relation's groups in their
    halves); ``ordered`` as ``random``, but two or three objects without a relation in caption order, left to
    right, one vertical strip of the picture each; ``canonical`` each object in a slot the caption fixes (a row of
    up to three in caption order, two rows for more; with a relation, each group in its half), sizes and a small
    jitter random. The captions and the draws before the placement are the same in every layout.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    if not 0.0 <= relation_rate <= 1.0:
        raise ValueError(f"relation_rate={relation_rate!r}: expected a probability in [0, 1]")
    background = sample_background(rng)
    relation = None
    if task is None:
        n_groups = int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2]))
        counts = [int(rng.choice([1, 2, 3], p=[0.6, 0.25, 0.15])) for _ in range(n_groups)]
        while sum(counts) > MAX_OBJECTS:
            counts[int(np.argmax(counts))] -= 1
        specs = _distinct_groups(rng, counts)
        if n_groups == 2 and rng.uniform() < relation_rate:
            relation = RELATIONS[int(rng.integers(len(RELATIONS)))]
    elif task == "single_object":
        specs = _distinct_groups(rng, [1])
    elif task == "two_object":
        # different shapes: binding two colours to one shape is the colors task
        specs = _distinct_groups(rng, [1, 1], shapes="different")
    elif task == "counting":
        specs = _distinct_groups(rng, [int(rng.integers(2, MAX_COUNT + 1))])
    elif task == "colors":
        specs = _distinct_groups(rng, [1, 1], shapes="same")
    elif task == "position":
        specs = _distinct_groups(rng, [1, 1], shapes="different")
        relation = RELATIONS[int(rng.integers(len(RELATIONS)))]
    else:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS} or None")
    objects = _layout(rng, specs, relation, layout)
    return Scene(tuple(objects), background, None if relation is None else (0, relation, 1))


# ---------------------------------------------------------------------------------------------- prompt set


def evaluation_prompts(n: int = 250, seed: int = 0) -> list[ShapesPrompt]:
    """The deterministic Shapes-GenEval prompt set: prompt ``i`` has task ``TASKS[i % 5]`` and its scene is drawn
    from ``default_rng([seed, i])``, so the first ``k`` prompts of any ``n >= k`` are the same (``n`` and
    ``seed`` are stored with each record, so the evaluator rebuilds exactly this list)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n={n!r}: the number of prompts must be an int >= 1")
    out = []
    for i in range(n):
        task = TASKS[i % len(TASKS)]
        scene = sample_scene(np.random.default_rng([int(seed), i]), task)
        out.append(ShapesPrompt(i, caption(scene), scene_to_dict(scene), task))
    return out
