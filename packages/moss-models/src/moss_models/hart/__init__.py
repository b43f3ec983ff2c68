"""HART (mit-han-lab/hart): text-to-image next-scale prediction, hybrid tokenizer, diffusion head.

A family of the engine: the transformer with the release's keys (:mod:`.transformer`, configs read from the
release's ``llm/config.json``: :mod:`.config`), the Qwen2 text context (:mod:`.text`), the hybrid tokenizer
(:mod:`.tokenizer`) and the residual diffusion head (:mod:`.diffusion`), :class:`HARTFamily` (the math the core
generator calls), loading of the release layout (:mod:`.loading`), the registered models ``hart_0.7b`` and
``hart_tiny`` (random weights, a tiny random Qwen2, CPU), and the method presets (:mod:`.presets`: MoSs k2
``[80, 55]``, FastVAR's and FasterVAR's released HART settings).
"""

import functools

from moss_models.core.registry import ModelEntry, register_model
from moss_models.hart import presets  # noqa: F401  (registers the thresholds and FasterVAR's ranks)
from moss_models.hart.config import (
    HART_CONFIGS,
    REFINE_DIFFUSION,
    HARTConfig,
    config_from_llm_json,
    get_hart_config,
)
from moss_models.hart.family import HARTFamily, HARTSamples, HARTSchedule, guidance_ratio, hart_schedule
from moss_models.hart.loading import (
    RELEASE_FOLDER,
    TEXT_ENCODER_FOLDER,
    build,
    load_hart_transformer,
    meta_family,
    meta_hart_transformer,
    random_hart_transformer,
    release_paths,
)
from moss_models.hart.text import HARTTextBatch, Qwen2TextEncoder, WordHashTokenizer, tiny_text_encoder
from moss_models.hart.transformer import DERIVED_KEYS, HARTContext, HARTTransformer, derived_key_names


def _schedule_of(config: HARTConfig):
    def schedule(resolution=None, aspect_ratio=1.0, *, arch=None):
        """The model's schedule without building it (HART has one shape per model: no ``arch``)."""
        if arch:
            raise ValueError(f"{config.name} has no arch options")
        return hart_schedule(config, resolution, aspect_ratio)

    return schedule


def _layer_groups_of(config: HARTConfig):
    def layer_groups(arch=None) -> tuple[range, ...]:
        """One group per block (FasterVAR's HART code works block by block), without building the model."""
        return tuple(range(i, i + 1) for i in range(config.depth))

    return layer_groups


_DESCRIPTIONS = {
    "hart_0.7b": "HART-0.7B (text-to-image 1024², Qwen2-1.5B text, residual diffusion head)",
    "hart_tiny": "HART at a tiny size: random weights, a tiny random Qwen2 text encoder, CPU",
}

for _name, _config in HART_CONFIGS.items():
    _release = _name == "hart_0.7b"
    register_model(
        ModelEntry(
            _name,
            "hart",
            build,
            _schedule_of(_config),
            default_weights="release" if _release else "random",
            default_resolution=_config.resolution,
            description=_DESCRIPTIONS[_name],
            layer_groups=_layer_groups_of(_config),
            conditions="prompts",
            release_paths=functools.partial(release_paths, _name) if _release else None,
        )
    )

__all__ = [
    "DERIVED_KEYS",
    "HART_CONFIGS",
    "REFINE_DIFFUSION",
    "RELEASE_FOLDER",
    "TEXT_ENCODER_FOLDER",
    "HARTConfig",
    "HARTContext",
    "HARTFamily",
    "HARTSamples",
    "HARTSchedule",
    "HARTTextBatch",
    "HARTTransformer",
    "Qwen2TextEncoder",
    "WordHashTokenizer",
    "build",
    "config_from_llm_json",
    "derived_key_names",
    "get_hart_config",
    "guidance_ratio",
    "hart_schedule",
    "load_hart_transformer",
    "meta_family",
    "meta_hart_transformer",
    "random_hart_transformer",
    "release_paths",
    "tiny_text_encoder",
]
