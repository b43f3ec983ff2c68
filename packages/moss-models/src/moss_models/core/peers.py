"""The peers as methods: FastVAR, FasterVAR and guidance off, as modifiers that compose with MoSs.

A :class:`Modifier` changes another method's plan (drops scales, runs some passes on one CFG row per image) and
places hooks inside the passes; alone it modifies the baseline. :class:`Compose` applies modifiers to a base
method (``k3+cfgoff``: MoSs k3 with guidance off in its packed stage; ``k2+fastvar``: FastVAR's pruning in the
drafter scales under a MoSs k2 stage) and refuses combinations whose parts collide.

* :class:`FastVAR` — cached token pruning (csguoh/FastVAR, ICCV 2025): in the pruned layers, every sub-layer
  (self-attention, cross-attention queries, FFN) runs on the tokens farthest from the scale's mean token; the
  pruned slots get the same sub-layer's output at the cache scale, area-upsampled; only kept tokens are cached;
* :class:`FasterVAR` — fidelity-stage acceleration (sen-mao/FasterVAR, ICML 2026): guidance weight 0 on the last
  scales (their passes carry each image's unconditional row only, with its text and cache), and each block chunk
  of the low-rank scales computes on ``r`` random projections of the scale's tokens, restored onto the previous
  scale's chunk output at ``r`` sampled representative positions;
* :class:`GuidanceOff` — only the guidance part (FasterVAR's weight 0, or weight 1 with the conditional rows).

Scales are schedule indices, negative from the end, so a preset names the same part of the pyramid at every
resolution. The official codes name scales by their grid width (32, 40, 48, 64); at Infinity's 1024² schedule
(13 scales) the presets here name exactly those: -5 = 24², -4 = 32², -3 = 40², -2 = 48², -1 = 64².
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F

from moss_dispatch import keep_top, mean_deviation_score, norm_sampling_probs, num_kept, sample_rows
from moss_models.core.attention import AttentionSpec
from moss_models.core.methods import Baseline, Method, PassHooks, RunInfo
from moss_models.core.pass_spec import Branch, GroupRun, GroupSite, SublayerHook, SublayerSite
from moss_models.core.presets import preset_rank_ratios
from moss_models.core.steps import Grid, Step, StepPlan, StepTokens, appended_tokens

SUBLAYER_KINDS = ("sa", "ca", "ffn")
GUIDANCE_ROWS = ("uncond", "cond")


def resolve_scale(index: Any, num_scales: int, what: str) -> int:
    """A schedule index (negative from the end) as a position in ``range(num_scales)``; refused if outside."""
    if not isinstance(index, int) or isinstance(index, bool):
        raise ValueError(
            f"{what}: a scale is a schedule index (an int, negative from the end), got {index!r}"
        )
    if not -num_scales <= index < num_scales:
        raise ValueError(f"{what}: scale {index} is outside the {num_scales}-scale schedule")
    return index % num_scales


def _int_tuple(values: Any, what: str) -> tuple[int, ...]:
    if values is None:
        return ()
    if isinstance(values, int | str):
        values = [values]
    values = list(values)
    out = []
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool):
            raise ValueError(f"{what} must be a list of schedule indices (ints), got {list(values)!r}")
        out.append(int(v))
    return tuple(out)


def drop_scales(plan: StepPlan, grids: Sequence[Grid], scales: set[int], who: str) -> StepPlan:
    """The plan without the full steps of ``scales``; the new last pass stops appending to the cache."""
    if not scales:
        return plan
    if 0 in scales:
        raise ValueError(f"{who} cannot skip scale 0: the first scale (the start token) always runs")
    for step in plan.steps:
        if step.kind == "packed" and scales & set(step.scales):
            raise ValueError(
                f"{who} skips scales {sorted(scales & set(step.scales))}, which the base method refines in its "
                f"packed pass over scales {list(step.scales)}; give {who} skip: [] to combine them"
            )
    if plan.uncached:
        raise ValueError(f"{who}: skip scales before pruning them (apply the skipping modifier first)")
    kept = [s for s in plan.steps if not (s.kind == "full" and s.scales[0] in scales)]
    if not kept:
        raise ValueError(f"{who} would skip every scale")
    last = kept[-1]
    if last.append:
        kept[-1] = replace(last, append=False)
    return replace(plan, steps=tuple(kept), cache_tokens=appended_tokens(tuple(grids), kept))


def area_restore(saved: torch.Tensor, saved_grid: Grid, grid: Grid) -> torch.Tensor:
    """``(R, h'·w', C)`` tokens of a coarser scale, area-interpolated to ``grid`` as ``(R, h·w, C)``.

    Built as the official code builds it (a channels-last view of the token map), so the result is its result.
    """
    r, _, c = saved.shape
    hs, ws = saved_grid
    base = F.interpolate(saved.view(r, hs, ws, c).permute(0, 3, 1, 2), size=tuple(grid), mode="area")
    return base.permute(0, 2, 3, 1).reshape(r, grid[0] * grid[1], c)


def _rows_of(saved: torch.Tensor, cfg_rows: str, batch: int, rows: int) -> torch.Tensor:
    """The rows of a saved ``(2B, ...)`` tensor that a pass on ``cfg_rows`` carries."""
    if saved.shape[0] == rows:
        return saved
    if cfg_rows == "uncond":
        return saved[batch : 2 * batch]
    return saved[:batch]


class Modifier(Method):
    """A method that modifies another method's plan and places hooks; on its own it modifies the baseline."""

    def plan(self, grids: Sequence[Grid]) -> StepPlan:
        grids = tuple(tuple(g) for g in grids)
        return self.modify(Baseline().plan(grids), grids)

    @abstractmethod
    def modify(self, plan: StepPlan, grids: tuple[Grid, ...]) -> StepPlan:
        """The plan with this method's changes; raises ValueError where it cannot apply to ``plan``."""

    def hooked_scales(self, plan: StepPlan, grids: tuple[Grid, ...]) -> set[int]:
        """The scales whose passes this method's hooks change (two parts of a composition may not share one)."""
        return set()


