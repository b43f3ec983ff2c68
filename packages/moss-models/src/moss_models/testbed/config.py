"""The testbed: a small Infinity (same modules, same code path) trained in this repository on procedural shapes.

It is a configuration of the Infinity family, not a model of its own: an :class:`InfinityConfig` with a small
BSQ VAE (8× downsampling, so a 128² image is a 16² latent grid), a word-level text encoder of width
``text_channels`` (:mod:`moss_models.testbed.text`) in place of flan-t5, and a schedule of 10 square scales fine
enough for MoSs k2…k5 to differ. Blocks run in fp32: it is trained and run on CPU, where bf16 is slow.

The schedule is part of the config (``InfinityConfig.scale_sides``), so the Infinity family generates at it
through the normal path (``InfinityFamily.schedule(128, 1.0)``) and :meth:`ModelSpec.schedule` is that same one.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from moss_models.infinity.config import InfinityConfig
from moss_models.infinity.family import checked_schedule
from moss_models.infinity.schedules import InfinitySchedule
from moss_models.infinity.vae import BSQVAEConfig
from moss_models.testbed.text import check_context_layers

Grid = tuple[int, int]

#: the side of every scale's square grid; the last one is the VAE latent grid (128 / 8 = 16)
TESTBED_SIDES: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
TESTBED_RESOLUTION = 128
TESTBED_BUDGET = "testbed"  # the schedule's budget name: a config's own schedule is named after the config

# 8× down (three downsampling levels); 32 channels down to 64² and 64 below: sized so the VAE stage trains at
# ~0.3-0.4 s per step of 16 64² crops on 2 CPU cores (conf/train_testbed.yaml has the measured numbers).
# 32 bits per token: with 16, the VAE alone (3000 steps, 22.6 dB) turned small diamonds into discs and stars into
# blobs, and its reconstructions of the Shapes-GenEval set scored 0.53, a ceiling below the 0.6 the testbed must reach.
TESTBED_VAE = BSQVAEConfig(codebook_dim=32, patch_size=8, base_ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1)

#: contextual layers of the word encoder (moss_models.testbed.text): without them the condition is a bag of words and
#: colours cannot be bound to shapes
TESTBED_TEXT_LAYERS = 2
TESTBED_TEXT_HEADS = 2

TESTBED = InfinityConfig(
    "testbed",
    depth=4,
    embed_dim=128,
    num_heads=2,  # head_dim 64
    block_chunks=2,
    vae=TESTBED_VAE,
    text_channels=128,  # one word embedding; 128 gives the attentive pool one head (text_channels // 128)
    text_maxlen=24,  # caption words + the end token
    num_levels=len(TESTBED_SIDES),
    block_dtype=torch.float32,
    max_resolution=TESTBED_RESOLUTION,
    scale_sides=TESTBED_SIDES,
)


@dataclass(frozen=True)
class ModelSpec:
    """Everything that fixes the testbed's shapes: the Infinity config, the scale sides and the word encoder's
    contextual layers (``text_layers`` of ``text_heads`` heads; 0: a bag of word embeddings)."""

    config: InfinityConfig = TESTBED
    sides: tuple[int, ...] = TESTBED_SIDES
    text_layers: int = TESTBED_TEXT_LAYERS
    text_heads: int = TESTBED_TEXT_HEADS

    def __post_init__(self) -> None:
        check_context_layers(self.text_layers, self.text_heads, self.config.text_channels, prefix="text_")
        sides = tuple(self.sides)
        if not sides or sides[0] != 1 or any(b <= a for a, b in itertools.pairwise(sides)):
            raise ValueError(f"schedule sides={list(sides)} must start at 1 and increase strictly")
        if len(sides) > self.config.num_levels:
            raise ValueError(
                f"schedule has {len(sides)} scales but config.num_levels={self.config.num_levels} level embeddings"
            )
        if self.config.apply_spatial_patchify:
            raise ValueError("the testbed has no spatial patchify (a token is one VAE latent position)")
        if self.config.scale_sides != sides:  # one schedule: the family generates at the config's
            raise ValueError(
                f"config.scale_sides={self.config.scale_sides} differs from sides={list(sides)}; build the spec "
                "with make_spec(sides), which sets both"
            )

    @property
    def grids(self) -> tuple[Grid, ...]:
        return tuple((s, s) for s in self.sides)

    @property
    def resolution(self) -> int:
        """The image side: the last grid is the VAE latent grid."""
        return self.sides[-1] * self.config.vae.patch_size

    def schedule(self) -> InfinitySchedule:
        """The testbed's one schedule (square, RoPE positions on its own last grid, 8 pixels per token): the
        one the Infinity family generates at for this config."""
        return checked_schedule(self.config, self.resolution, 1.0)


def make_spec(
    sides: tuple[int, ...] | list[int] | None = None,
    vae: dict | None = None,
    *,
    text_layers: int | None = None,
    **config_changes,
) -> ModelSpec:
    """The testbed spec, optionally with config fields, VAE fields, schedule sides or the word encoder's layers
    changed (smaller sizes for tests; the shipped checkpoint uses the defaults)."""
    config = TESTBED
    if vae:
        fields = {**TESTBED_VAE.__dict__, **dict(vae)}
        fields["ch_mult"] = tuple(fields["ch_mult"])  # a Hydra list; the frozen config keeps a tuple
        config = config.with_(vae=BSQVAEConfig(**fields))
    sides = tuple(sides) if sides is not None else TESTBED_SIDES
    # the largest (and only) resolution follows the schedule and the VAE unless it is given; the config carries
    # the schedule, so the family generates at it
    changes = {"max_resolution": sides[-1] * config.vae.patch_size, "scale_sides": sides, **config_changes}
    layers = TESTBED_TEXT_LAYERS if text_layers is None else text_layers
    return ModelSpec(config.with_(**changes), sides, layers)


def spec_record(spec: ModelSpec) -> dict:
    """The spec as JSON-ready data (the ``config``, ``vae`` and ``sides`` of a trained testbed's card)."""
    cfg = spec.config
    fields = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.__dict__.items()
              if k not in ("vae", "block_dtype")}  # fmt: skip
    return {"config": fields, "vae": {**cfg.vae.__dict__, "ch_mult": list(cfg.vae.ch_mult)},
            "sides": list(spec.sides), "text": {"layers": spec.text_layers, "heads": spec.text_heads}}  # fmt: skip


def spec_from_record(record: dict, **config_changes) -> ModelSpec:
    """The spec a :func:`spec_record` describes (JSON lists back to the config's tuples); ``config_changes``
    (e.g. ``block_dtype``) are applied on top. A record without ``text`` is a bag-of-words encoder's (the
    first exports had no contextual layers)."""
    try:
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in record["config"].items()}
        vae = BSQVAEConfig(**{**record["vae"], "ch_mult": tuple(record["vae"]["ch_mult"])})
        config = InfinityConfig(**{**fields, "vae": vae, "block_dtype": torch.float32, **config_changes})
        text = record.get("text") or {"layers": 0, "heads": TESTBED_TEXT_HEADS}
        return ModelSpec(config, tuple(record["sides"]), int(text["layers"]), int(text["heads"]))
    except (KeyError, TypeError) as err:
        raise ValueError(f"not a testbed spec record ({type(err).__name__}: {err})") from None
