"""Acceleration methods: each one plans the steps of a generation and chooses what they carry.

A method never runs a loop of its own. :meth:`Method.plan` returns the steps over a schedule (which scales run in
full, which are packed into one pass, which are skipped, what the cache keeps); :meth:`Method.select` picks the
tokens of a packed step once the running sum exists; :attr:`Method.hook` may reach into every sub-layer of every
block (:class:`~moss_models.core.pass_spec.SublayerHook`). Built in:

* :class:`Baseline` — every scale in full (the official loop);
* :class:`Moss` — Mixture of Scales: drafter scales in full, then the ``k`` refine scales packed into one pass over
  the tokens a moss-dispatch :class:`~moss_dispatch.ScalePlan` selects (or an explicit :class:`~moss_dispatch.Dispatch`);
* :class:`ScaleSkip` — the last ``n`` scales are dropped and the sum of the earlier ones is decoded at full size.

The peers (FastVAR, FasterVAR, guidance off) are in :mod:`moss_models.core.peers`: they are *modifiers*, which
change the plan of another method and place hooks, so they compose (:class:`~moss_models.core.peers.Compose`).

A method may hold per-generation state (FastVAR's cached sub-layer outputs, FasterVAR's per-image generators):
:meth:`Method.pass_hooks` is called once per generation with a :class:`RunInfo` and returns fresh hooks, so a
method object itself stays immutable and can be shared by runs and threads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from moss_dispatch import Dispatch, ScalePlan, get_scorer
from moss_models.core.attention import AttentionSpec
from moss_models.core.pass_spec import BlockGroupHook, SublayerHook
from moss_models.core.presets import preset_thresholds
from moss_models.core.steps import Grid, ScaleTokens, Step, StepPlan, StepTokens, sequential_plan


@dataclass(frozen=True)
class RunInfo:
    """What a method's hooks may know of one generation, fixed before its first pass."""

    plan: StepPlan
    grids: tuple[Grid, ...]
    seeds: tuple[int, ...]
    batch: int  # images
    guidance: bool  # whether the context carries unconditional rows (rows = 2 · batch)
    family: str
    device: torch.device
    num_layers: int | None = None
    layer_groups: tuple[range, ...] | None = None  # the family's block groups (Infinity: block chunks)

    @property
    def dry(self) -> bool:
        return self.device.type == "meta"


@dataclass(frozen=True)
class PassHooks:
    """The hooks of one generation: per sub-layer and per block group (either may be None)."""

    sublayer: SublayerHook | None = None
    block_group: BlockGroupHook | None = None


class Method(ABC):
    """What a method supplies to :class:`~moss_models.core.generator.NextScaleGenerator`."""

    name: str
    attention: AttentionSpec
    hook: SublayerHook | None = None

    def pass_hooks(self, info: RunInfo) -> PassHooks:
        """Fresh hooks for one generation (default: the static sub-layer ``hook``)."""
        return PassHooks(sublayer=self.hook)

    @abstractmethod
    def plan(self, grids: Sequence[Grid]) -> StepPlan:
        """The steps of one generation over ``grids``; raises ValueError for a schedule it cannot serve."""

    def select(self, step: Step, latent: torch.Tensor, family: Any) -> StepTokens:
        """The tokens of a packed step, chosen from the running sum ``latent``."""
        raise NotImplementedError(f"{type(self).__name__} plans no packed steps")

    def with_attention(self, attention: AttentionSpec) -> Method:
        return replace(self, attention=attention)  # type: ignore[type-var]

    def describe(self) -> dict[str, Any]:
        """The parameters that determine this method's images (for records and run fingerprints)."""
        return {"method": type(self).__name__, "name": self.name, "attention": vars(self.attention)}


@dataclass(frozen=True)
class Baseline(Method):
    """Every scale in full, each pass reading the cache of all earlier ones: the official next-scale loop."""

    name: str = "off"
    attention: AttentionSpec = field(default_factory=AttentionSpec)
    hook: SublayerHook | None = None

    def plan(self, grids: Sequence[Grid]) -> StepPlan:
        grids = tuple(tuple(g) for g in grids)
        return sequential_plan(grids, range(len(grids)))


