"""moss-models: checkpoint-faithful next-scale-prediction model families with the MoSs stage.

The only package that knows a model. Infinity is the first family (:mod:`moss_models.infinity`): its transformer
and BSQ VAE carry the official state_dict keys, load the released files strictly, reproduce the official CPU
outputs exactly, and generate with the official loop (baseline) or with Mixture of Scales (drafter scales, a
moss-dispatch plan, one packed moss-attention pass, the composite).
"""

from moss_models.core.checkpoints import CheckpointMismatchError, load_state_dict
from moss_models.core.kv_cache import KVCache
from moss_models.core.sampling import SEEDING_MODES
from moss_models.core.timing import StageClock
from moss_models.infinity import (
    CONFIGS,
    CheckpointNotFoundError,
    GenerationResult,
    GenerationStats,
    InfinityConfig,
    InfinityGenerator,
    MossConfig,
    SamplingConfig,
    TextBatch,
    estimate_kv_cache,
    get_config,
    load_infinity,
    random_infinity,
)

__version__ = "0.1.0"

__all__ = [
    "CONFIGS",
    "SEEDING_MODES",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "GenerationResult",
    "GenerationStats",
    "InfinityConfig",
    "InfinityGenerator",
    "KVCache",
    "MossConfig",
    "SamplingConfig",
    "StageClock",
    "TextBatch",
    "estimate_kv_cache",
    "get_config",
    "load_infinity",
    "load_state_dict",
    "random_infinity",
]
