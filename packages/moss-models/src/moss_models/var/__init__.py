"""VAR (FoundationVision/VAR, class-conditional ImageNet) as a model family: its multi-scale residual VQVAE
tokenizer, checkpoint-compatible with the released ``vae_ch160v4096z32.pth``, its transformer (d16 … d36),
compatible with ``var_d16.pth`` … ``var_d36.pth``, :class:`VARFamily` (the math the core generator calls), the
registered models ``var_d16`` … ``var_d36`` and ``var_tiny`` (random weights), and the (untuned) MoSs presets."""

import functools

from moss_models.core.registry import ModelEntry, register_model
from moss_models.var import presets  # noqa: F401  (registers the placeholder thresholds)
from moss_models.var.config import VAR_CONFIGS, VARConfig, get_var_config
from moss_models.var.family import ClassLabels, VARFamily, VARSchedule, meta_family, var_schedule
from moss_models.var.loading import (
    VQVAE_RELEASE_FILE,
    build,
    load_var_transformer,
    load_vqvae,
    meta_var_transformer,
    random_var_transformer,
    random_vqvae,
    release_paths,
    var_release_path,
    vqvae_release_path,
)
from moss_models.var.transformer import VARBlockConstants, VARContext, VARTransformer
from moss_models.var.vqvae import (
    PATCH_NUMS,
    PATCH_NUMS_256,
    PATCH_NUMS_512,
    VQVAE_CONFIGS,
    MultiScaleQuantizer,
    MultiScaleVQVAE,
    VQVAEConfig,
    get_vqvae_config,
    phi_index,
)


def _schedule_of(config: VARConfig):
    def schedule(resolution=None, aspect_ratio=1.0, *, arch=None):
        """The model's schedule without building it (VAR has one shape per model: no ``arch``)."""
        if arch:
            raise ValueError(f"{config.name} has no arch options")
        return var_schedule(config, resolution, aspect_ratio)

    return schedule


def _layer_groups_of(config: VARConfig):
    def layer_groups(arch=None) -> tuple[range, ...]:
        """One group of every block (VAR has no block chunks), without building the model."""
        return (range(config.depth),)

    return layer_groups


for _name, _config in VAR_CONFIGS.items():
    register_model(
        ModelEntry(
            _name,
            "var",
            build,
            _schedule_of(_config),
            default_weights="release" if _config.release_file else "random",
            default_resolution=_config.resolution,
            description=f"VAR {_name.removeprefix('var_')} (class-conditional ImageNet {_config.resolution}²)",
            layer_groups=_layer_groups_of(_config),
            conditions="labels",
            release_paths=functools.partial(release_paths, _name) if _config.release_file else None,
        )
    )

__all__ = [
    "PATCH_NUMS",
    "PATCH_NUMS_256",
    "PATCH_NUMS_512",
    "VAR_CONFIGS",
    "VQVAE_CONFIGS",
    "VQVAE_RELEASE_FILE",
    "ClassLabels",
    "MultiScaleQuantizer",
    "MultiScaleVQVAE",
    "VARBlockConstants",
    "VARConfig",
    "VARContext",
    "VARFamily",
    "VARSchedule",
    "VARTransformer",
    "VQVAEConfig",
    "build",
    "get_var_config",
    "get_vqvae_config",
    "load_var_transformer",
    "load_vqvae",
    "meta_family",
    "meta_var_transformer",
    "phi_index",
    "random_var_transformer",
    "random_vqvae",
    "release_paths",
    "var_release_path",
    "vqvae_release_path",
]