@dataclass(frozen=True)
class ScaleSkip(Method):
    """Drop the last ``num_skipped`` scales; the running sum of the kept ones is decoded at full size.

    The trivial peer (SkipVAR-style): every speed claim must beat it. ``num_skipped=0`` is the baseline.
    """

    num_skipped: int = 1
    name: str = ""
    attention: AttentionSpec = field(default_factory=AttentionSpec)
    hook: SublayerHook | None = None

    def __post_init__(self) -> None:
        n = self.num_skipped
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"num_skipped must be an int >= 0, got {n!r}")
        if not self.name:
            object.__setattr__(self, "name", f"skip{n}")

    def plan(self, grids: Sequence[Grid]) -> StepPlan:
        grids = tuple(tuple(g) for g in grids)
        if self.num_skipped >= len(grids):
            raise ValueError(
                f"num_skipped={self.num_skipped} would skip every scale of a {len(grids)}-scale schedule; "
                f"use at most {len(grids) - 1}"
            )
        return sequential_plan(grids, range(len(grids) - self.num_skipped))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "num_skipped": self.num_skipped}


@dataclass(frozen=True)
class ScorerSpec:
    """A moss-dispatch scorer by name with its parameters, checked when built (``conf/dispatch/*.yaml``)."""

    name: str = "variance"
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", dict(self.params or {}))
        object.__setattr__(self, "_fn", get_scorer(self.name, **self.params))

    def __call__(self, latent: torch.Tensor) -> torch.Tensor:
        return self._fn(latent)  # type: ignore[attr-defined]

    def __reduce__(self):  # the bound scorer is a closure: rebuild it (DDP spawn pickles the method)
        return (type(self), (self.name, dict(self.params)))


#: an explicit selection: a Dispatch, or a function of the drafted latent and the plan that returns one
Selection = Dispatch | Callable[[torch.Tensor, ScalePlan], Dispatch]


@dataclass(frozen=True)
class Moss(Method):
    """Mixture of Scales: ``S − k`` drafter scales in full, then the ``k`` refine scales in one packed pass.

    ``thresholds``: ``k`` percentiles, coarsest refine scale first (refine scale ``i`` takes the band
    ``(thresholds[i+1], thresholds[i]]`` of its own ranking). ``scorer``: a :class:`ScorerSpec`, a scorer name,
    or any callable ``(B, C, H, W) → (B, H, W)``. ``dispatch``: explicit selections instead of the scorer — a
    :class:`~moss_dispatch.Dispatch` (e.g. an oracle, or ``Dispatch.from_masks`` of a hand-drawn mask) or a
    function ``(latent, plan) → Dispatch``. ``num_draft_scales``, if given, must equal ``S − k``.
    The packed pass reads the drafter's cache and adds nothing to it.
    """

    thresholds: tuple[float, ...] = (50.0, 25.0)
    scorer: Any = "variance"
    attention: AttentionSpec = field(default_factory=AttentionSpec)
    dispatch: Selection | None = field(default=None, compare=False)
    num_draft_scales: int | None = None
    name: str = ""
    hook: SublayerHook | None = None
    # equal neighbouring thresholds give a refine scale no tokens (what the threshold search tries)
    allow_empty_bands: bool = False

    def __post_init__(self) -> None:
        try:
            thresholds = tuple(float(t) for t in self.thresholds)
        except (TypeError, ValueError):
            raise ValueError(f"thresholds must be a list of percentiles, got {self.thresholds!r}") from None
        object.__setattr__(self, "thresholds", thresholds)
        if isinstance(self.scorer, str):
            object.__setattr__(self, "scorer", ScorerSpec(self.scorer))
        elif not callable(self.scorer):
            raise ValueError(f"scorer must be a scorer name, a ScorerSpec or a callable, got {self.scorer!r}")
        if not self.name:
            object.__setattr__(self, "name", f"k{len(thresholds)}")

    @classmethod
    def preset(cls, name: str, family: str = "infinity", **kwargs) -> Moss:
        """The paper's thresholds for a model family, e.g. ``Moss.preset("k5")``."""
        return cls(thresholds=preset_thresholds(family, name), name=kwargs.pop("name", name), **kwargs)

    @property
    def k(self) -> int:
        return len(self.thresholds)

    def scale_plan(self, grids: Sequence[Grid]) -> ScalePlan:
        n = len(grids)
        if not 1 <= self.k < n:
            raise ValueError(
                f"moss thresholds {list(self.thresholds)} give k={self.k} refine scales; need 1 <= k < {n}"
            )
        if self.num_draft_scales is not None and n - self.num_draft_scales != self.k:
            raise ValueError(
                f"num_draft_scales={self.num_draft_scales} leaves {n - self.num_draft_scales} refine scales of the "
                f"{n}-scale schedule, but thresholds has {self.k} entries {list(self.thresholds)}; give one "
                "threshold per refine scale"
            )
        return ScalePlan(
            tuple(tuple(g) for g in grids),
            n - self.k,
            self.thresholds,
            allow_empty_bands=self.allow_empty_bands,
        )

    def plan(self, grids: Sequence[Grid]) -> StepPlan:
        grids = tuple(tuple(g) for g in grids)
        plan = self.scale_plan(grids)
        packed = Step("packed", plan.refine_scales, "moss", plan=plan, select_stage="dispatch")
        return sequential_plan(grids, range(plan.num_draft_scales), tail=(packed,))

    def select(self, step: Step, latent: torch.Tensor, family: Any) -> StepTokens:
        plan: ScalePlan = step.plan  # type: ignore[assignment]
        if self.dispatch is None:
            dispatch = plan.dispatch(self.scorer(latent))
        else:
            dispatch = self.dispatch(latent, plan) if callable(self.dispatch) else self.dispatch
            check_dispatch(dispatch, plan, latent.shape[0])
        parts = tuple(ScaleTokens(s.scale_index, s.grid, s.flat_index) for s in dispatch.selections)
        return StepTokens(parts, selection=dispatch)

    def describe(self) -> dict[str, Any]:
        scorer = self.scorer
        scorer_desc = (
            {"name": scorer.name, "params": dict(scorer.params)}
            if isinstance(scorer, ScorerSpec)
            else repr(scorer)
        )
        return {
            **super().describe(),
            "thresholds": list(self.thresholds),
            "scorer": scorer_desc,
            "explicit_dispatch": self.dispatch is not None,
        }


