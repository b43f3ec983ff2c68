"""VAR (FoundationVision/VAR, class-conditional ImageNet) groundwork: its multi-scale residual VQVAE tokenizer,
checkpoint-compatible with the released ``vae_ch160v4096z32.pth``, and its transformer (d16 … d36), compatible
with ``var_d16.pth`` … ``var_d36.pth``. The family (sampling loop, engine hooks) comes later."""

from moss_models.var.config import VAR_CONFIGS, VARConfig, get_var_config
from moss_models.var.loading import (
    VQVAE_RELEASE_FILE,
    load_var_transformer,
    load_vqvae,
    meta_var_transformer,
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

__all__ = [
    "PATCH_NUMS",
    "PATCH_NUMS_256",
    "PATCH_NUMS_512",
    "VAR_CONFIGS",
    "VQVAE_CONFIGS",
    "VQVAE_RELEASE_FILE",
    "MultiScaleQuantizer",
    "MultiScaleVQVAE",
    "VARBlockConstants",
    "VARConfig",
    "VARContext",
    "VARTransformer",
    "VQVAEConfig",
    "get_var_config",
    "get_vqvae_config",
    "load_var_transformer",
    "load_vqvae",
    "meta_var_transformer",
    "phi_index",
    "var_release_path",
    "vqvae_release_path",
]