# ------------------------------------------------------------------------------------------------ guidance off


@dataclass(frozen=True)
class GuidanceOff(Modifier):
    """Guidance off on ``scales``: their passes carry one CFG row per image.

    ``keep="uncond"`` is FasterVAR's guidance weight 0: the unconditional row, with its text and KV cache, and its
    logits sampled as they are. ``keep="cond"`` is weight 1: the conditional row (Switti-style CFG off).
    A pass that packs several scales must have all of them off or none; once off, guidance stays off.
    """

    scales: tuple[int, ...] = (-3, -2, -1)
    keep: str = "uncond"
    name: str = "cfgoff"
    attention: AttentionSpec = field(default_factory=AttentionSpec)
    hook: SublayerHook | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", _int_tuple(self.scales, "guidance-off scales"))
        if self.keep not in GUIDANCE_ROWS:
            raise ValueError(
                f"keep must be one of {GUIDANCE_ROWS} (the CFG row the passes keep), got {self.keep!r}"
            )

    def modify(self, plan: StepPlan, grids: tuple[Grid, ...]) -> StepPlan:
        off = {resolve_scale(s, len(grids), f"{self.name} scales") for s in self.scales}
        steps = []
        for step in plan.steps:
            hit = off & set(step.scales)
            if hit and hit != set(step.scales):
                raise ValueError(
                    f"{self.name}: the pass over scales {list(step.scales)} would be guided for some scales and "
                    f"not for others ({sorted(hit)} off); turn guidance off for all of its scales or none"
                )
            if hit and step.rows not in ("all", self.keep):
                raise ValueError(
                    f"{self.name}: the pass over scales {list(step.scales)} already runs on its {step.rows!r} rows; "
                    f"keeping the {self.keep!r} rows instead would override an earlier part"
                )
            steps.append(replace(step, rows=self.keep) if hit else step)
        out = replace(plan, steps=tuple(steps))
        out.check_rows()
        return out

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "scales": list(self.scales), "keep": self.keep}


# ------------------------------------------------------------------------------------------------ FastVAR