def check_dispatch(dispatch: Dispatch, plan: ScalePlan, batch: int) -> None:
    """An explicit selection must cover the plan's refine scales, on their grids, for every image."""
    if not isinstance(dispatch, Dispatch):
        raise ValueError(f"Moss.dispatch must give a moss_dispatch.Dispatch, got {type(dispatch).__name__}")
    got = [(s.scale_index, tuple(s.grid)) for s in dispatch.selections]
    want = [(si, tuple(plan.schedule[si])) for si in plan.refine_scales]
    if got != want:
        raise ValueError(f"the given dispatch selects scales {got}, the plan refines {want} (index, grid)")
    if dispatch.batch_size != batch:
        raise ValueError(f"the given dispatch is for {dispatch.batch_size} images, this batch has {batch}")


def method_by_name(name: str, family: str = "infinity", **kwargs) -> Method:
    """A method by name; ``kwargs`` go to the method.

    ``off``, ``k2`` … (the family's MoSs presets), ``skipN``, the peers ``fastvar``, ``fastervar``, ``cfgoff``, and
    compositions ``base+part+…`` such as ``k3+cfgoff`` or ``k2+fastvar`` (parts skip no scale of their own).
    """
    from moss_models.core.peers import peer_by_name

    peer = peer_by_name(name, lambda base: _base_method(base, family, **kwargs), **kwargs)
    return peer if peer is not None else _base_method(name, family, **kwargs)


def _base_method(name: str, family: str, **kwargs) -> Method:
    if name == "off":
        return Baseline(**kwargs)
    if name.startswith("skip") and name[4:].isdigit():
        return ScaleSkip(int(name[4:]), **kwargs)
    try:
        return Moss.preset(name, family, **kwargs)
    except ValueError as err:
        raise ValueError(
            f"unknown method {name!r}: not off, skipN, fastvar, fastervar, cfgoff, a MoSs preset ({err}), or a "
            "composition such as k3+cfgoff"
        ) from None
