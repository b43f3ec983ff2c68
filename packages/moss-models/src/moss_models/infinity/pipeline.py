"""Infinity generation: the official baseline loop and the MoSs policy over the same steps.

The loop owns the order (drafter scales, then either the remaining scales or one MoSs stage); the transformer and
the VAE own the math. With ``moss=None`` the loop is the official ``autoregressive_infer_cfg``: CFG by batch
doubling applied on logits after temperature, top-k/top-p bitwise sampling, codes ``±1/√d`` upsampled trilinearly
and summed, the next input resized trilinearly from the running sum and embedded by ``word_embed``, the KV cache
extended every scale. With a :class:`MossConfig`, the last ``k`` scales are replaced by one forward pass over the
tokens a moss-dispatch :class:`~moss_dispatch.ScalePlan` selects; it reads the drafter's cache and adds nothing to
it, and its residuals are composited onto the draft.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from moss_attention import InfinityRope2D, RopeTables, precompute_rope_tables
from moss_dispatch import (
    Dispatch,
    ScalePlan,
    ScaleSelection,
    baseline_account,
    composite,
    get_scorer,
    preset_thresholds,
)
from moss_models.core.kv_cache import KVCache
from moss_models.core.sampling import SEEDING_MODES, make_generators, sample_bits
from moss_models.core.timing import StageClock
from moss_models.infinity.config import InfinityConfig
from moss_models.infinity.schedules import RESOLUTION_TO_BUDGET, InfinitySchedule, get_schedule
from moss_models.infinity.text import T5TextEncoder, TextBatch
from moss_models.infinity.transformer import InfinityTransformer, PassSpec, TextContext
from moss_models.infinity.vae import BSQVAE, images_to_uint8, upsample_codes

ROPE_IMPLS = ("torch", "triton")
BUDGET_TO_RESOLUTION = {budget: res for res, budget in RESOLUTION_TO_BUDGET.items()}


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling settings; ``cfg`` and ``tau`` are a number or one value per scale (release defaults)."""

    cfg: float | tuple[float, ...] = 3.0
    tau: float | tuple[float, ...] = 0.5
    top_k: int = 900
    top_p: float = 0.97
    seeding: str = "per_image"

    def __post_init__(self) -> None:
        if self.seeding not in SEEDING_MODES:
            raise ValueError(f"seeding must be one of {SEEDING_MODES}, got {self.seeding!r}")
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 0:
            raise ValueError(f"top_k must be an int >= 0 (0 = off), got {self.top_k!r}")
        if not isinstance(self.top_p, int | float) or not 0 <= self.top_p <= 1:
            raise ValueError(f"top_p must be in [0, 1] (0 = off), got {self.top_p!r}")

    def per_scale(self, name: str, num_scales: int) -> list[float]:
        value = getattr(self, name)
        values = [value] * num_scales if isinstance(value, int | float) else list(value)
        if len(values) != num_scales:
            raise ValueError(f"{name} has {len(values)} values but the schedule has {num_scales} scales")
        if name == "tau" and not all(v > 0 for v in values):
            raise ValueError(f"tau must be > 0 at every scale, got {values}")
        return [float(v) for v in values]


@dataclass(frozen=True)
class MossConfig:
    """The MoSs policy: thresholds (``k = len``), the scorer, and how the packed stage attends."""

    thresholds: tuple[float, ...]
    scorer: str = "variance"
    scorer_params: Mapping[str, object] = field(default_factory=dict)
    mode: str = "cssa"
    backend: str = "sdpa"
    sa_impl: str | None = None

    @classmethod
    def preset(cls, name: str, family: str = "infinity", **kwargs) -> MossConfig:
        """The paper's thresholds, e.g. ``MossConfig.preset("k5")``."""
        return cls(thresholds=preset_thresholds(family, name), **kwargs)

    @property
    def k(self) -> int:
        return len(self.thresholds)


