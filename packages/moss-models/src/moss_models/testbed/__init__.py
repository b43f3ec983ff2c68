"""The testbed: a small Infinity trained in this repository on procedural shapes (config, word-level text
encoder, training losses, the registered ``testbed`` model with its shipped weights and searched MoSs presets, and
``testbed_random``). Training runs through ``tools/train_testbed.py``."""

from moss_models.testbed import presets  # noqa: F401  (registers the MoSs thresholds)
from moss_models.testbed.config import (
    TESTBED,
    TESTBED_SIDES,
    TESTBED_TEXT_LAYERS,
    TESTBED_VAE,
    ModelSpec,
    make_spec,
    spec_from_record,
    spec_record,
)
from moss_models.testbed.model import (
    InfinityTestbedFamily,
    build,
    meta_testbed_family,
    random_testbed,
    spec_of,
)
from moss_models.testbed.text import SHAPES_VOCABULARY, WordTextEncoder, words_of
from moss_models.testbed.trained import (
    CARD_FILE,
    TEXT_FILE,
    TRAINED_NAME,
    TRANSFORMER_FILE,
    VAE_FILE,
    WEIGHTS_DIR,
    export_files,
    load_trained_testbed,
    save_testbed,
    save_vae,
    text_encoder_of,
)
from moss_models.testbed.training import (
    cropped_grids,
    drop_conditions,
    grow_depth,
    quantize_latent,
    scale_loss_weights,
    self_correcting_teacher_forcing,
    teacher_forcing,
    transformer_losses,
    vae_losses,
)

__all__ = [
    "CARD_FILE",
    "SHAPES_VOCABULARY",
    "TESTBED",
    "TESTBED_SIDES",
    "TESTBED_TEXT_LAYERS",
    "TESTBED_VAE",
    "TEXT_FILE",
    "TRAINED_NAME",
    "TRANSFORMER_FILE",
    "VAE_FILE",
    "WEIGHTS_DIR",
    "InfinityTestbedFamily",
    "ModelSpec",
    "WordTextEncoder",
    "build",
    "cropped_grids",
    "drop_conditions",
    "export_files",
    "grow_depth",
    "load_trained_testbed",
    "make_spec",
    "meta_testbed_family",
    "quantize_latent",
    "random_testbed",
    "save_testbed",
    "save_vae",
    "scale_loss_weights",
    "self_correcting_teacher_forcing",
    "spec_from_record",
    "spec_of",
    "spec_record",
    "teacher_forcing",
    "text_encoder_of",
    "transformer_losses",
    "vae_losses",
    "words_of",
]
