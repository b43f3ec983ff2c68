"""The protocol a model family implements: the math of one next-scale model and its checkpoint format.

:class:`~moss_models.core.generator.NextScaleGenerator` owns the order of a generation and calls these methods;
a family owns what they compute. A new family is one subclass (and its modules, loading and presets in its own
folder); it never copies the loop. ``tests/models/test_core_family.py`` holds a complete family of a few dozen
lines.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from moss_models.core.kv_cache import KVCache
from moss_models.core.pass_spec import PassSpec
from moss_models.core.sampling import SamplingConfig
from moss_models.core.steps import Grid, StepTokens


class ScaleFamily(ABC):
    """A next-scale model family: schedule, conditioning, passes, sampling, latents and decode.

    Conventions the generator relies on:

    * a *context* (from :meth:`encode_condition`) has ``batch_size`` rows: the images, then, with guidance, the
      unconditional rows in the same order (so ``rows = 2 · images``);
    * a *latent* is the family's running sum on its decoder's grid, ``(B, ...)`` per image;
    * *samples* are what a pass draws per token (Infinity: bits; VAR/HART: codebook indices), ``(B, N, ...)``.
    """

    #: registry name of the family (``infinity``, ``hart``, ``var``, ...); method presets are looked up by it
    name: str = "family"

    # ---------------------------------------------------------------- where and what

    @property
    @abstractmethod
    def device(self) -> torch.device: ...

    def autocast(self):
        """The precision context of the passes (default: none)."""
        import contextlib

        return contextlib.nullcontext()

    @property
    def num_layers(self) -> int:
        """Blocks per pass (what ``keep=("hidden",)`` indexes)."""
        raise NotImplementedError(f"{type(self).__name__} does not say how many blocks it has")

    @property
    def layer_groups(self) -> tuple[range, ...] | None:
        """The groups of blocks a pass runs through :meth:`PassSpec.block_group` (Infinity: its block chunks);
        None if the family has no groups (then block-group hooks are refused)."""
        return None

    @abstractmethod
    def schedule(self, resolution: Any, aspect_ratio: float) -> Any:
        """The scale schedule; it has ``.grids``, a tuple of ``(h, w)`` token grids, coarse to fine."""

    @abstractmethod
    def positions(self, schedule: Any) -> object:
        """The position data of a schedule that the attention reads (:attr:`PassSpec.rope`); may be None."""

    # ---------------------------------------------------------------- conditioning

    @abstractmethod
    def condition(self, conditions: Any, *, per_image: bool) -> Any:
        """Prompts (or labels, or precomputed features) to the family's conditioning batch, checked.

        The result has ``batch_size``. ``per_image``: an image's conditioning must not depend on its batch.
        """

    @abstractmethod
    def uses_guidance(self, sampling: SamplingConfig, schedule: Any) -> bool:
        """Whether any scale is guided (then the batch carries unconditional rows)."""

    @abstractmethod
    def encode_condition(self, cond: Any, *, guidance: bool, per_image: bool) -> Any:
        """The context every pass reads; ``batch_size`` rows (see the class docstring)."""

    def context_rows(self, ctx: Any, rows: str, batch: int) -> Any:
        """The part of a context with only the conditional (``cond``) or unconditional (``uncond``) row of each
        image, for a pass that carries only those rows (guidance off)."""
        raise NotImplementedError(f"{type(self).__name__} cannot run a pass on some CFG rows only")

    # ---------------------------------------------------------------- cache and latent

    @abstractmethod
    def kv_cache(self, rows: int, capacity: int | Sequence[int]) -> KVCache:
        """The cache of a generation; ``capacity``: tokens per layer (one number for all, or one per layer)."""

    @abstractmethod
    def initial_latent(self, batch: int, schedule: Any) -> torch.Tensor:
        """The empty running sum (zeros) a generation starts from."""

    # ---------------------------------------------------------------- one pass

    @abstractmethod
    def embed(self, latent: torch.Tensor, ctx: Any, tokens: StepTokens, schedule: Any) -> torch.Tensor:
        """The ``(rows, N, C)`` input of a pass: the first scale's start tokens, or the next-scale input built
        from the running sum at the tokens' positions, with each token's own scale embedding."""

    @abstractmethod
    def forward(self, x: torch.Tensor, ctx: Any, spec: PassSpec) -> torch.Tensor:
        """One transformer pass over ``[cache ++ x]``; returns the last hidden states ``(rows, N, C)``."""

    @abstractmethod
    def logits(
        self, hidden: torch.Tensor, ctx: Any, tokens: StepTokens, sampling: SamplingConfig, schedule: Any
    ) -> torch.Tensor:
        """Raw head outputs of the rows guidance needs (all rows if any of the pass's scales is guided)."""

    @abstractmethod
    def sample(
        self,
        raw: torch.Tensor,
        tokens: StepTokens,
        sampling: SamplingConfig,
        schedule: Any,
        generators: Sequence[torch.Generator] | None,
        batch: int,
    ) -> torch.Tensor:
        """Guide each scale's logits with its own settings and draw ``(B, N, ...)`` samples.

        ``generators`` is None in a meta-device dry run: return empty samples of the right shape.
        """

    def finish(
        self,
        samples: Any,
        hidden: torch.Tensor,
        ctx: Any,
        tokens: StepTokens,
        schedule: Any,
        *,
        sampling: SamplingConfig,
        generators: Sequence[torch.Generator] | None,
        batch: int,
    ) -> Any:
        """An optional last refinement of a pass's samples before they are added (HART's diffusion head at the
        last scale), given the pass's last hidden states, its sampling settings (its guidance) and the
        generation's generators (None in a dry run), after :meth:`sample` drew from them. Default: the samples
        unchanged."""
        del hidden, ctx, tokens, schedule, sampling, generators, batch
        return samples

    @abstractmethod
    def accumulate(
        self, latent: torch.Tensor, samples: torch.Tensor, tokens: StepTokens, schedule: Any
    ) -> torch.Tensor:
        """The running sum after a pass: each scale's codes (or residuals at the selected positions, scattered
        and upsampled) added onto the latent grid."""

    def accumulate_images(
        self,
        latent: torch.Tensor,
        samples: torch.Tensor,
        tokens: StepTokens,
        schedule: Any,
        *,
        per_image: bool,
    ) -> torch.Tensor:
        """What the generator calls: :meth:`accumulate`, told whether the generation is ``per_image``.

        A family whose update rounds differently with the batch size (VAR's φ convolutions) overrides this to
        update each image on its own in ``per_image`` mode, as :meth:`decode` does; default: :meth:`accumulate`.
        """
        del per_image
        return self.accumulate(latent, samples, tokens, schedule)

    # ---------------------------------------------------------------- decode

    @abstractmethod
    def decode(self, latent: torch.Tensor, *, per_image: bool) -> torch.Tensor:
        """The running sum to ``(B, 3, H, W)`` float images in ``[-1, 1]``."""

    @abstractmethod
    def to_uint8(self, decoded: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` float to ``(B, H, W, 3)`` uint8 RGB."""

    # ---------------------------------------------------------------- accounting

    def accounting_key(self) -> Any:
        """A hashable identity of the architecture (weights aside) under which dry runs may be cached; None: do
        not cache. Two families with the same key must count the same FLOPs and bytes."""
        return None

    def dry_run_family(self) -> ScaleFamily:
        """The same family built on the meta device (no weights allocated), for exact FLOP and KV accounting."""
        raise NotImplementedError(f"{type(self).__name__} does not support meta-device dry runs")

    def dry_run_condition(self, batch: int, tokens: int | None) -> Any:
        """Conditioning inputs of ``batch`` images of ``tokens`` tokens each (None: a typical prompt), on meta."""
        raise NotImplementedError(f"{type(self).__name__} does not support meta-device dry runs")

    def scale_grid(self, schedule: Any, index: int) -> Grid:
        return tuple(schedule.grids[index])


HALF_DTYPES = (torch.float16, torch.bfloat16)


class ConfiguredPrecision:
    """The depth, block groups and precision of a family whose config names ``depth``, ``block_dtype`` (the
    weights' dtype) and ``autocast_dtype`` (what the release's passes autocast to on CUDA), and whose transformer has
    ``layer_groups`` (VAR, HART).

    The passes compute in ``autocast_dtype`` when ``self.precision_device`` is ``"cuda"`` (the meta device follows
    CUDA, so accounting counts the GPU run), else in ``block_dtype``; a half-precision compute dtype runs under
    ``torch.autocast`` except on the meta device.
    """

    config: Any
    transformer: Any
    precision_device: str
    device: torch.device

    @property
    def num_layers(self) -> int:
        return self.config.depth

    @property
    def layer_groups(self) -> tuple[range, ...]:
        return self.transformer.layer_groups

    @property
    def compute_dtype(self) -> torch.dtype:
        c = self.config
        if self.precision_device == "cuda" and c.autocast_dtype is not None:
            return c.autocast_dtype
        return c.block_dtype

    def autocast(self):
        dtype = self.compute_dtype
        if dtype not in HALF_DTYPES or self.device.type == "meta":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)


@dataclass(frozen=True)
class SquareSchedule:
    """A model's one schedule: square grids at its one resolution (VAR, HART)."""

    grids: tuple[Grid, ...]
    resolution: int


def square_schedule(
    name: str, patch_nums: Sequence[int], native: int, resolution: Any = None, aspect_ratio: float = 1.0
) -> SquareSchedule:
    """``patch_nums`` as square grids at the model's ``native`` resolution; ``resolution`` (None: the native one)
    and ``aspect_ratio`` are checked, since a fixed-schedule model generates nothing else."""
    if resolution is not None:
        try:
            ok = float(resolution) == native
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(
                f"{name} generates {native}² images only; resolution must be {native}, got {resolution!r}"
            )
    if aspect_ratio != 1:
        raise ValueError(f"{name} generates square images only; aspect_ratio must be 1, got {aspect_ratio!r}")
    return SquareSchedule(tuple((p, p) for p in patch_nums), native)