def plan_and_cached_tokens(grids, moss: MossConfig | None) -> tuple[ScalePlan | None, int]:
    """The MoSs plan (None for the baseline) and the tokens the KV cache must hold: every pass but the last
    one appends (the baseline's last scale; the MoSs stage, which reads the drafter's cache and adds nothing)."""
    if moss is None:
        return None, baseline_account(grids).kv_tokens
    if not 1 <= moss.k < len(grids):
        raise ValueError(f"moss.thresholds gives k={moss.k} refine scales; need 1 <= k < {len(grids)}")
    plan = ScalePlan(grids, len(grids) - moss.k, moss.thresholds)
    return plan, plan.kv_tokens


@dataclass
class GenerationStats:
    tokens_per_pass: list[int]  # per image and CFG branch
    kv_cache_bytes: int  # allocated by the cache tensors (all layers, keys and values, CFG rows included)
    stage_seconds: dict[str, float]

    @property
    def forward_passes(self) -> int:
        return len(self.tokens_per_pass)

    @property
    def tokens_processed(self) -> int:
        return sum(self.tokens_per_pass)


@dataclass
class GenerationResult:
    images: torch.Tensor | None  # (B, H, W, 3) uint8 RGB
    decoded: torch.Tensor | None  # (B, 3, H, W) float in [-1, 1]
    summed_codes: torch.Tensor  # (B, d, H_lat, W_lat) float32, the VAE input
    bits: list[torch.Tensor]  # per forward pass: (B, tokens, d_vae) int64
    logits: list[torch.Tensor] | None  # per forward pass, raw head outputs of every CFG row (if kept)
    dispatch: Dispatch | None
    stats: GenerationStats


