"""The testbed as registered models: ``moss_models.load("testbed")`` (the trained weights shipped with this
package, :mod:`moss_models.testbed.trained`) and ``moss_models.load("testbed_random")``.

It is the Infinity family's math on the testbed config (its own 10-scale, 128² schedule carried by the config),
with a :class:`~moss_models.testbed.text.WordTextEncoder` in place of flan-t5. The family subclass changes only
its name, so the MoSs presets are looked up under ``testbed`` (:mod:`moss_models.testbed.presets`), not under
Infinity's paper values for the released models.

``testbed_random`` has seeded random weights (transformer, VAE and word embeddings) at the same shapes; it is also
what ``load("testbed", weights="random")`` builds.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from moss_models.core.generator import NextScaleGenerator
from moss_models.core.registry import ModelEntry, register_model
from moss_models.infinity.config import InfinityConfig
from moss_models.infinity.family import InfinityFamily, checked_schedule, meta_family
from moss_models.infinity.loading import DTYPES, random_infinity
from moss_models.testbed.config import ModelSpec, make_spec
from moss_models.testbed.presets import FAMILY
from moss_models.testbed.text import SHAPES_VOCABULARY
from moss_models.testbed.trained import (
    TRAINED_NAME,
    block_dtype_change,
    card_spec,
    export_files,
    load_trained_testbed,
    read_card,
    text_encoder_of,
)

RANDOM_NAME = "testbed_random"


class InfinityTestbedFamily(InfinityFamily):
    """The Infinity family under the name ``testbed``: same math; its own method presets.

    (Not named ``Testbed…``: pytest would try to collect it as a test class wherever a test imports it.)
    """

    name = FAMILY

    def accounting_key(self):
        return (FAMILY, repr(self.config))

    def dry_run_family(self) -> InfinityTestbedFamily:
        return meta_testbed_family(self.config)


def meta_testbed_family(config: InfinityConfig) -> InfinityTestbedFamily:
    """The testbed family on the meta device (exact FLOP and KV accounting, nothing allocated)."""
    meta = meta_family(config)
    return InfinityTestbedFamily(meta.transformer, meta.vae)


def spec_of(arch: dict | None = None) -> ModelSpec:
    """The testbed spec with ``arch`` changes: config fields, plus ``sides`` (the schedule), ``vae`` (fields of
    the VAE config) and ``text_layers``, as :func:`~moss_models.testbed.config.make_spec` takes them. ``{}``: the
    shipped shapes."""
    changes = dict(arch or {})
    sides, vae = changes.pop("sides", None), changes.pop("vae", None)
    text_layers = changes.pop("text_layers", None)
    try:
        return make_spec(sides, vae, text_layers=text_layers, **changes)
    except (TypeError, ValueError) as err:
        raise ValueError(f"arch={dict(arch or {})}: {err}") from None


def random_testbed(
    spec: ModelSpec | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    *,
    vocabulary: Sequence[str] | None = None,
    name: str = RANDOM_NAME,
) -> NextScaleGenerator:
    """A testbed generator with seeded random weights; ``vocabulary``: the word encoder's words (default: the
    Shapes captions' :data:`~moss_models.testbed.text.SHAPES_VOCABULARY`)."""
    spec = spec or make_spec()
    config = spec.config
    words = SHAPES_VOCABULARY if vocabulary is None else tuple(vocabulary)
    encoder = text_encoder_of(spec, words, device=device)
    # nn.Embedding draws from the global RNG; a generator of its own makes the seed name the whole model
    gen = torch.Generator(device="cpu").manual_seed(seed + 2)  # seed, seed + 1: transformer, VAE
    with torch.no_grad():
        for name, param in encoder.named_parameters():
            if param.dim() == 1:  # layer norms at identity, biases at zero
                param.fill_(1.0 if "norm" in name and name.endswith("weight") else 0.0)
            else:  # the embeddings at unit scale, like T5 features after text_norm; the layers' matrices small
                scale = 1.0 if param is encoder.embedding.weight else 0.02
                param.copy_(torch.randn(param.shape, generator=gen) * scale)
    infinity = random_infinity(config, seed, device).family  # the transformer and VAE init of the family
    family = InfinityTestbedFamily(infinity.transformer, infinity.vae, encoder.eval())
    return NextScaleGenerator(family, name=name, default_resolution=config.max_resolution)


