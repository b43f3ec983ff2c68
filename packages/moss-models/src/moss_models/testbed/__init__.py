"""The testbed: a small Infinity trained in this repository on procedural shapes (config, word-level text
encoder, training losses). Training runs through ``tools/train_testbed.py``."""

from moss_models.testbed.config import TESTBED, TESTBED_SIDES, TESTBED_VAE, ModelSpec, make_spec
from moss_models.testbed.text import WordTextEncoder, words_of
from moss_models.testbed.training import (
    cropped_grids,
    drop_conditions,
    quantize_latent,
    teacher_forcing,
    transformer_losses,
    vae_losses,
)

__all__ = [
    "TESTBED",
    "TESTBED_SIDES",
    "TESTBED_VAE",
    "ModelSpec",
    "WordTextEncoder",
    "cropped_grids",
    "drop_conditions",
    "make_spec",
    "quantize_latent",
    "teacher_forcing",
    "transformer_losses",
    "vae_losses",
    "words_of",
]