class InfinityGenerator:
    """Generates images with an Infinity transformer and VAE, baseline or MoSs."""

    def __init__(
        self,
        transformer: InfinityTransformer,
        vae: BSQVAE,
        text_encoder: T5TextEncoder | None = None,
        *,
        rope_impl: str = "torch",
    ):
        if rope_impl not in ROPE_IMPLS:
            raise ValueError(f"rope_impl must be one of {ROPE_IMPLS}, got {rope_impl!r}")
        self.transformer = transformer.eval()
        self.vae = vae.eval()
        self.text_encoder = text_encoder
        self.config = transformer.config
        self.rope_impl = rope_impl
        self._rope_cache: dict[tuple, RopeTables] = {}

    @property
    def device(self) -> torch.device:
        return self.transformer.pos_start.device

    # ------------------------------------------------------------------------------------------ helpers

    def schedule(self, resolution: int | str, aspect_ratio: float) -> InfinitySchedule:
        sched = get_schedule(resolution, aspect_ratio)
        if BUDGET_TO_RESOLUTION[sched.budget] > self.config.max_resolution:
            raise ValueError(
                f"resolution {resolution!r} is above what {self.config.name} supports; use at most "
                f"{self.config.max_resolution} (pixel budget of a {self.config.max_resolution}² image)"
            )
        return sched

    def rope_tables(self, sched: InfinitySchedule) -> RopeTables:
        key = (sched.grids, sched.rope_grid, str(self.device))
        if key not in self._rope_cache:
            scheme = InfinityRope2D(
                self.config.head_dim, ref_grid=sched.rope_grid, base=self.config.rope_base
            )
            self._rope_cache[key] = precompute_rope_tables(scheme, sched.grids, device=self.device)
        return self._rope_cache[key]

    def latent_grid(self, grid: tuple[int, int]) -> tuple[int, int]:
        f = 2 if self.config.apply_spatial_patchify else 1
        return grid[0] * f, grid[1] * f

    def _autocast(self):
        enabled = self.config.block_dtype in (torch.bfloat16, torch.float16)
        return torch.autocast(self.device.type, dtype=self.config.block_dtype, enabled=enabled)

    def tokens_of(self, summed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Transformer input features of a scale: the running code sum resized to it, ``(B, h·w, d_vae)``."""
        x = upsample_codes(summed, self.latent_grid(grid))  # trilinear both ways, as the release
        if self.config.apply_spatial_patchify:
            x = F.pixel_unshuffle(x, 2)
        return x.reshape(*x.shape[:2], -1).permute(0, 2, 1)

    def codes_of(self, bits: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``(B, h·w, d_vae)`` bits of a full scale to ``(B, d, h', w')`` codes on the VAE latent grid."""
        b = bits.shape[0]
        h, w = grid
        bits = bits.reshape(b, h, w, -1)
        if self.config.apply_spatial_patchify:
            bits = F.pixel_shuffle(bits.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
        return self.vae.bits_to_codes(bits).permute(0, 3, 1, 2)

    def kv_cache(self, batch_rows: int, capacity: int, device: torch.device | str | None = None) -> KVCache:
        c = self.config
        return KVCache(
            c.depth, batch_rows, c.num_heads, c.head_dim, capacity, c.block_dtype, device or self.device
        )

    @staticmethod
    def _guided(logits: torch.Tensor, cfg: float, tau: float, batch: int, use_cfg: bool) -> torch.Tensor:
        if use_cfg and cfg != 1:
            logits = logits.mul(1 / tau)
            return cfg * logits[:batch] + (1 - cfg) * logits[batch:]
        return logits[:batch].mul(1 / tau)

    def _scale_positions(self, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE index of a whole scale: ``(h·w,)`` rows and columns in row-major order."""
        h, w = grid
        r = torch.arange(h, device=self.device).repeat_interleave(w)
        c = torch.arange(w, device=self.device).repeat(h)
        return r, c

    # ------------------------------------------------------------------------------------------ generate

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str] | TextBatch,
        seeds: Sequence[int],
        *,
        resolution: int | str = 1024,
        aspect_ratio: float = 1.0,
        sampling: SamplingConfig | None = None,
        moss: MossConfig | None = None,
        decode: bool = True,
        keep_logits: bool = False,
        clock: StageClock | None = None,
    ) -> GenerationResult:
        """Generate one image per prompt (or per row of a :class:`TextBatch` of T5 features)."""
        sampling = sampling or SamplingConfig()
        clock = clock or StageClock(self.device)
        tf = self.transformer
        text = self.text_batch(prompts, per_prompt=sampling.seeding == "per_image")
        batch = text.batch_size
        if len(seeds) != batch:
            raise ValueError(f"seeds has {len(seeds)} entries for {batch} prompts; give one seed per image")
        sched = self.schedule(resolution, aspect_ratio)
        grids, n_scales = sched.grids, len(sched.grids)
        cfgs, taus = sampling.per_scale("cfg", n_scales), sampling.per_scale("tau", n_scales)
        use_cfg = any(v != 1 for v in cfgs)
        plan, cached = plan_and_cached_tokens(grids, moss)
        if moss is not None:
            scorer = get_scorer(moss.scorer, **dict(moss.scorer_params))
        num_draft = plan.num_draft_scales if plan else n_scales
        rows = 2 * batch if use_cfg else batch
        cache = self.kv_cache(rows, cached)
        tables = self.rope_tables(sched)
        gens = make_generators(list(seeds), sampling.seeding, self.device)
        latent = self.latent_grid(grids[-1])
        # channels_last like the release's running sum (it inherits the layout of the transposed codes); the CPU
        # decoder's convolutions round differently for the two layouts.
        summed = torch.zeros(batch, self.vae.codebook_dim, *latent, device=self.device).to(
            memory_format=torch.channels_last
        )
        all_bits, all_logits, tokens_per_pass = [], [], []

        with self._autocast():
            with clock.stage("text"):
                ctx = self._text_context(text, use_cfg, per_image=sampling.seeding == "per_image")
                x = tf.start_tokens(ctx)
            with clock.stage("draft"):
                for si in range(num_draft):
                    r, c = self._scale_positions(grids[si])
                    ids = torch.full_like(r, si)
                    spec = PassSpec(
                        ids, r, c, tables, cache, append=(plan is not None or si < n_scales - 1),
                        rope_impl=self.rope_impl,
                    )  # fmt: skip
                    h = tf.run_blocks(tf.add_level(x, ids), ctx, spec)
                    guided_rows = rows if use_cfg and cfgs[si] != 1 else batch
                    raw = tf.logits(h[:guided_rows], ctx.cond[:guided_rows])
                    if keep_logits:
                        all_logits.append(raw)
                    bits = sample_bits(
                        self._guided(raw, cfgs[si], taus[si], batch, use_cfg),
                        gens,
                        sampling.top_k,
                        sampling.top_p,
                    )
                    all_bits.append(bits)
                    tokens_per_pass.append(ids.numel())
                    codes = self.codes_of(bits, grids[si])
                    if si == n_scales - 1:
                        summed = summed + codes
                        break
                    summed = summed + upsample_codes(codes, latent)
                    if si + 1 < num_draft or plan is None:
                        x = tf.word_embed(self.tokens_of(summed, grids[si + 1]))
                        x = x.repeat(rows // batch, 1, 1)
            dispatch = None
            if plan is not None:
                with clock.stage("dispatch"):
                    dispatch = plan.dispatch(scorer(summed))
                with clock.stage("moss"):
                    summed, bits, raw = self._moss_stage(
                        summed, dispatch, sched, ctx, cache, tables, gens, sampling, cfgs, taus, use_cfg, moss
                    )
                all_bits.append(bits)
                if keep_logits:
                    all_logits.append(raw)
                tokens_per_pass.append(dispatch.num_tokens)
        images = decoded = None
        if decode:
            with clock.stage("decode"), self._autocast():
                # per_image: one image per call, since convolution rounding depends on the batch size
                if sampling.seeding == "per_image":
                    decoded = torch.cat([self.vae.decode(summed[i : i + 1]).float() for i in range(batch)])
                else:
                    decoded = self.vae.decode(summed).float()
            images = images_to_uint8(decoded)
        stats = GenerationStats(tokens_per_pass, cache.nbytes, dict(clock.seconds))
        return GenerationResult(
            images, decoded, summed, all_bits, all_logits if keep_logits else None, dispatch, stats
        )

    @torch.no_grad()
    def teacher_forced_logits(
        self,
        prompts: Sequence[str] | TextBatch,
        inputs: torch.Tensor,
        resolution: int | str,
        aspect_ratio: float = 1.0,
    ) -> torch.Tensor:
        """Logits of every token of every scale in one pass with a block-causal mask (the training forward).

        ``inputs`` ``(B, L − 1, d_vae)``: the ``word_embed`` inputs of scales 1…S−1, concatenated. No CFG.
        """
        tf = self.transformer
        text = self.text_batch(prompts)
        sched = self.schedule(resolution, aspect_ratio)
        positions = [self._scale_positions(g) for g in sched.grids]
        ids = torch.cat([torch.full_like(r, si) for si, (r, _) in enumerate(positions)])
        spec = PassSpec(
            ids,
            torch.cat([r for r, _ in positions]),
            torch.cat([c for _, c in positions]),
            self.rope_tables(sched),
            causal_scale_mask=ids[:, None] >= ids[None, :],
            rope_impl=self.rope_impl,
        )
        with self._autocast():
            ctx = tf.encode_text(text.kv_compact, text.cu_seqlens)
            x = torch.cat([tf.start_tokens(ctx), tf.word_embed(inputs.to(self.device))], dim=1)
            return tf.logits(tf.run_blocks(tf.add_level(x, ids), ctx, spec), ctx.cond)

    def _text_context(self, text: TextBatch, use_cfg: bool, per_image: bool) -> TextContext:
        """Conditioning rows ``[cond_0 … cond_B-1, uncond_0 … uncond_B-1]`` (uncond rows only with CFG).

        ``per_image`` encodes each image's rows on their own and merges them, so an image's conditioning (and
        so its pixels) does not depend on which other prompts share its batch: matmul rounding can depend on
        the number of rows.
        """
        tf = self.transformer
        if not per_image or text.batch_size == 1:
            full = text.with_unconditional(tf.cfg_uncond) if use_cfg else text
            return tf.encode_text(full.kv_compact, full.cu_seqlens)
        parts = []
        for i in range(text.batch_size):
            one = TextBatch.from_features([text.select(i)])
            one = one.with_unconditional(tf.cfg_uncond) if use_cfg else one
            parts.append(tf.encode_text(one.kv_compact, one.cu_seqlens))
        order = [(p, r) for r in range(2 if use_cfg else 1) for p in parts]  # all cond rows, then all uncond
        tokens = [p.ca_kv[int(p.cu_seqlens[r]) : int(p.cu_seqlens[r + 1])] for p, r in order]
        lens = torch.tensor([t.shape[0] for t in tokens], dtype=torch.int32)
        return TextContext(
            cond=torch.cat([p.cond[r : r + 1] for p, r in order]),
            gss=torch.cat([p.gss[r : r + 1] for p, r in order]),
            ca_kv=torch.cat(tokens),
            cu_seqlens=F.pad(lens.cumsum(0, dtype=torch.int32), (1, 0)).to(self.device),
        )

    def text_batch(self, prompts: Sequence[str] | TextBatch, *, per_prompt: bool = False) -> TextBatch:
        """Text features of the prompts, checked against the model; ``per_prompt`` encodes one prompt per call,
        so a prompt's features do not depend on the rest of the batch (``per_image`` seeding)."""
        if isinstance(prompts, TextBatch):
            text = prompts
        else:
            if self.text_encoder is None:
                raise ValueError(
                    "this generator has no text encoder; pass a TextBatch of T5 features instead"
                )
            if per_prompt and len(prompts) > 1:
                parts = [self.text_encoder.encode([p]) for p in prompts]
                text = TextBatch.from_features([part.kv_compact for part in parts])
            else:
                text = self.text_encoder.encode(list(prompts))
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

    def _moss_stage(
        self, draft, dispatch, sched, ctx, cache, tables, gens, sampling, cfgs, taus, use_cfg, moss
    ):
        tf = self.transformer
        batch = draft.shape[0]
        rows = ctx.batch_size
        # Inputs: the draft resized to each refine scale (as the baseline builds its next-scale input), gathered at
        # the selected positions, packed coarsest scale first.
        pieces = []
        for sel in dispatch.selections:
            feats = self.tokens_of(draft, sel.grid)
            pieces.append(feats.gather(1, sel.flat_index.unsqueeze(-1).expand(-1, -1, feats.shape[-1])))
        x = tf.word_embed(torch.cat(pieces, dim=1)).repeat(rows // batch, 1, 1)
        ids = dispatch.packed_scale_ids()
        pos_r = dispatch.packed_rows().repeat(rows // batch, 1)
        pos_c = dispatch.packed_cols().repeat(rows // batch, 1)
        spec = PassSpec(
            ids, pos_r, pos_c, tables, cache, append=False,
            mode=moss.mode, backend=moss.backend, sa_impl=moss.sa_impl, rope_impl=self.rope_impl,
        )  # fmt: skip
        h = tf.run_blocks(tf.add_level(x, ids), ctx, spec)
        counts = [s.count for s in dispatch.selections]
        all_cfg = any(use_cfg and cfgs[s.scale_index] != 1 for s in dispatch.selections)
        guided_rows = rows if all_cfg else batch
        raw = tf.logits(h[:guided_rows], ctx.cond[:guided_rows])
        # Guidance per scale, with the same scalar ops as the baseline's pass of that scale.
        guided = [
            self._guided(part, cfgs[s.scale_index], taus[s.scale_index], batch, all_cfg)
            for part, s in zip(torch.split(raw, counts, dim=1), dispatch.selections, strict=True)
        ]
        bits = sample_bits(torch.cat(guided, dim=1), gens, sampling.top_k, sampling.top_p)
        residuals, latent_dispatch = self._latent_residuals(bits, dispatch)
        return composite(draft, latent_dispatch, residuals, mode="trilinear"), bits, raw

    def _latent_residuals(
        self, bits: torch.Tensor, dispatch: Dispatch
    ) -> tuple[list[torch.Tensor], Dispatch]:
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


def estimate_kv_cache(
    generator_or_config, resolution: int | str = 1024, *, moss: MossConfig | None = None, batch_size: int = 1,
    cfg: bool = True, aspect_ratio: float = 1.0,
) -> KVCache:  # fmt: skip
    """The KV cache a generation would allocate, built on the meta device (nothing is allocated)."""
    config = getattr(generator_or_config, "config", generator_or_config)
    sched = get_schedule(resolution, aspect_ratio)
    _, cached = plan_and_cached_tokens(sched.grids, moss)
    rows = batch_size * (2 if cfg else 1)
    return KVCache(config.depth, rows, config.num_heads, config.head_dim, cached, config.block_dtype, "meta")


def count_backbone_flops(
    config: InfinityConfig,
    resolution: int | str = 1024,
    *,
    moss: MossConfig | None = None,
    batch_size: int = 1,
    cfg: bool = True,
    text_tokens: int = 32,
    aspect_ratio: float = 1.0,
) -> list[int]:
    """FLOPs of every forward pass of one generation, counted on the meta device (nothing is allocated).

    Runs the same transformer passes as :meth:`InfinityGenerator.generate` (text conditioning, every drafter or
    baseline scale with its KV cache, the packed MoSs stage, the head) on meta tensors under
    ``torch.utils.flop_counter.FlopCounterMode``. The MoSs stage's token counts do not depend on the image, so
    the count is exact for any prompt of ``text_tokens`` tokens. Returns FLOPs per pass; the text encoding's
    share is added to the first pass. The VAE decode is not included (the paper's backbone).
    """
    from torch.utils.flop_counter import FlopCounterMode

    sched = get_schedule(resolution, aspect_ratio)
    grids, n_scales = sched.grids, len(sched.grids)
    rows = batch_size * (2 if cfg else 1)
    with torch.device("meta"):
        tf = InfinityTransformer(config).cast_blocks().eval()
    scheme = InfinityRope2D(config.head_dim, ref_grid=sched.rope_grid, base=config.rope_base)
    tables = precompute_rope_tables(scheme, grids, device="meta")
    plan, cached = plan_and_cached_tokens(grids, moss)
    num_draft = plan.num_draft_scales if plan else n_scales
    cache = KVCache(config.depth, rows, config.num_heads, config.head_dim, cached, config.block_dtype, "meta")
    autocast = torch.autocast("cpu", dtype=config.block_dtype, enabled=config.block_dtype != torch.float32)
    per_pass = []
    with torch.no_grad(), autocast:
        counter = FlopCounterMode(display=False)
        with counter:
            kv = torch.empty(rows * text_tokens, config.text_channels, device="meta")
            cu = torch.arange(
                0, rows * text_tokens + 1, text_tokens, dtype=torch.int32
            )  # CPU: read by the loop
            ctx = tf.encode_text(kv, cu)
        text_flops = counter.get_total_flops()
        passes = [(si, grids[si]) for si in range(num_draft)]
        for i, (si, (h, w)) in enumerate(passes):
            counter = FlopCounterMode(display=False)
            with counter:
                ids = torch.full((h * w,), si, dtype=torch.long, device="meta")
                pos = torch.zeros(h * w, dtype=torch.long, device="meta")
                spec = PassSpec(ids, pos, pos, tables, cache, append=plan is not None or si < n_scales - 1)
                if si == 0:
                    x = torch.empty(rows, 1, config.embed_dim, device="meta")  # the start token: no embedding
                else:  # the next-scale input is embedded once per image, then repeated for the CFG rows
                    x = tf.word_embed(torch.empty(batch_size, h * w, config.d_vae, device="meta"))
                    x = x.repeat(rows // batch_size, 1, 1)
                hid = tf.run_blocks(tf.add_level(x, ids), ctx, spec)
                tf.logits(hid, ctx.cond)  # the head runs on every CFG row (guidance mixes logits)
            per_pass.append(counter.get_total_flops() + (text_flops if i == 0 else 0))
        if plan is not None:
            n = plan.moss_tokens
            counter = FlopCounterMode(display=False)
            with counter:
                ids = torch.zeros(n, dtype=torch.long, device="meta")
                pos = torch.zeros(rows, n, dtype=torch.long, device="meta")
                spec = PassSpec(ids, pos, pos, tables, cache, append=False, mode=moss.mode, backend="sdpa")
                x = tf.word_embed(torch.empty(batch_size, n, config.d_vae, device="meta")).repeat(
                    rows // batch_size, 1, 1
                )
                hid = tf.run_blocks(tf.add_level(x, ids), ctx, spec)
                tf.logits(hid, ctx.cond)
            per_pass.append(counter.get_total_flops())
    return per_pass