@dataclass(frozen=True)
class FastVAR(Modifier):
    """FastVAR's cached token pruning, with its released Infinity-2B setting as the defaults.

    ``prune``: ``{scale: ratio}`` (fraction of the scale's tokens pruned in each pruned sub-layer; kept:
    ``L − int(L·ratio)``); ``cache_scale``: the scale whose sub-layer outputs fill the pruned slots; ``layers``:
    ``[first, stop)`` of the pruned blocks; ``sublayers``: which residual branches are pruned; ``skip``: scales
    not run at all. Defaults: prune 40 % at 32² and 50 % at 40², cache at 24², layers 3–27, ``sa``/``ca``/``ffn``,
    48² and 64² skipped. Every ratio 0 and nothing skipped is the baseline, bit for bit (a ratio of 0 does not
    reorder tokens, where the official code would still gather all of them in score order).
    """

    prune: Mapping[int, float] | tuple[tuple[int, float], ...] = ((-4, 0.4), (-3, 0.5))
    cache_scale: int = -5
    layers: tuple[int, int] = (3, 28)
    sublayers: tuple[str, ...] = SUBLAYER_KINDS
    skip: tuple[int, ...] = (-2, -1)
    name: str = "fastvar"
    attention: AttentionSpec = field(default_factory=AttentionSpec)
    hook: SublayerHook | None = None

    def __post_init__(self) -> None:
        items = self.prune.items() if isinstance(self.prune, Mapping) else self.prune
        prune = []
        for scale, ratio in items:
            scale = int(scale) if isinstance(scale, str) and scale.lstrip("-").isdigit() else scale
            if not isinstance(scale, int) or isinstance(scale, bool):
                raise ValueError(f"fastvar prune keys are schedule indices (ints), got {scale!r}")
            num_kept(1, float(ratio))  # checks 0 <= ratio < 1
            prune.append((scale, float(ratio)))
        object.__setattr__(self, "prune", tuple(sorted(prune)))
        object.__setattr__(self, "skip", _int_tuple(self.skip, "fastvar skip"))
        layers = tuple(self.layers)
        if len(layers) != 2 or not all(isinstance(v, int) for v in layers) or not 0 <= layers[0] < layers[1]:
            raise ValueError(
                f"fastvar layers must be [first, stop) with 0 <= first < stop, got {list(layers)}"
            )
        object.__setattr__(self, "layers", layers)
        kinds = tuple(self.sublayers)
        if not kinds or any(k not in SUBLAYER_KINDS for k in kinds):
            raise ValueError(f"fastvar sublayers must be some of {SUBLAYER_KINDS}, got {list(kinds)}")
        object.__setattr__(self, "sublayers", kinds)
        if not isinstance(self.cache_scale, int) or isinstance(self.cache_scale, bool):
            raise ValueError(
                f"fastvar cache_scale must be a schedule index (an int), got {self.cache_scale!r}"
            )

    def pruned_scales(self, grids: tuple[Grid, ...]) -> dict[int, int]:
        """``{scale: kept tokens}`` of the scales this schedule prunes (ratio > 0)."""
        out = {}
        seen: set[int] = set()
        for scale, ratio in self.prune:
            si = resolve_scale(scale, len(grids), "fastvar prune")
            if si in seen:
                raise ValueError(f"fastvar prune names scale {si} twice (as {scale} and another index)")
            seen.add(si)
            if ratio > 0:
                h, w = grids[si]
                out[si] = num_kept(h * w, ratio)
        return out

    def modify(self, plan: StepPlan, grids: tuple[Grid, ...]) -> StepPlan:
        n = len(grids)
        skip = {resolve_scale(s, n, "fastvar skip") for s in self.skip}
        plan = drop_scales(plan, grids, skip, self.name)
        pruned = self.pruned_scales(grids)
        if not pruned:
            return plan
        order = {s.scales[0]: i for i, s in enumerate(plan.steps) if s.kind == "full"}
        for si in pruned:
            if si in skip:
                raise ValueError(f"fastvar: scale {si} is both pruned and skipped")
            if si not in order:
                raise ValueError(
                    f"fastvar prunes scale {si} ({grids[si][0]}×{grids[si][1]}), which the base method does not run "
                    "as a full pass (it is packed or skipped); FastVAR pruning applies to full-scale passes only"
                )
        cache = resolve_scale(self.cache_scale, n, "fastvar cache_scale")
        if cache not in order or any(order[cache] >= order[si] for si in pruned):
            raise ValueError(
                f"fastvar: the cache scale {self.cache_scale} ({grids[cache][0]}×{grids[cache][1]}) must run in "
                f"full before every pruned scale {sorted(pruned)}"
            )
        uncached = []
        if (
            "sa" in self.sublayers
        ):  # only self-attention writes the cache: pruned layers append the kept tokens
            for si, kept in pruned.items():
                if plan.steps[order[si]].append:
                    uncached.append((self.layers[0], self.layers[1], grids[si][0] * grids[si][1] - kept))
        return replace(plan, uncached=plan.uncached + tuple(uncached))

    def hooked_scales(self, plan: StepPlan, grids: tuple[Grid, ...]) -> set[int]:
        pruned = set(self.pruned_scales(grids))
        return (
            pruned | {resolve_scale(self.cache_scale, len(grids), "fastvar cache_scale")} if pruned else set()
        )

    def pass_hooks(self, info: RunInfo) -> PassHooks:
        pruned = self.pruned_scales(info.grids)
        if not pruned:
            return PassHooks(sublayer=self.hook)
        if self.hook is not None:
            raise ValueError("fastvar places its own sub-layer hook; it takes no other")
        depth = info.num_layers
        if depth is not None and self.layers[0] >= depth:
            raise ValueError(f"fastvar layers {list(self.layers)} prune no block of this {depth}-block model")
        stop = self.layers[1] if depth is None else min(self.layers[1], depth)
        cache = resolve_scale(self.cache_scale, len(info.grids), "fastvar cache_scale")
        return PassHooks(
            sublayer=CachedTokenPruning(
                pruned, cache, range(self.layers[0], stop), frozenset(self.sublayers), info
            )
        )

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "prune": {str(s): r for s, r in self.prune},
            "cache_scale": self.cache_scale,
            "layers": list(self.layers),
            "sublayers": list(self.sublayers),
            "skip": list(self.skip),
        }


