"""VAR (FoundationVision/VAR, class-conditional ImageNet) groundwork: its multi-scale residual VQVAE tokenizer,
checkpoint-compatible with the released ``vae_ch160v4096z32.pth``. The transformer and the family come later."""

from moss_models.var.loading import VQVAE_RELEASE_FILE, load_vqvae, vqvae_release_path
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
    "VQVAE_CONFIGS",
    "VQVAE_RELEASE_FILE",
    "MultiScaleQuantizer",
    "MultiScaleVQVAE",
    "VQVAEConfig",
    "get_vqvae_config",
    "load_vqvae",
    "phi_index",
    "vqvae_release_path",
]
