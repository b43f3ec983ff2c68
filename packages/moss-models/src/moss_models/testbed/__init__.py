"""The testbed: a small Infinity trained in this repository on procedural shapes (config, word-level text
encoder, training losses, the registered ``testbed_random`` model and its placeholder MoSs presets). Training runs
through ``tools/train_testbed.py``."""

from moss_models.testbed import presets  # noqa: F401  (registers the placeholder thresholds)
from moss_models.testbed.config import TESTBED, TESTBED_SIDES, TESTBED_VAE, ModelSpec, make_spec
from moss_models.testbed.model import (
    InfinityTestbedFamily,
    build,
    meta_testbed_family,
    random_testbed,
    spec_of,
)
from moss_models.testbed.text import SHAPES_VOCABULARY, WordTextEncoder, words_of
from moss_models.testbed.training import (
    cropped_grids,
    drop_conditions,
    quantize_latent,
    teacher_forcing,
    transformer_losses,
    vae_losses,
)

__all__ = [
    "SHAPES_VOCABULARY",
    "TESTBED",
    "TESTBED_SIDES",
    "TESTBED_VAE",
    "InfinityTestbedFamily",
    "ModelSpec",
    "WordTextEncoder",
    "build",
    "cropped_grids",
    "drop_conditions",
    "make_spec",
    "meta_testbed_family",
    "quantize_latent",
    "random_testbed",
    "spec_of",
    "teacher_forcing",
    "transformer_losses",
    "vae_losses",
    "words_of",
]