def build(
    name: str,
    *,
    weights: str = "random",
    checkpoints=None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    dtype: str | torch.dtype | None = None,
    arch: dict | None = None,
    vocabulary: Sequence[str] | None = None,
) -> NextScaleGenerator:
    """The registry's builder (``moss_models.load("testbed" | "testbed_random", ...)``).

    ``weights="release"`` (``testbed`` only): the trained export in ``checkpoints`` (default: the shipped one);
    ``"random"``: seeded random weights. ``dtype``: the transformer blocks' dtype (fp32 by default: the testbed
    runs on CPU); ``arch``: see :func:`spec_of` (random weights only); ``vocabulary``: the word encoder's words
    (random weights only: a trained encoder's words are its card's).
    """
    if dtype is not None and isinstance(dtype, str) and dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}; choose one of {sorted(DTYPES)}")
    if weights == "release":
        if name != TRAINED_NAME:
            raise ValueError(
                f"{name} has seeded random weights only (weights=release asked); use weights=random"
            )
        if arch or vocabulary is not None:
            raise ValueError(
                f"arch={arch} / vocabulary={vocabulary} change the trained testbed's shapes or words, so its "
                "weights cannot load; use weights=random"
            )
        if torch.device(device).type == "meta":  # exact accounting: the card's shapes, no weights read
            paths = export_files(checkpoints)
            spec = card_spec(read_card(paths["card"]), paths["card"], **block_dtype_change(dtype))
            family = meta_testbed_family(spec.config)
            return NextScaleGenerator(family, name=name, default_resolution=spec.config.max_resolution)
        return load_trained_testbed(checkpoints, device, dtype=dtype, name=name)
    if weights != "random":
        raise ValueError(f"weights={weights!r}; choose release or random")
    spec = spec_of({**(arch or {}), **block_dtype_change(dtype)})
    if torch.device(device).type == "meta":  # the real modules without memory or weights (exact accounting)
        family = meta_testbed_family(spec.config)
        return NextScaleGenerator(family, name=name, default_resolution=spec.config.max_resolution)
    return random_testbed(spec, seed, device, vocabulary=vocabulary, name=name)


def _schedule(resolution, aspect_ratio: float = 1.0, *, arch: dict | None = None):
    """The testbed's schedule without building it (``arch``: as :func:`build` takes it)."""
    return checked_schedule(spec_of(arch).config, resolution, aspect_ratio)


def _layer_groups(arch: dict | None = None) -> tuple[range, ...]:
    c = spec_of(arch).config
    per = c.blocks_per_chunk
    return tuple(range(i * per, (i + 1) * per) for i in range(c.block_chunks))


register_model(
    ModelEntry(
        TRAINED_NAME,
        FAMILY,
        build,
        _schedule,
        default_weights="release",
        default_resolution=make_spec().resolution,
        description="the testbed trained on procedural shapes (small Infinity, 128², 10 scales), shipped with "
        "moss-models: real pictures on CPU with nothing downloaded",
        layer_groups=_layer_groups,
        conditions="prompts",
        release_paths=export_files,
    )
)
register_model(
    ModelEntry(
        RANDOM_NAME,
        FAMILY,
        build,
        _schedule,
        default_weights="random",
        default_resolution=make_spec().resolution,
        description="the testbed architecture (small Infinity, 128², 10 scales) with seeded random weights",
        layer_groups=_layer_groups,
        conditions="prompts",
    )
)
