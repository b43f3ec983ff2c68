"""Infinity as a :class:`~moss_models.core.ScaleFamily`: the math of the official release, no loop.

What each protocol method computes is the official ``autoregressive_infer_cfg``'s: CFG by batch doubling applied
on logits after temperature; top-k/top-p bitwise sampling; codes ``±1/√d`` upsampled trilinearly and summed (the
last scale added as is); the next input resized trilinearly from the running sum and embedded by ``word_embed``;
every scale's level embedding added before the first block. A packed pass (the MoSs stage) gathers each scale's
input at its selected positions, guides each scale with its own settings, and composites each scale's residual
(scattered, upsampled) onto the draft.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F

from moss_attention import InfinityRope2D, RopeTables, precompute_rope_tables
from moss_dispatch import Dispatch, ScaleSelection, composite
from moss_models.core.family import ScaleFamily
from moss_models.core.kv_cache import KVCache
from moss_models.core.pass_spec import PassSpec
from moss_models.core.sampling import SamplingConfig, sample_bits
from moss_models.core.steps import Grid, StepTokens
from moss_models.infinity.config import InfinityConfig
from moss_models.infinity.schedules import (
    RESOLUTION_TO_BUDGET,
    InfinitySchedule,
    get_schedule,
    nearest_aspect_ratio,
    sides_schedule,
)
from moss_models.infinity.text import T5TextEncoder, TextBatch, index_device
from moss_models.infinity.transformer import InfinityTransformer, TextContext
from moss_models.infinity.vae import BSQVAE, images_to_uint8, upsample_codes

BUDGET_TO_RESOLUTION = {budget: res for res, budget in RESOLUTION_TO_BUDGET.items()}


def autocast_device_type(device: torch.device) -> str:
    return device.type if device.type in ("cuda", "cpu", "xpu", "mps") else "cpu"


def checked_schedule(
    config: InfinityConfig, resolution: int | str | None, aspect_ratio: float
) -> InfinitySchedule:
    """The schedule of a resolution and ratio, refused above what the config supports (None: its largest).

    A config with its own schedule (``scale_sides``) has one resolution and one (square) aspect ratio.
    """
    if resolution is None:
        resolution = config.max_resolution
    if config.scale_sides is not None:
        return _own_schedule(config, resolution, aspect_ratio)
    sched = get_schedule(resolution, aspect_ratio)
    if BUDGET_TO_RESOLUTION[sched.budget] > config.max_resolution:
        raise ValueError(
            f"resolution {resolution!r} is above what {config.name} supports; use at most "
            f"{config.max_resolution} (pixel budget of a {config.max_resolution}² image)"
        )
    return sched


def _own_schedule(config: InfinityConfig, resolution: int | str, aspect_ratio: float) -> InfinitySchedule:
    # bool is an int: True must not pass for a resolution
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution != config.max_resolution:
        raise ValueError(
            f"unsupported resolution {resolution!r} for {config.name}: it generates on its own schedule "
            f"(scale sides {list(config.scale_sides)}), at resolution {config.max_resolution} only"
        )
    nearest_aspect_ratio(aspect_ratio)  # refuses what is not a positive number, with the usual message
    if aspect_ratio != 1:  # trained on square grids only: there is no grid set for another ratio to snap to
        raise ValueError(
            f"aspect_ratio={aspect_ratio!r} is not supported by {config.name}: its own schedule is square "
            "(aspect_ratio 1 only)"
        )
    return sides_schedule(config.scale_sides, config.token_stride, config.name)


class InfinityFamily(ScaleFamily):
    """An Infinity transformer, its BSQ VAE and (optionally) its text encoder."""

    name = "infinity"

    def __init__(
        self, transformer: InfinityTransformer, vae: BSQVAE, text_encoder: T5TextEncoder | None = None
    ):
        self.transformer = transformer.eval()
        self.vae = vae.eval()
        self.text_encoder = text_encoder
        self.config: InfinityConfig = transformer.config
        self._rope_cache: dict[tuple, RopeTables] = {}

    @property
    def device(self) -> torch.device:
        return self.transformer.pos_start.device

    @property
    def num_layers(self) -> int:
        return self.config.depth

    @property
    def layer_groups(self) -> tuple[range, ...]:
        return self.transformer.layer_groups

    def autocast(self):
        enabled = self.config.block_dtype in (torch.bfloat16, torch.float16)
        return torch.autocast(
            autocast_device_type(self.device), dtype=self.config.block_dtype, enabled=enabled
        )

    # ------------------------------------------------------------------------------------------ schedule

    def schedule(self, resolution: int | str = 1024, aspect_ratio: float = 1.0) -> InfinitySchedule:
        return checked_schedule(self.config, resolution, aspect_ratio)

    def rope_tables(self, sched: InfinitySchedule) -> RopeTables:
        key = (sched.grids, sched.rope_grid, str(self.device))
        if key not in self._rope_cache:
            scheme = InfinityRope2D(
                self.config.head_dim, ref_grid=sched.rope_grid, base=self.config.rope_base
            )
            self._rope_cache[key] = precompute_rope_tables(scheme, sched.grids, device=self.device)
        return self._rope_cache[key]

    positions = rope_tables

    def latent_grid(self, grid: Grid) -> Grid:
        f = 2 if self.config.apply_spatial_patchify else 1
        return grid[0] * f, grid[1] * f

    # ------------------------------------------------------------------------------------------ conditioning

    def condition(self, conditions: Sequence[str] | TextBatch, *, per_image: bool = False) -> TextBatch:
        """Text features of the prompts, checked against the model; ``per_image`` encodes one prompt per call,
        so a prompt's features do not depend on the rest of the batch."""
        if isinstance(conditions, TextBatch):
            text = conditions
        else:
            if self.text_encoder is None:
                raise ValueError(
                    "this generator has no text encoder; pass a TextBatch of T5 features instead"
                )
            prompts = list(conditions)
            if per_image and len(prompts) > 1:
                parts = [self.text_encoder.encode([p]) for p in prompts]
                text = TextBatch.from_features(
                    [part.kv_compact for part in parts], [t for part in parts for t in part.truncated]
                )
            else:
                text = self.text_encoder.encode(prompts)
        if text.kv_compact.shape[1] != self.config.text_channels:
            raise ValueError(
                f"text features have {text.kv_compact.shape[1]} channels, {self.config.name} expects "
                f"{self.config.text_channels}"
            )
        if max(text.lens) > self.config.text_maxlen:
            raise ValueError(
                f"a prompt has {max(text.lens)} tokens, more than text_maxlen={self.config.text_maxlen}"
            )
        return text.to(self.device)

    def uses_guidance(self, sampling: SamplingConfig, schedule: InfinitySchedule) -> bool:
        return any(v != 1 for v in sampling.per_scale("cfg", len(schedule.grids)))

    def encode_condition(self, cond: TextBatch, *, guidance: bool, per_image: bool) -> TextContext:
        """Conditioning rows ``[cond_0 … cond_B-1, uncond_0 … uncond_B-1]`` (uncond rows only with CFG).

        ``per_image`` encodes each image's rows on their own and merges them, so an image's conditioning (and
        so its pixels) does not depend on which other prompts share its batch: matmul rounding can depend on
        the number of rows.
        """
        tf = self.transformer
        if not per_image or cond.batch_size == 1:
            full = cond.with_unconditional(tf.cfg_uncond) if guidance else cond
            return replace(tf.encode_text(full.kv_compact, full.cu_seqlens, full.bounds), has_uncond=guidance)
        parts = []
        for i in range(cond.batch_size):
            one = TextBatch.from_features([cond.select(i)])
            one = one.with_unconditional(tf.cfg_uncond) if guidance else one
            parts.append(tf.encode_text(one.kv_compact, one.cu_seqlens, one.bounds, prepare=False))
        order = [(p, r) for r in range(2 if guidance else 1) for p in parts]  # all cond rows, then all uncond
        tokens = [p.ca_kv[p.bounds[r] : p.bounds[r + 1]] for p, r in order]
        bounds = tuple(itertools.accumulate((t.shape[0] for t in tokens), initial=0))  # on the host: no read
        cu = torch.tensor(bounds, dtype=torch.int32)
        merged = TextContext(
            cond=torch.cat([p.cond[r : r + 1] for p, r in order]),
            gss=torch.cat([p.gss[r : r + 1] for p, r in order]),
            ca_kv=torch.cat(tokens),
            cu_seqlens=cu.to(index_device(self.device)),
            has_uncond=guidance,
            bounds=bounds,
        )
        return tf.prepare(merged)

    def context_rows(self, ctx: TextContext, rows: str, batch: int) -> TextContext:
        """Each image's conditional or unconditional row, with its own text tokens (FasterVAR's ``ca_kv_un``)."""
        del batch
        return ctx.rows(rows)

    # ------------------------------------------------------------------------------------------ cache, latent

    def kv_cache(
        self, rows: int, capacity: int | Sequence[int], device: torch.device | str | None = None
    ) -> KVCache:
        c = self.config
        return KVCache(c.depth, rows, c.num_heads, c.head_dim, capacity, c.block_dtype, device or self.device)

    def initial_latent(self, batch: int, schedule: InfinitySchedule) -> torch.Tensor:
        # channels_last like the release's running sum (it inherits the layout of the transposed codes); the CPU
        # decoder's convolutions round differently for the two layouts.
        latent = self.latent_grid(schedule.grids[-1])
        return torch.zeros(batch, self.vae.codebook_dim, *latent, device=self.device).to(
            memory_format=torch.channels_last
        )

    # ------------------------------------------------------------------------------------------ one pass

    def tokens_of(self, summed: torch.Tensor, grid: Grid) -> torch.Tensor:
        """Transformer input features of a scale: the running code sum resized to it, ``(B, h·w, d_vae)``."""
        x = upsample_codes(summed, self.latent_grid(grid))  # trilinear both ways, as the release
        if self.config.apply_spatial_patchify:
            x = F.pixel_unshuffle(x, 2)
        return x.reshape(*x.shape[:2], -1).permute(0, 2, 1)

    def embed(self, latent: torch.Tensor, ctx: TextContext, tokens: StepTokens, schedule) -> torch.Tensor:
        tf = self.transformer
        ids = tokens.scale_ids(self.device)
        if 0 in tokens.scales:
            if tokens.scales != (0,) or not tokens.is_full_scale:
                raise ValueError("the first scale (the start token) must run alone and in full")
            x = tf.start_tokens(ctx)
        else:
            pieces = []
            for part in tokens.parts:
                feats = self.tokens_of(latent, part.grid)
                if part.flat_index is not None:
                    index = part.flat_index.unsqueeze(-1).expand(-1, -1, feats.shape[-1])
                    feats = feats.gather(1, index)
                pieces.append(feats)
            feats = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)
            x = tf.word_embed(feats).repeat(ctx.batch_size // latent.shape[0], 1, 1)
        return tf.add_level(x, ids)

    def forward(self, x: torch.Tensor, ctx: TextContext, spec: PassSpec) -> torch.Tensor:
        return self.transformer.run_blocks(x, ctx, spec)

    def _guided_pass(self, tokens: StepTokens, sampling: SamplingConfig, schedule) -> tuple[bool, list, list]:
        n = len(schedule.grids)
        cfgs, taus = sampling.per_scale("cfg", n), sampling.per_scale("tau", n)
        use_cfg = any(v != 1 for v in cfgs)
        return any(use_cfg and cfgs[s] != 1 for s in tokens.scales), cfgs, taus

    def logits(self, hidden, ctx: TextContext, tokens: StepTokens, sampling: SamplingConfig, schedule):
        guided, _, _ = self._guided_pass(tokens, sampling, schedule)
        rows = ctx.batch_size if guided and ctx.has_uncond else ctx.images
        return self.transformer.logits(hidden[:rows], ctx.cond[:rows])

    @staticmethod
    def guide(logits: torch.Tensor, cfg: float, tau: float, batch: int, use_cfg: bool) -> torch.Tensor:
        """Temperature, then CFG on the logits: ``cfg·cond + (1 − cfg)·uncond`` (the release's order)."""
        if use_cfg and cfg != 1:
            logits = logits.mul(1 / tau)
            return cfg * logits[:batch] + (1 - cfg) * logits[batch:]
        return logits[:batch].mul(1 / tau)

    def sample(self, raw, tokens: StepTokens, sampling: SamplingConfig, schedule, generators, batch: int):
        guided, cfgs, taus = self._guided_pass(tokens, sampling, schedule)
        parts = [raw] if len(tokens.parts) == 1 else tokens.split(raw)
        logits = [
            self.guide(part, cfgs[p.scale_index], taus[p.scale_index], batch, guided)
            for part, p in zip(parts, tokens.parts, strict=True)
        ]
        logits = logits[0] if len(logits) == 1 else torch.cat(logits, dim=1)
        if generators is None:  # a meta-device dry run
            return torch.empty(
                *logits.shape[:2], logits.shape[-1] // 2, dtype=torch.long, device=logits.device
            )
        return sample_bits(logits, generators, sampling.top_k, sampling.top_p)

    def codes_of(self, bits: torch.Tensor, grid: Grid) -> torch.Tensor:
        """``(B, h·w, d_vae)`` bits of a full scale to ``(B, d, h', w')`` codes on the VAE latent grid."""
        b = bits.shape[0]
        h, w = grid
        bits = bits.reshape(b, h, w, -1)
        if self.config.apply_spatial_patchify:
            bits = F.pixel_shuffle(bits.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
        return self.vae.bits_to_codes(bits).permute(0, 3, 1, 2)

    def accumulate(self, latent, samples, tokens: StepTokens, schedule) -> torch.Tensor:
        if tokens.is_full_scale:
            part = tokens.parts[0]
            codes = self.codes_of(samples, part.grid)
            if part.scale_index == len(schedule.grids) - 1:
                return latent + codes  # the last scale is on the latent grid already: added as is
            return latent + upsample_codes(codes, tuple(latent.shape[-2:]))
        residuals, latent_dispatch = self.latent_residuals(samples, _as_dispatch(tokens, latent.shape[0]))
        return composite(latent, latent_dispatch, residuals, mode="trilinear")

    def latent_residuals(self, bits: torch.Tensor, dispatch: Dispatch) -> tuple[list[torch.Tensor], Dispatch]:
        """Codes of the packed tokens as per-scale residuals on the VAE latent grid, for the composite."""
        pieces = torch.split(bits, [s.count for s in dispatch.selections], dim=1)
        if not self.config.apply_spatial_patchify:
            return [self.vae.bits_to_codes(p) for p in pieces], dispatch
        # A token is a 2×2 patch of latents whose channels are ordered like pixel_unshuffle: ch·4 + 2·di + dj.
        residuals, selections = [], []
        for p, sel in zip(pieces, dispatch.selections, strict=True):
            d = self.vae.codebook_dim
            sub = p.reshape(*p.shape[:2], d, 4)
            h, w = sel.grid
            subs, idx = [], []
            for di in range(2):
                for dj in range(2):
                    subs.append(self.vae.bits_to_codes(sub[..., 2 * di + dj]))
                    idx.append((2 * sel.rows + di) * (2 * w) + 2 * sel.cols + dj)
            residuals.append(torch.cat(subs, dim=1))
            selections.append(
                ScaleSelection(sel.scale_index, (2 * h, 2 * w), sel.band, torch.cat(idx, dim=1))
            )
        return residuals, Dispatch(dispatch.plan, tuple(selections))

    # ------------------------------------------------------------------------------------------ decode

    def decode(self, latent: torch.Tensor, *, per_image: bool) -> torch.Tensor:
        # per_image: one image per call, since convolution rounding depends on the batch size
        if per_image:
            return torch.cat([self.vae.decode(latent[i : i + 1]).float() for i in range(latent.shape[0])])
        return self.vae.decode(latent).float()

    def to_uint8(self, decoded: torch.Tensor) -> torch.Tensor:
        return images_to_uint8(decoded)

    # ------------------------------------------------------------------------------------------ training forward

    @torch.no_grad()
    def teacher_forced_logits(
        self, prompts: Sequence[str] | TextBatch, inputs: torch.Tensor, resolution, aspect_ratio: float = 1.0
    ) -> torch.Tensor:
        """Logits of every token of every scale in one block-causal pass (the training forward); no CFG.

        ``inputs`` ``(B, L − 1, d_vae)``: the ``word_embed`` inputs of scales 1…S−1, concatenated.
        """
        sched = self.schedule(resolution, aspect_ratio)
        text = self.condition(prompts)
        with self.autocast():
            return self.transformer.teacher_forced_logits(
                text, inputs.to(self.device), sched.grids, self.rope_tables(sched)
            )

    # ------------------------------------------------------------------------------------------ accounting

    def accounting_key(self):
        return ("infinity", repr(self.config))  # the config fixes every shape; the weights count no FLOPs

    def dry_run_family(self) -> InfinityFamily:
        return meta_family(self.config)

    def dry_run_condition(self, batch: int, tokens: int | None) -> TextBatch:
        if tokens is None:  # 32 tokens, a typical prompt (or the encoder's limit, if it is shorter)
            tokens = min(32, self.config.text_maxlen)
        feats = [torch.empty(tokens, self.config.text_channels, device="meta") for _ in range(batch)]
        lens = [tokens] * batch
        cu = F.pad(torch.tensor(lens, dtype=torch.int32).cumsum(0, dtype=torch.int32), (1, 0))
        return TextBatch(torch.cat(feats), lens, cu)


def meta_family(config: InfinityConfig) -> InfinityFamily:
    """An Infinity family on the meta device: the real modules, no memory (for exact FLOP and KV accounting)."""
    with torch.device("meta"):
        tf = InfinityTransformer(config).cast_blocks().eval()
        vae = BSQVAE(config.vae).eval()
    return InfinityFamily(tf, vae)


def _as_dispatch(tokens: StepTokens, batch: int) -> Dispatch:
    """The packed tokens as a moss-dispatch selection (what :func:`~moss_dispatch.composite` takes)."""
    if isinstance(tokens.selection, Dispatch):
        return tokens.selection
    selections = []
    for p in tokens.parts:
        flat = p.flat_index
        if flat is None:  # a whole scale inside a packed pass
            flat = torch.arange(p.count, device=tokens_device(tokens)).expand(batch, -1)
        selections.append(ScaleSelection(p.scale_index, p.grid, (0.0, 100.0), flat))
    return Dispatch(None, tuple(selections))  # type: ignore[arg-type]


def tokens_device(tokens: StepTokens) -> torch.device:
    return next((p.flat_index.device for p in tokens.parts if p.flat_index is not None), torch.device("cpu"))
