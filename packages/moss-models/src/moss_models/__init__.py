"""moss-models: next-scale-prediction model families and the acceleration methods that run on them.

The only package that knows a model. :mod:`moss_models.core` holds the one generator loop, the family protocol,
the method interface with the built-in methods (baseline, MoSs, scale skipping, and the peers FastVAR, FasterVAR
and guidance off, which compose with MoSs), exact meta-device accounting and
the model registry; each family lives in its own folder (:mod:`moss_models.infinity` first: official state_dict
keys, strict loading, bit-identical with the official CPU outputs).

>>> import moss_models
>>> pipe = moss_models.load("infinity_tiny")          # embedded: random weights, hashed text features, CPU
>>> out = pipe(["a red fox"], method="k5", seed=0)
>>> out.images[0].size
(256, 256)
"""

from moss_models import (
    hart,  # noqa: F401  (registers the HART models and presets)
    infinity,  # noqa: F401  (registers the Infinity models and presets)
    testbed,  # noqa: F401  (registers testbed_random and the testbed presets)
    var,  # noqa: F401  (registers the VAR models and presets)
)
from moss_models.core import (
    MODELS,
    SEEDING_MODES,
    AttentionSpec,
    Baseline,
    Compose,
    DryRun,
    FasterVAR,
    FastVAR,
    GenerationResult,
    GenerationStats,
    GuidanceOff,
    KVCache,
    Method,
    Modifier,
    Moss,
    NextScaleGenerator,
    PassSpec,
    PipelineOutput,
    SamplingConfig,
    ScaleFamily,
    ScaleSkip,
    ScorerSpec,
    StageClock,
    StepPlan,
    StepTokens,
    SublayerHook,
    dry_run,
    estimate_kv_cache,
    load,
    method_by_name,
    register_model,
)
from moss_models.core.checkpoints import (
    CheckpointMismatchError,
    UnreadableCheckpointError,
    UnsafeCheckpointError,
    load_state_dict,
)
from moss_models.infinity import CheckpointNotFoundError

__version__ = "0.9.0"

__all__ = [
    "MODELS",
    "SEEDING_MODES",
    "AttentionSpec",
    "Baseline",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "Compose",
    "DryRun",
    "FastVAR",
    "FasterVAR",
    "GenerationResult",
    "GenerationStats",
    "GuidanceOff",
    "KVCache",
    "Method",
    "Modifier",
    "Moss",
    "NextScaleGenerator",
    "PassSpec",
    "PipelineOutput",
    "SamplingConfig",
    "ScaleFamily",
    "ScaleSkip",
    "ScorerSpec",
    "StageClock",
    "StepPlan",
    "StepTokens",
    "SublayerHook",
    "UnreadableCheckpointError",
    "UnsafeCheckpointError",
    "dry_run",
    "estimate_kv_cache",
    "load",
    "load_state_dict",
    "method_by_name",
    "register_model",
]