class CachedTokenPruning:
    """FastVAR's sub-layer hook for one generation; holds the cache scale's sub-layer outputs."""

    def __init__(
        self, pruned: dict[int, int], cache_scale: int, layers: range, kinds: frozenset, info: RunInfo
    ):
        self.pruned, self.cache_scale, self.layers, self.kinds = pruned, cache_scale, layers, kinds
        self.grids, self.batch = info.grids, info.batch
        self.saved: dict[tuple[int, str], torch.Tensor] = {}

    def __call__(self, site: SublayerSite, x: torch.Tensor, branch: Branch) -> torch.Tensor:
        spec = site.spec
        if site.kind not in self.kinds or site.layer not in self.layers or len(spec.scales) != 1:
            return branch(x, None)
        si = spec.scales[0]
        if si == self.cache_scale:
            out = branch(x, None)
            self.saved[(site.layer, site.kind)] = out
            return out
        kept = self.pruned.get(si)
        if kept is None or kept == x.shape[1]:
            return branch(x, None)
        grid = self.grids[si]
        # Selection on the residual stream entering this sub-layer, per row (each CFG row chooses its own).
        index = keep_top(mean_deviation_score(x, grid), kept)
        gather = index.unsqueeze(-1).expand(-1, -1, x.shape[-1])
        out_kept = branch(x.gather(1, gather), index)
        saved = _rows_of(self.saved[(site.layer, site.kind)], spec.cfg_rows, self.batch, x.shape[0])
        base = area_restore(saved, self.grids[self.cache_scale], grid)
        return base.scatter_(1, gather, out_kept.to(base.dtype))


# ------------------------------------------------------------------------------------------------ FasterVAR


