"""What one generation runs: a method's plan of steps, and the tokens each step carries.

A generation is a sequence of :class:`Step` s over a scale schedule, planned by a method before anything runs:

* ``full`` — one scale, every position (the official next-scale pass);
* ``packed`` — several scales in one transformer pass, each with the positions its method selects at run time
  (the MoSs stage);
* a scale that no step names is skipped (scale skipping: its residual is never added).

A step may run on some of the CFG rows only (``rows``): ``uncond`` is FasterVAR's guidance weight 0 (the pass
carries each image's unconditional row, with that row's text and KV cache), ``cond`` is guidance weight 1 with
the conditional row. Once a step drops rows, every later step must drop the same ones (the cache of the dropped
rows is not written any more).

Every pass but the last appends its keys and values to the KV cache (the last one has nobody left to read them),
so the cache a generation allocates is the tokens of every appending pass: :attr:`StepPlan.cache_tokens`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

Grid = tuple[int, int]
STEP_KINDS = ("full", "packed")
STEP_ROWS = ("all", "cond", "uncond")


@dataclass(frozen=True)
class Step:
    """One transformer pass of a generation.

    ``scales``: schedule indices the pass carries (one for ``full``, coarsest first for ``packed``); ``stage``: the
    timing stage it counts under; ``append``: whether its keys and values go into the cache; ``plan``: for a
    packed step, the method's static plan of it (e.g. a :class:`~moss_dispatch.ScalePlan`), read back by the
    method when it selects the tokens; ``rows``: the CFG rows the pass carries (:data:`STEP_ROWS`).
    """

    kind: str
    scales: tuple[int, ...]
    stage: str
    append: bool = False
    plan: object = field(default=None, compare=False)
    select_stage: str | None = None  # the stage the selection of a packed step is timed under
    rows: str = "all"

    def __post_init__(self) -> None:
        if self.kind not in STEP_KINDS:
            raise ValueError(f"step kind must be one of {STEP_KINDS}, got {self.kind!r}")
        if self.rows not in STEP_ROWS:
            raise ValueError(f"step rows must be one of {STEP_ROWS}, got {self.rows!r}")
        if not self.scales or (self.kind == "full" and len(self.scales) != 1):
            raise ValueError(f"a {self.kind} step needs {'one scale' if self.kind == 'full' else 'scales'}")


@dataclass(frozen=True)
class StepPlan:
    """The steps of one generation and the KV cache they need (tokens per image and CFG row).

    ``uncached``: ``(first_layer, stop_layer, tokens)`` triples of tokens that those layers do not cache
    (FastVAR's pruned layers append only the tokens they kept), so layers may need different capacities.
    """

    steps: tuple[Step, ...]
    cache_tokens: int
    num_scales: int
    uncached: tuple[tuple[int, int, int], ...] = ()

    @property
    def skipped_scales(self) -> tuple[int, ...]:
        used = {s for step in self.steps for s in step.scales}
        return tuple(s for s in range(self.num_scales) if s not in used)

    @property
    def needs_unconditional(self) -> bool:
        """Whether some pass runs on the unconditional rows (then the batch carries them, guidance or not)."""
        return any(s.rows == "uncond" for s in self.steps)

    def cache_capacity(self, num_layers: int | None) -> int | tuple[int, ...]:
        """Cache tokens to allocate: one number for every layer, or one per layer when some cache fewer."""
        if not self.uncached:
            return self.cache_tokens
        if num_layers is None:
            raise ValueError(
                "this plan caches fewer tokens in some layers; the family must say its num_layers"
            )
        caps = [self.cache_tokens] * num_layers
        for first, stop, tokens in self.uncached:
            for layer in range(max(first, 0), min(stop, num_layers)):
                caps[layer] -= tokens
        return tuple(caps)

    def check_rows(self) -> None:
        """Once a step drops CFG rows, every later step drops the same ones (their cache is not written)."""
        dropped = None
        for i, step in enumerate(self.steps):
            if dropped is not None and step.rows != dropped:
                raise ValueError(
                    f"step {i} (scales {list(step.scales)}) runs on {step.rows!r} rows after an earlier step ran on "
                    f"{dropped!r} rows only; once guidance is turned off it must stay off for every later scale"
                )
            if step.rows != "all":
                dropped = step.rows


def sequential_plan(
    grids: tuple[Grid, ...], full_scales: range | tuple[int, ...], tail: tuple[Step, ...] = (), stage="draft"
) -> StepPlan:
    """Full steps over ``full_scales`` (then ``tail`` steps), with every pass but the last appending to the cache.

    ``tail`` steps are taken as given (a packed pass that reads the cache and adds nothing to it).
    """
    full = list(full_scales)
    steps = [Step("full", (si,), stage, append=bool(tail) or i < len(full) - 1) for i, si in enumerate(full)]
    return StepPlan((*steps, *tail), appended_tokens(grids, steps), len(grids))


def appended_tokens(grids, steps) -> int:
    """Cache tokens (per image and row) of the appending steps: every token of each scale they carry."""
    return sum(grids[si][0] * grids[si][1] for s in steps if s.append for si in s.scales)


@dataclass(frozen=True)
class ScaleTokens:
    """The tokens one scale contributes to a pass: every position (``flat_index`` None), or some of them.

    ``flat_index`` ``(B, n)`` int64: row-major positions on the scale's ``grid``, per image.
    """

    scale_index: int
    grid: Grid
    flat_index: torch.Tensor | None = None

    @property
    def count(self) -> int:
        return self.grid[0] * self.grid[1] if self.flat_index is None else int(self.flat_index.shape[1])


@dataclass(frozen=True)
class StepTokens:
    """Every token of one pass, scale by scale in pass order. ``selection`` is the method's own record of the
    choice (a :class:`~moss_dispatch.Dispatch` for MoSs), kept on the result for analysis."""

    parts: tuple[ScaleTokens, ...]
    selection: object = None

    @classmethod
    def full(cls, scale_index: int, grid: Grid) -> StepTokens:
        return cls((ScaleTokens(scale_index, grid),))

    @classmethod
    def whole_scales(cls, grids) -> StepTokens:
        """Every position of every scale, in schedule order (the teacher-forced training pass)."""
        return cls(tuple(ScaleTokens(i, tuple(g)) for i, g in enumerate(grids)))

    @property
    def num_tokens(self) -> int:
        return sum(p.count for p in self.parts)

    @property
    def is_full_scale(self) -> bool:
        return len(self.parts) == 1 and self.parts[0].flat_index is None

    @property
    def scales(self) -> tuple[int, ...]:
        return tuple(p.scale_index for p in self.parts)

    def scale_ids(self, device: torch.device | str) -> torch.Tensor:
        """``(N,)`` int64: the schedule index of every token's scale, in pass order."""
        return torch.cat(
            [torch.full((p.count,), p.scale_index, dtype=torch.long, device=device) for p in self.parts]
        )

    def positions(self, rows: int, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Row and column of every token on its own scale's grid.

        ``(N,)`` each when every part is a whole scale (the positions are the same for every image), else
        ``(rows, N)``: each image's selected positions, repeated for its CFG rows (images first, then again).
        """
        if all(p.flat_index is None for p in self.parts):
            rs, cs = [], []
            for p in self.parts:
                h, w = p.grid
                rs.append(torch.arange(h, device=device).repeat_interleave(w))
                cs.append(torch.arange(w, device=device).repeat(h))
            return torch.cat(rs), torch.cat(cs)
        flat = [self._flat(p, device) for p in self.parts]
        r = torch.cat(
            [torch.div(f, p.grid[1], rounding_mode="floor") for f, p in zip(flat, self.parts, strict=True)], 1
        )
        c = torch.cat([f % p.grid[1] for f, p in zip(flat, self.parts, strict=True)], 1)
        reps = rows // r.shape[0]
        return r.repeat(reps, 1), c.repeat(reps, 1)

    def _flat(self, part: ScaleTokens, device) -> torch.Tensor:
        if part.flat_index is not None:
            return part.flat_index
        batch = next(p.flat_index.shape[0] for p in self.parts if p.flat_index is not None)
        return torch.arange(part.count, device=device).expand(batch, -1)

    def split(self, packed: torch.Tensor) -> list[torch.Tensor]:
        """Split ``(B, N, ...)`` along the tokens into the parts' pieces."""
        return list(torch.split(packed, [p.count for p in self.parts], dim=1))
