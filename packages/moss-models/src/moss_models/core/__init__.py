"""The family-neutral core: the generator, the family protocol, passes, methods, the cache, the registry.

* :class:`NextScaleGenerator` — the one loop over scales (and the notebook call ``pipe(prompts, method=...)``);
* :class:`ScaleFamily` — what a model family implements;
* :class:`PassSpec`, :class:`SublayerHook` — one transformer pass, and the hook a method can place in its blocks;
* :class:`Method` and the built-ins :class:`Baseline`, :class:`Moss`, :class:`ScaleSkip`; :class:`AttentionSpec`;
* the peers as :class:`Modifier` s — :class:`FastVAR`, :class:`FasterVAR`, :class:`GuidanceOff` — and
  :class:`Compose` to apply them on top of another method;
* :class:`Step`, :class:`StepPlan`, :class:`StepTokens` — what a method plans and what a pass carries;
* :func:`dry_run`, :func:`estimate_kv_cache` — exact FLOPs and KV bytes from a meta-device run of the generator;
* :func:`load`, :func:`register_model` — models by name.
"""

from moss_models.core.accounting import DryRun, dry_run, estimate_kv_cache
from moss_models.core.attention import AttentionSpec
from moss_models.core.family import ScaleFamily
from moss_models.core.generator import (
    KEEP_OPTIONS,
    GenerationResult,
    GenerationStats,
    NextScaleGenerator,
    PipelineOutput,
    StepOutput,
)
from moss_models.core.graphs import PassGraphs, graph_refusal
from moss_models.core.kv_cache import KVCache
from moss_models.core.methods import (
    Baseline,
    Method,
    Moss,
    PassHooks,
    RunInfo,
    ScaleSkip,
    ScorerSpec,
    method_by_name,
)
from moss_models.core.pass_spec import BlockGroupHook, GroupSite, PassSpec, SublayerHook, SublayerSite
from moss_models.core.peers import Compose, FasterVAR, FastVAR, GuidanceOff, Modifier
from moss_models.core.presets import (
    preset_names,
    preset_rank_ratios,
    preset_thresholds,
    register_rank_ratios,
    register_thresholds,
)
from moss_models.core.registry import MODELS, ModelEntry, load, model_entry, register_model
from moss_models.core.sampling import SEEDING_MODES, SamplingConfig
from moss_models.core.steps import ScaleTokens, Step, StepPlan, StepTokens, sequential_plan
from moss_models.core.timing import StageClock

__all__ = [
    "KEEP_OPTIONS",
    "MODELS",
    "SEEDING_MODES",
    "AttentionSpec",
    "Baseline",
    "BlockGroupHook",
    "Compose",
    "DryRun",
    "FastVAR",
    "FasterVAR",
    "GenerationResult",
    "GenerationStats",
    "GroupSite",
    "GuidanceOff",
    "KVCache",
    "Method",
    "ModelEntry",
    "Modifier",
    "Moss",
    "NextScaleGenerator",
    "PassGraphs",
    "PassHooks",
    "PassSpec",
    "PipelineOutput",
    "RunInfo",
    "SamplingConfig",
    "ScaleFamily",
    "ScaleSkip",
    "ScaleTokens",
    "ScorerSpec",
    "StageClock",
    "Step",
    "StepOutput",
    "StepPlan",
    "StepTokens",
    "SublayerHook",
    "SublayerSite",
    "dry_run",
    "estimate_kv_cache",
    "graph_refusal",
    "load",
    "method_by_name",
    "model_entry",
    "preset_names",
    "preset_rank_ratios",
    "preset_thresholds",
    "register_model",
    "register_rank_ratios",
    "register_thresholds",
    "sequential_plan",
]