@dataclass(frozen=True)
class FasterVAR(Modifier):
    """FasterVAR's fidelity-stage acceleration on Infinity, with its released setting as the defaults.

    ``unguided``: scales sampled with guidance weight 0 (their passes carry each image's unconditional row only);
    ``low_rank``: scales whose block groups compute on random-projection low-rank tokens; ``alpha``: the name of
    the family's rank preset (``ranks`` gives ``{scale: (ratio per block group, ...)}`` instead); ``skip``:
    scales not run at all; ``sampling_c``: the constant of its norm-proportional representative-token sampling;
    ``seed_offset``: image ``i``'s projection generator is seeded with ``seed_i + seed_offset`` (the official code
    draws from the global RNG).

    Defaults (``tools/interactive_infer.py`` and ``infinity.py`` of its Infinity code): guidance 0 on the last 3
    scales, low rank on the last 3 with ``alpha="0.96"``, and 48² and 64² skipped, as its released code does
    (``if 48 == pn[2] or 64 == pn[2]: continue``) — so at 1024² only 40² is low-rank. With ``unguided``,
    ``low_rank`` and ``skip`` all empty it is the baseline, bit for bit.
    """

    unguided: tuple[int, ...] = (-3, -2, -1)
    low_rank: tuple[int, ...] = (-3, -2, -1)
    alpha: str = "0.96"
    ranks: Mapping[int, Sequence[float]] | None = None
    skip: tuple[int, ...] = (-2, -1)
    sampling_c: float = 0.1
    seed_offset: int = 0
    name: str = "fastervar"
    attention: AttentionSpec = field(default_factory=AttentionSpec)
    hook: SublayerHook | None = None

    def __post_init__(self) -> None:
        for attr in ("unguided", "low_rank", "skip"):
            object.__setattr__(self, attr, _int_tuple(getattr(self, attr), f"fastervar {attr}"))
        # a float from the command line (moss.alpha=0.90 → 0.9) names the same preset as its string "0.90"
        object.__setattr__(
            self, "alpha", self.alpha if isinstance(self.alpha, str) else repr(float(self.alpha))
        )
        if self.ranks is not None:
            ranks = {}
            for scale, ratios in dict(self.ranks).items():
                scale = int(scale)
                ratios = tuple(float(r) for r in ratios)
                if not ratios or any(not 0 <= r <= 1 for r in ratios):
                    raise ValueError(f"fastervar ranks[{scale}] must be ratios in [0, 1], got {list(ratios)}")
                ranks[scale] = ratios
            object.__setattr__(self, "ranks", ranks)
        if not isinstance(self.sampling_c, int | float) or not self.sampling_c > 0:
            raise ValueError(f"fastervar sampling_c must be > 0, got {self.sampling_c!r}")
        if (
            not isinstance(self.seed_offset, int)
            or isinstance(self.seed_offset, bool)
            or self.seed_offset < 0
        ):
            raise ValueError(f"fastervar seed_offset must be an int >= 0, got {self.seed_offset!r}")

    def _low_rank_scales(self, grids: tuple[Grid, ...]) -> set[int]:
        skip = {resolve_scale(s, len(grids), "fastervar skip") for s in self.skip}
        return {resolve_scale(s, len(grids), "fastervar low_rank") for s in self.low_rank} - skip

    def modify(self, plan: StepPlan, grids: tuple[Grid, ...]) -> StepPlan:
        n = len(grids)
        plan = drop_scales(plan, grids, {resolve_scale(s, n, "fastervar skip") for s in self.skip}, self.name)
        plan = GuidanceOff(self.unguided, "uncond", name=self.name).modify(plan, grids)
        full = [s.scales[0] if s.kind == "full" else None for s in plan.steps]
        for si in sorted(self._low_rank_scales(grids)):
            if si not in full:
                raise ValueError(
                    f"fastervar: the low-rank scale {si} is not run as a full pass by the base method (it is "
                    "packed or skipped); low-rank tokens apply to full-scale passes only"
                )
            pos = full.index(si)
            if pos == 0 or full[pos - 1] is None:
                raise ValueError(
                    f"fastervar: the low-rank scale {si} restores onto the previous scale's block outputs, so it "
                    "must follow a full-scale pass"
                )
        return plan

    def hooked_scales(self, plan: StepPlan, grids: tuple[Grid, ...]) -> set[int]:
        return self._low_rank_scales(grids)

    def rank_table(self, info: RunInfo) -> dict[int, tuple[int, ...]]:
        """``{scale: (rank per block group)}`` for this generation (``rank = int(ratio·L) + 1``)."""
        scales = self._low_rank_scales(info.grids)
        if not scales:
            return {}
        groups = info.layer_groups
        if not groups:
            raise ValueError(f"fastervar needs a family with block groups; {info.family} has none")
        table = self.ranks if self.ranks is not None else preset_rank_ratios(info.family, self.alpha)
        n = len(info.grids)
        ratios = {}
        for s, r in table.items():
            si = resolve_scale(s, n, "fastervar ranks")
            if si in ratios:
                raise ValueError(f"fastervar ranks name scale {si} twice")
            ratios[si] = r
        out = {}
        for si in sorted(scales):
            if si not in ratios:
                raise ValueError(f"fastervar: no rank ratios for scale {si} (ranks cover {sorted(ratios)})")
            if len(ratios[si]) < len(groups):
                raise ValueError(
                    f"fastervar: scale {si} has rank ratios for {len(ratios[si])} block groups, the model has "
                    f"{len(groups)}"
                )
            h, w = info.grids[si]
            out[si] = tuple(int(r * h * w) + 1 for r in ratios[si][: len(groups)])
        return out

    def pass_hooks(self, info: RunInfo) -> PassHooks:
        ranks = self.rank_table(info)
        if not ranks:
            return PassHooks(sublayer=self.hook)
        return PassHooks(sublayer=self.hook, block_group=LowRankGroups(ranks, self, info))

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "unguided": list(self.unguided),
            "low_rank": list(self.low_rank),
            "alpha": self.alpha,
            "ranks": None if self.ranks is None else {str(s): list(r) for s, r in self.ranks.items()},
            "skip": list(self.skip),
            "sampling_c": self.sampling_c,
            "seed_offset": self.seed_offset,
        }


