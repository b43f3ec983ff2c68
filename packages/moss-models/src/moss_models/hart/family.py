"""HART as a :class:`~moss_models.core.ScaleFamily`: the math of the official ``autoregressive_infer_cfg``, no loop.

What each protocol method computes is the official loop's (mit-han-lab/hart@e28a41f,
``hart/modules/models/transformer/hart_transformer_t2i.py``):

* conditioning: the prompts' Qwen2 features padded to ``context_token`` tokens (:mod:`moss_models.hart.text`);
  with guidance the unconditional rows are all-zero features with position ids 0. The first pass carries the
  ``context_token`` text tokens in place of the 1×1 scale (their keys and values stay in the cache as a prefix),
  and only its last position's logits are sampled (the 1×1 scale's one token);
* guidance: ``t = cfg · ratio`` and ``(1 + t)·l_c − t·l_u`` in that form, with ``ratio = si/(S − 1)`` — except at
  the last scale, where the official loop still holds the previous scale's ``ratio = (S − 2)/(S − 1)`` (the
  ``t``, the Gumbel temperature and the ``1 + ratio`` logit gain of the last scale all use it);
* sampling: top-k ``600`` for ``si < 7`` and ``300`` after (the official loop ignores its ``top_k`` argument; set
  ``official_top_k=False`` to use :class:`SamplingConfig`'s ``top_k`` instead), then ``SamplingConfig.top_p``
  (official default 0), ONE ``torch.multinomial`` per pass with the batch's generator (``seeding="official"``) or
  one per image (``per_image``); ``more_smooth``: after the multinomial, a Gumbel draw of the same shape and
  ``softmax(((1 + ratio)·masked + g)/τ)`` soft one-hots times the codebook, as VAR's;
* the running sum grows by ``φ_si(bicubic_up(codes))`` at every scale but the last, which adds its codes as they
  are (no φ, no upsampling); the last scale's codes are refined by the residual diffusion head
  (:meth:`HARTFamily.finish`): ``z = decoder_norm(h_last + word_embed(codebook[idx]))`` (the *hard* indices, also
  with ``more_smooth``), 8 IDDPM steps guided with the last scale's ``t``, and the sample is added to the codes.
  Its noise comes from the generation's generators (the official code draws it from the global RNG).

Samples are :class:`HARTSamples` (the hard indices and the codes each token adds), not a bare tensor.

**MoSs and the diffusion head.** A packed MoSs stage on HART's 1024² schedule holds scales 48 and 64; the paper
does not say how the residual diffusion head, which the release runs on the last scale's hidden states only,
treats the tokens refined at 48. What it implies: the head models the continuous residual left after the *last*
scale's discrete codes, conditioned on that scale's hidden state, and the paper attributes HART's larger quality
drop under MoSs to "diffusion rel[ying] on progressively condi[tioned]" inputs — i.e. the regions refined at a
coarser scale do not get the head's full treatment. What moss does by default (``refine_diffusion="last_scale"``):
the head runs on exactly the tokens the packed pass carries at the last scale, as the release runs it on the
whole last scale; tokens refined at 48 add their codes through φ and the bicubic upsampling like any 48 token and
get no diffusion residual (that region keeps the draft's detail below the 48 grid). The alternative
(``refine_diffusion="every_refine_scale"``) runs the head on the 48-scale tokens too, with their own hidden states
and guidance weight, and adds the sampled residual to their codes *before* φ and the upsampling: out of the
distribution the head was trained on (it only saw last-scale states), but it gives those regions a continuous
refinement as well. With every position at the last scale (k=1, band [100]) both are the baseline bit for bit.

Guidance semantics are VAR's: ``SamplingConfig.cfg`` as a number is the ramp's maximum (official default 4.5),
``cfg = 0`` is no guidance (the unconditional rows are dropped), a per-scale tuple gives each scale's ``t``.
``SamplingConfig.tau`` is not used (the official loop has no temperature).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from moss_models.core.family import (
    HALF_DTYPES,
    ConfiguredPrecision,
    ScaleFamily,
    SquareSchedule,
    square_schedule,
)
from moss_models.core.kv_cache import KVCache
from moss_models.core.pass_spec import PassSpec
from moss_models.core.sampling import SamplingConfig, filter_top_k_top_p_
from moss_models.core.steps import StepTokens
from moss_models.hart.config import REFINE_DIFFUSION, HARTConfig
from moss_models.hart.text import HARTTextBatch
from moss_models.hart.transformer import HARTContext, HARTTransformer

#: the official top-k schedule: 600 before scale 7, 300 from it on
OFFICIAL_TOP_K = ((7, 600), (None, 300))


HARTSchedule = SquareSchedule  # the model's one schedule (core.family.square_schedule)


@dataclass
class HARTSamples:
    """What one HART pass draws per token: the hard codebook indices, and the codes the tokens add to the running
    sum (embedded indices, or with ``more_smooth`` the Gumbel-smoothed codes; at the last scale plus the diffusion
    head's residual once :meth:`HARTFamily.finish` ran)."""

    indices: torch.Tensor  # (B, N) int64
    codes: torch.Tensor  # (B, N, Cvae)

    @property
    def shape(self) -> torch.Size:
        return self.indices.shape

    def split(self, tokens: StepTokens) -> list[HARTSamples]:
        if len(tokens.parts) == 1:
            return [self]
        return [
            HARTSamples(i, c)
            for i, c in zip(tokens.split(self.indices), tokens.split(self.codes), strict=True)
        ]


def hart_schedule(config: HARTConfig, resolution: Any = None, aspect_ratio: float = 1.0) -> HARTSchedule:
    """The model's one schedule: its ``patch_nums`` as square grids, at its resolution (None: that one)."""
    return square_schedule(config.name, config.patch_nums, config.resolution, resolution, aspect_ratio)


def guidance_ratio(si: int, num_scales: int) -> float:
    """The official loop's ``ratio`` at scale ``si``: ``si/(S − 1)``, held at ``(S − 2)/(S − 1)`` for the last
    scale (its loop variable from the previous scale)."""
    return min(si, num_scales - 2) / (num_scales - 1)


def guidance_weights(sampling: SamplingConfig, num_scales: int) -> tuple[list[float], bool]:
    """Per scale, HART's guidance weight ``t`` (``cfg · ratio``), and whether ``cfg`` was the ramp (a number)."""
    if isinstance(sampling.cfg, int | float):
        cfg = float(sampling.cfg)
        return [cfg * guidance_ratio(si, num_scales) for si in range(num_scales)], True
    return sampling.per_scale("cfg", num_scales), False


class HARTFamily(ConfiguredPrecision, ScaleFamily):
    """A HART transformer, its hybrid tokenizer and (for prompts) its text encoder.

    ``more_smooth``: the official Gumbel smoothing of the codes (``sample.py``'s default; off for FID);
    ``official_top_k``: top-k 600/300 by scale as the official loop (True), or ``SamplingConfig.top_k`` (False);
    ``refine_diffusion``: how the diffusion head treats a packed MoSs stage (:data:`REFINE_DIFFUSION`, see the
    module doc); ``precision_device``: whose precision the passes follow (default the model's; meta follows CUDA).
    """

    name = "hart"

    def __init__(
        self,
        transformer: HARTTransformer,
        tokenizer: Any,
        text_encoder: Any = None,
        *,
        more_smooth: bool = False,
        official_top_k: bool = True,
        refine_diffusion: str = "last_scale",
        precision_device: str | None = None,
    ):
        if refine_diffusion not in REFINE_DIFFUSION:
            raise ValueError(f"refine_diffusion={refine_diffusion!r}; choose one of {list(REFINE_DIFFUSION)}")
        self.transformer = transformer.eval()
        self.tokenizer = tokenizer.eval().requires_grad_(False)
        self.text_encoder = text_encoder
        self.config: HARTConfig = transformer.config
        codebook = self.codebook
        if tuple(codebook.shape) != (self.config.vocab_size, self.config.d_vae):
            raise ValueError(
                f"the tokenizer's codebook is {tuple(codebook.shape)}, the transformer needs "
                f"({self.config.vocab_size}, {self.config.d_vae})"
            )
        self.more_smooth = bool(more_smooth)
        self.official_top_k = bool(official_top_k)
        self.refine_diffusion = refine_diffusion
        self.precision_device = precision_device or (
            "cuda" if self.device.type == "meta" else self.device.type
        )

    # ------------------------------------------------------------------------------------------ where and what

    @property
    def codebook(self) -> torch.Tensor:
        return self.tokenizer.codebook

    @property
    def device(self) -> torch.device:
        return self.transformer.word_embed.weight.device

    def schedule(self, resolution: Any = None, aspect_ratio: float = 1.0) -> HARTSchedule:
        return hart_schedule(self.config, resolution, aspect_ratio)

    def positions(self, schedule: HARTSchedule) -> None:
        return (
            None  # RoPE angles come from each pass's positions and the context's offsets (transformer._rope)
        )

    def top_k(self, si: int, sampling: SamplingConfig) -> int:
        """The top-k of scale ``si`` (0 = off)."""
        if not self.official_top_k:
            return sampling.top_k
        return 600 if si < 7 else 300

    # ------------------------------------------------------------------------------------------ conditioning

    def condition(self, conditions: Any, *, per_image: bool = False) -> HARTTextBatch:
        """Prompts (a string or a list of them) or a precomputed :class:`HARTTextBatch`, checked."""
        cfg = self.config
        if isinstance(conditions, HARTTextBatch):
            batch = conditions
        else:
            if isinstance(conditions, str):
                conditions = [conditions]
            if (
                not isinstance(conditions, Sequence)
                or not conditions
                or not all(isinstance(p, str) for p in conditions)
            ):
                raise ValueError(
                    f"HART is conditioned on prompts: a string or a non-empty list of strings (or a HARTTextBatch), "
                    f"got {conditions!r:.120}"
                )
            if self.text_encoder is None:
                raise ValueError(
                    f"{cfg.name} was built without a text encoder; pass a HARTTextBatch of precomputed features or "
                    "build the model with its Qwen2 folder"
                )
            batch = self.text_encoder.encode(list(conditions), per_image=per_image)
        want = (cfg.context_token, cfg.context_dim)
        if batch.features.ndim != 3 or tuple(batch.features.shape[1:]) != want:
            raise ValueError(
                f"text features must be (B, {want[0]}, {want[1]}), got {tuple(batch.features.shape)}"
            )
        if tuple(batch.position_ids.shape) != tuple(batch.features.shape[:2]):
            raise ValueError(
                f"position_ids must be {tuple(batch.features.shape[:2])}, got {tuple(batch.position_ids.shape)}"
            )
        return batch.to(self.device)

    def uses_guidance(self, sampling: SamplingConfig, schedule: HARTSchedule) -> bool:
        weights, ramp = guidance_weights(sampling, len(schedule.grids))
        return float(sampling.cfg) != 0 if ramp else any(t != 0 for t in weights)

    def encode_condition(self, cond: HARTTextBatch, *, guidance: bool, per_image: bool) -> HARTContext:
        """Rows ``[prompts…, unconditional…]`` and what every pass reads of them (:meth:`HARTTransformer.prepare`).

        ``per_image`` prepares each image's rows on their own and merges them (a GEMM may round differently with
        the number of rows)."""
        tf = self.transformer
        if not per_image or cond.batch_size == 1:
            return tf.prepare(cond.features, cond.position_ids, guidance=guidance)
        parts = [
            tf.prepare(cond.features[i : i + 1], cond.position_ids[i : i + 1], guidance=guidance)
            for i in range(cond.batch_size)
        ]
        order = [(p, r) for r in range(2 if guidance else 1) for p in parts]  # all cond rows, then all uncond

        def rows(name: str) -> torch.Tensor:
            return torch.cat([getattr(p, name)[r : r + 1] for p, r in order])

        first = parts[0]
        return HARTContext(
            cond=rows("cond"), position_ids=rows("position_ids"), offset=rows("offset"),
            head_scale1=rows("head_scale1"), head_shift=rows("head_shift"), qkv_bias=first.qkv_bias,
            multipliers=first.multipliers, has_uncond=guidance,
        )  # fmt: skip

    def context_rows(self, ctx: HARTContext, rows: str, batch: int) -> HARTContext:
        del batch
        return ctx.rows(rows)

    # ------------------------------------------------------------------------------------------ cache, latent

    def kv_cache(self, rows: int, capacity: int | Sequence[int]) -> KVCache:
        """The plan's capacity counts one token for the first scale; its pass caches the ``context_token`` text
        tokens instead."""
        c = self.config
        extra = c.context_token - 1
        caps = capacity + extra if isinstance(capacity, int) else tuple(int(n) + extra for n in capacity)
        return KVCache(c.depth, rows, c.num_heads, c.head_dim, caps, self.compute_dtype, self.device)

    @property
    def latent_dtype(self) -> torch.dtype:
        """The running sum's dtype: the official ``f_hat`` is ``context_embed``'s output dtype (fp16 under the
        release's CUDA autocast, fp32 otherwise)."""
        return (
            self.compute_dtype
            if self.compute_dtype in HALF_DTYPES and self.precision_device == "cuda"
            else torch.float32
        )

    def initial_latent(self, batch: int, schedule: HARTSchedule) -> torch.Tensor:
        g = self.config.grid
        return torch.zeros(batch, self.config.d_vae, g, g, dtype=self.latent_dtype, device=self.device)

    # ------------------------------------------------------------------------------------------ one pass

    def embed(self, latent: torch.Tensor, ctx: HARTContext, tokens: StepTokens, schedule) -> torch.Tensor:
        tf = self.transformer
        if 0 in tokens.scales:
            if tokens.scales != (0,) or not tokens.is_full_scale:
                raise ValueError("the first scale (the text context) must run alone and in full")
            return tf.context_tokens(ctx)
        b, c = latent.shape[:2]
        feats = []
        for part in tokens.parts:
            h, w = part.grid
            # (B, Cvae, h·w) channel-major, as the official loop views it before its transpose
            small = F.interpolate(latent, size=(h, w), mode="area").reshape(b, c, h * w)
            if part.flat_index is not None:
                small = small.gather(2, part.flat_index.unsqueeze(1).expand(-1, c, -1))
            feats.append(small)
        x = (feats[0] if len(feats) == 1 else torch.cat(feats, dim=2)).transpose(1, 2)
        x = tf.embed_tokens(x, tokens.scale_ids(latent.device))
        return x.repeat(ctx.batch_size // b, 1, 1)  # the CFG rows get the same input, as in the official loop

    def forward(self, x: torch.Tensor, ctx: HARTContext, spec: PassSpec) -> torch.Tensor:
        if spec.scales == (0,):
            # the first scale's pass carries the context tokens: level 0 and (unused) grid positions for each
            t = x.shape[1]
            zeros = torch.zeros(t, dtype=torch.long, device=x.device)
            spec = _with_tokens(spec, zeros)
        return self.transformer.run_blocks(x, ctx, spec)

    def _guided(self, sampling: SamplingConfig, schedule, tokens: StepTokens) -> bool:
        weights, ramp = guidance_weights(sampling, len(schedule.grids))
        if ramp:  # the official loop mixes every scale, t = 0 at the first one included
            return float(sampling.cfg) != 0
        return any(weights[s] != 0 for s in tokens.scales)

    def logits(self, hidden, ctx: HARTContext, tokens: StepTokens, sampling: SamplingConfig, schedule):
        rows = ctx.batch_size if self._guided(sampling, schedule, tokens) and ctx.has_uncond else ctx.images
        raw = self.transformer.logits(hidden[:rows], ctx)
        if tokens.scales == (0,):
            # the official loop computes every context position's logits and samples the last one (the 1×1 scale)
            raw = raw[:, -1:]
        return raw

    def sample(self, raw, tokens: StepTokens, sampling: SamplingConfig, schedule, generators, batch: int):
        num_scales = len(schedule.grids)
        weights, _ = guidance_weights(sampling, num_scales)
        guided = raw.shape[0] == 2 * batch  # a pass on one CFG row per image samples that row unguided
        single = len(tokens.parts) == 1
        pieces = [raw] if single else tokens.split(raw)
        mixed = []
        for part, p in zip(pieces, tokens.parts, strict=True):
            if guided:
                t = weights[p.scale_index]
                mixed.append((1 + t) * part[:batch] - t * part[batch:])
            else:
                mixed.append(part[:batch].clone())  # masked in place below; the raw logits may be kept
        b, n, v = batch, tokens.num_tokens, raw.shape[-1]
        cvae = self.config.d_vae
        if generators is None:  # a meta-device dry run: shapes only
            device = raw.device
            return HARTSamples(
                torch.empty(b, n, dtype=torch.long, device=device), torch.empty(b, n, cvae, device=device)
            )
        for lg, p in zip(mixed, tokens.parts, strict=True):  # each scale its own top-k (in place, official)
            filter_top_k_top_p_(lg, self.top_k(p.scale_index, sampling), sampling.top_p)
        logits = mixed[0] if single else torch.cat(mixed, dim=1)
        probs = logits.softmax(dim=-1)
        if len(generators) == 1:
            idx = torch.multinomial(probs.view(-1, v), 1, replacement=True, generator=generators[0]).view(
                b, n
            )
            noise = None
            if self.more_smooth:
                noise = -torch.empty_like(logits).exponential_(generator=generators[0]).log()
        else:
            if len(generators) != b:
                raise ValueError(
                    f"need one generator per image ({b}) or one for the batch, got {len(generators)}"
                )
            draws, noises = [], []
            for i, g in enumerate(generators):
                draws.append(torch.multinomial(probs[i], 1, replacement=True, generator=g).view(n))
                if self.more_smooth:  # the official order: this image's multinomial, then its Gumbel draw
                    noises.append(-torch.empty_like(logits[i]).exponential_(generator=g).log())
            idx = torch.stack(draws)
            noise = torch.stack(noises) if self.more_smooth else None
        if noise is None:
            codes = F.embedding(idx, self.codebook)
        else:
            codes = self._gumbel_soft(logits, noise, tokens, num_scales) @ self.codebook.unsqueeze(0)
        return HARTSamples(idx, codes)

    @staticmethod
    def _gumbel_soft(logits, noise, tokens: StepTokens, num_scales: int) -> torch.Tensor:
        """The official ``gumbel_softmax_with_rng(masked·(1 + ratio), τ, hard=False)``, each part at its scale's
        ratio; ``(B, N, V)`` soft one-hots."""
        single = len(tokens.parts) == 1
        logit_parts = [logits] if single else tokens.split(logits)
        noise_parts = [noise] if single else tokens.split(noise)
        out = []
        for lg, g, p in zip(logit_parts, noise_parts, tokens.parts, strict=True):
            ratio = guidance_ratio(p.scale_index, num_scales)
            tau = max(0.27 * (1 - ratio * 0.95), 0.005)
            out.append(((lg.mul(1 + ratio) + g) / tau).softmax(dim=-1))
        return out[0] if single else torch.cat(out, dim=1)

    # ------------------------------------------------------------------------------------------ diffusion head

    def diffused_parts(self, tokens: StepTokens, num_scales: int) -> list[bool]:
        """Which parts of a pass the residual diffusion head refines (see the module doc)."""
        packed = any(p.flat_index is not None for p in tokens.parts) or len(tokens.parts) > 1
        out = []
        for p in tokens.parts:
            last = p.scale_index == num_scales - 1
            out.append(last or (packed and self.refine_diffusion == "every_refine_scale"))
        return out

    def diffusion_sample(
        self, z: torch.Tensor, cfg: float | None, generator: torch.Generator
    ) -> torch.Tensor:
        """One call of the diffusion head (:meth:`HARTDiffusionHead.sample`) with the generation's generator, which
        continues after the pass's sampling draws. ``cfg`` None: unguided rows. A test overrides this to replay the
        official code's global-RNG noise (``noise=``)."""
        return self.transformer.diffloss.sample(z, cfg=cfg, generator=generator)

    def finish(self, samples: HARTSamples, hidden, ctx: HARTContext, tokens: StepTokens, schedule, *, sampling,
               generators, batch):  # fmt: skip
        """Add the diffusion head's residual to the codes of the parts it refines (the release: the last scale)."""
        num_scales = len(schedule.grids)
        chosen = self.diffused_parts(tokens, num_scales)
        if not any(chosen) or generators is None:  # nothing to refine, or a dry run (shapes only)
            return samples
        weights, _ = guidance_weights(sampling, num_scales)
        rows = hidden.shape[0]
        guided = rows == 2 * batch
        pieces = samples.split(tokens)
        hidden_parts = [hidden] if len(tokens.parts) == 1 else tokens.split(hidden)
        codes = []
        for part, piece, h, refine in zip(tokens.parts, pieces, hidden_parts, chosen, strict=True):
            if not refine:
                codes.append(piece.codes)
                continue
            t = weights[part.scale_index] if guided else None
            residual = self._diffuse(piece.indices, h, t, generators, batch)
            codes.append(piece.codes + residual.to(piece.codes.dtype))
        return HARTSamples(samples.indices, codes[0] if len(codes) == 1 else torch.cat(codes, dim=1))

    def _diffuse(self, indices, hidden, t: float | None, generators, batch: int) -> torch.Tensor:
        """The head's ``(B, n, Cvae)`` residual for tokens with hard ``indices`` ``(B, n)`` and last hidden states
        ``(R, n, C)``: guided with weight ``t`` over both CFG halves, or unguided (``t`` None, one row per image).

        One generator: one call over every row (the official call shape: conditional rows, then unconditional).
        One generator per image: one call per image on that image's rows."""
        tf = self.transformer
        rows, n, c = hidden.shape
        discrete = tf.word_embed(F.embedding(indices, self.codebook))
        z = tf.diffusion_condition(hidden, discrete.repeat(rows // batch, 1, 1))
        if len(generators) == 1:
            return self.diffusion_sample(z.reshape(rows * n, c), t, generators[0]).view(batch, n, -1)
        per_image = []
        for i, g in enumerate(generators):
            zi = z[i::batch].reshape(-1, c)  # this image's rows: conditional, then (guided) unconditional
            per_image.append(self.diffusion_sample(zi, t, g).view(n, -1))
        return torch.stack(per_image)

    # ------------------------------------------------------------------------------------------ latent update

    def accumulate(self, latent, samples: HARTSamples, tokens: StepTokens, schedule) -> torch.Tensor:
        return self.accumulate_images(latent, samples, tokens, schedule, per_image=False)

    def accumulate_images(
        self, latent, samples: HARTSamples, tokens: StepTokens, schedule, *, per_image: bool
    ):
        """``f_hat + Σ_parts φ_si(bicubic_up(codes))``, the last scale's codes added as they are; a packed part's
        codes are scattered onto its grid with zeros elsewhere (as VAR's). ``per_image`` runs each φ one image at
        a time (a convolution's rounding depends on the batch size)."""
        num_scales = len(schedule.grids)
        side = tuple(latent.shape[-2:])
        b = latent.shape[0]
        out = latent.clone()
        for piece, part in zip(samples.split(tokens), tokens.parts, strict=True):
            codes = piece.codes
            h, w = part.grid
            if part.flat_index is not None:
                index = part.flat_index.unsqueeze(-1).expand(-1, -1, codes.shape[-1])
                codes = codes.new_zeros(b, h * w, codes.shape[-1]).scatter(1, index, codes)
            maps = codes.transpose(1, 2).reshape(b, codes.shape[-1], h, w)
            if part.scale_index == num_scales - 1:
                out.add_(maps)  # the last scale: no φ, no upsampling
                continue
            if per_image:
                ups = [F.interpolate(maps[i : i + 1], size=side, mode="bicubic") for i in range(b)]
                out.add_(torch.cat([self.tokenizer.phi(part.scale_index, num_scales, u) for u in ups]))
            else:
                up = F.interpolate(maps, size=side, mode="bicubic")
                out.add_(self.tokenizer.phi(part.scale_index, num_scales, up))
        return out

    # ------------------------------------------------------------------------------------------ decode

    def decode(self, latent: torch.Tensor, *, per_image: bool) -> torch.Tensor:
        if per_image and latent.shape[0] > 1:  # convolution rounding depends on the batch size
            return torch.cat(
                [self.tokenizer.decode(latent[i : i + 1]).float() for i in range(latent.shape[0])]
            )
        return self.tokenizer.decode(latent).float()

    def to_uint8(self, decoded: torch.Tensor) -> torch.Tensor:
        """``[-1, 1]`` to RGB uint8 ``(B, H, W, 3)``: ``(x + 1)·0.5`` (the official de-normalisation), ``·255``
        truncated (the official ``sample.py``'s ``astype(np.uint8)``)."""
        return decoded.add(1).mul(0.5).permute(0, 2, 3, 1).mul(255).to(torch.uint8)

    # ------------------------------------------------------------------------------------------ accounting

    def accounting_key(self):
        return ("hart", repr(self.config), self.precision_device, self.more_smooth, self.refine_diffusion)

    def dry_run_family(self) -> HARTFamily:
        from moss_models.hart.loading import meta_family

        return meta_family(
            self.config, more_smooth=self.more_smooth, refine_diffusion=self.refine_diffusion,
            precision_device=self.precision_device,
        )  # fmt: skip

    def dry_run_condition(self, batch: int, tokens: int | None) -> HARTTextBatch:
        del tokens  # HART pads every prompt to context_token tokens
        c = self.config
        t = c.context_token
        return HARTTextBatch(
            torch.empty(batch, t, c.context_dim, device="meta"),
            torch.empty(batch, t, dtype=torch.long, device="meta"),
            torch.empty(batch, t, dtype=torch.bool, device="meta"),
        )


def _with_tokens(spec: PassSpec, scale_ids: torch.Tensor) -> PassSpec:
    from dataclasses import replace

    return replace(spec, scale_ids=scale_ids, rows=scale_ids, cols=scale_ids)