def project_tokens(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``(R, r, C)``: ``r`` random mixtures ``qᵀ·x`` of the ``(R, L, C)`` tokens, in fp32 (FasterVAR's random
    projection for low-rank features), returned in ``x``'s dtype."""
    return torch.bmm(q.transpose(1, 2), x.float()).to(x.dtype)


class LowRankGroups:
    """FasterVAR's block-group hook for one generation: projections drawn from per-image generators."""

    def __init__(self, ranks: dict[int, tuple[int, ...]], method: FasterVAR, info: RunInfo):
        self.ranks, self.grids, self.batch, self.c = ranks, info.grids, info.batch, method.sampling_c
        self.generators = (
            None
            if info.dry
            else [torch.Generator(device=info.device).manual_seed(s + method.seed_offset) for s in info.seeds]
        )
        # the full pass before each low-rank one keeps its group outputs: they are what restoration fills from
        full = [s.scales[0] for s in info.plan.steps if s.kind == "full"]
        self.keep_after = {full[i - 1]: si for i, si in enumerate(full) if si in ranks and i > 0}
        self.saved: dict[int, tuple[torch.Tensor, Grid]] = {}

    def _draw(self, x: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Representative positions ``(R, rank)`` and projections ``(R, L, rank)``: multinomial, then randn,
        each image's rows from its own generator (the official order of draws)."""
        rows, n, _ = x.shape
        probs = norm_sampling_probs(x, self.c)
        if self.generators is None:  # a dry run: shapes only
            return torch.multinomial(probs, rank), torch.randn(rows, n, rank, device=x.device)
        per = rows // self.batch
        index = sample_rows(probs, rank, self.generators, per)
        q = torch.empty(rows, n, rank, device=x.device)
        for i, g in enumerate(self.generators):
            q[i :: self.batch] = torch.randn(per, n, rank, generator=g, device=x.device)
        return index, q * (1.0 / math.sqrt(rank))

    def __call__(self, site: GroupSite, x: torch.Tensor, run: GroupRun) -> torch.Tensor:
        spec = site.spec
        si = spec.scales[0] if len(spec.scales) == 1 else None
        out = None
        if si in self.ranks:
            rank = self.ranks[si][site.group]
            rows, n, c = x.shape
            if rank < n:
                index, q = self._draw(x, rank)
                projected = project_tokens(x, q)
                # the projected tokens take the first ``rank`` positions of the scale (the official RoPE slice)
                first = torch.arange(rank, device=x.device).expand(rows, rank)
                low = run(projected, first)
                saved, saved_grid = self.saved[site.group]
                base = area_restore(
                    _rows_of(saved, spec.cfg_rows, self.batch, rows), saved_grid, self.grids[si]
                )
                out = base.scatter_(1, index.unsqueeze(-1).expand(-1, -1, c), low.to(base.dtype))
        if out is None:
            out = run(x, None)
        if si in self.keep_after:
            self.saved[site.group] = (out, self.grids[si])
        return out


# ------------------------------------------------------------------------------------------------ composition


@dataclass(frozen=True)
class Compose(Method):
    """A base method with modifiers applied in order: ``Compose(Moss.preset("k3"), [GuidanceOff()])``.

    The base plans the steps and selects packed tokens; each part modifies the plan and may place hooks. Parts
    whose hooks act on the same scale collide and are refused, as is a second hook of the same kind.
    """

    base: Method = field(default_factory=Baseline)
    parts: Sequence[Modifier] = ()
    name: str = ""
    attention: AttentionSpec | None = None
    hook: SublayerHook | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.base, Method) or isinstance(self.base, Modifier):
            raise ValueError(
                f"compose: the base must be a plan-making method (off, MoSs, skip), got {type(self.base).__name__}; "
                "use it alone or put it after the base"
            )
        parts = tuple(self.parts)
        for p in parts:
            if not isinstance(p, Modifier):
                raise ValueError(
                    f"compose: {getattr(p, 'name', p)!r} ({type(p).__name__}) cannot be applied on top of another "
                    "method; only fastvar, fastervar and cfgoff can"
                )
        if not parts:
            raise ValueError("compose needs at least one part to apply to its base")
        object.__setattr__(self, "parts", parts)
        if self.attention is None:
            object.__setattr__(self, "attention", self.base.attention)
        else:
            object.__setattr__(self, "base", self.base.with_attention(self.attention))
        if not self.name:
            object.__setattr__(self, "name", "+".join([self.base.name, *(p.name for p in parts)]))

    def with_attention(self, attention: AttentionSpec) -> Compose:
        return replace(self, attention=attention, base=self.base.with_attention(attention))

    def plan(self, grids: Sequence[Grid]) -> StepPlan:
        grids = tuple(tuple(g) for g in grids)
        plan = self.base.plan(grids)
        for part in self.parts:
            plan = part.modify(plan, grids)
        seen: dict[int, str] = {}
        for part in self.parts:
            for si in part.hooked_scales(plan, grids):
                if si in seen:
                    raise ValueError(
                        f"{self.name}: {seen[si]} and {part.name} both change the passes of scale {si}; "
                        "they cannot be combined there"
                    )
                seen[si] = part.name
        return plan

    def select(self, step: Step, latent: torch.Tensor, family: Any) -> StepTokens:
        return self.base.select(step, latent, family)

    def pass_hooks(self, info: RunInfo) -> PassHooks:
        hooks = [
            PassHooks(sublayer=self.hook),
            self.base.pass_hooks(info),
            *(p.pass_hooks(info) for p in self.parts),
        ]
        sub = [h.sublayer for h in hooks if h.sublayer is not None]
        group = [h.block_group for h in hooks if h.block_group is not None]
        if len(sub) > 1 or len(group) > 1:
            raise ValueError(f"{self.name}: two parts place the same kind of hook; they cannot be combined")
        return PassHooks(sublayer=sub[0] if sub else None, block_group=group[0] if group else None)

    def describe(self) -> dict[str, Any]:
        return {
            "method": "Compose",
            "name": self.name,
            "attention": vars(self.attention),
            "base": self.base.describe(),
            "parts": [p.describe() for p in self.parts],
        }


#: methods that can be named as the part of a composition, by name; as parts they skip nothing (the base
#: method's plan decides which scales run)
PART_FACTORIES = {
    "fastvar": lambda **kw: FastVAR(skip=(), **kw),
    "fastervar": lambda **kw: FasterVAR(skip=(), **kw),
    "cfgoff": lambda **kw: GuidanceOff(**kw),
}
STANDALONE = {"fastvar": FastVAR, "fastervar": FasterVAR, "cfgoff": GuidanceOff}


def peer_by_name(name: str, base_factory, **kwargs) -> Method | None:
    """``fastvar``, ``fastervar``, ``cfgoff`` or a composition ``base+part+...``; None if ``name`` is neither.

    For a composition, ``kwargs`` go to the base method (``base_factory``) and its ``attention`` to every part.
    """
    if "+" not in name:
        return STANDALONE[name](**kwargs) if name in STANDALONE else None
    first, *rest = name.split("+")
    base = base_factory(first)
    parts = []
    for part in rest:
        if part not in PART_FACTORIES:
            raise ValueError(f"unknown method part {part!r} in {name!r}; parts are {sorted(PART_FACTORIES)}")
        parts.append(PART_FACTORIES[part](attention=kwargs.get("attention", AttentionSpec())))
    return Compose(base, parts, name=name, attention=kwargs.get("attention"))
