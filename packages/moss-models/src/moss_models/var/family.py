"""VAR as a :class:`~moss_models.core.ScaleFamily`: the math of the official ``autoregressive_infer_cfg``, no loop.

What each protocol method computes is the official loop's (FoundationVision/VAR@78b9539, ``models/var.py``):

* conditioning: ImageNet class ids; with guidance the batch is ``[labels…, null…]`` (class ``num_classes``);
* guidance: VAR's linear ramp, ``t = cfg · si / (S − 1)`` and ``(1 + t)·l_c − t·l_u`` in exactly that form (the
  algebraically equal ``l_c + t·(l_c − l_u)`` rounds differently and changes the sampled indices);
* sampling: top-k / top-p masking, then ONE ``torch.multinomial`` over ``(B·l, V)`` per pass with the batch's
  generator (``seeding="official"``), or one per image with its own generator (``per_image``); no temperature;
* ``more_smooth`` (a family option): after that multinomial, whose indices are then discarded, a Gumbel draw of the
  same shape and ``softmax(((1 + ratio)·masked + g) / τ_si)`` as soft one-hots, the codes ``soft @ embedding``;
* the running sum ``f_hat`` grows by ``φ_si(bicubic_up(codes))`` (``φ`` without upsampling at the last scale), and
  the next input is ``f_hat`` area-downsampled, in the official channel-major layout (CPU GEMMs round a
  transposed operand differently, so the layout is part of bit-exactness).

A packed MoSs pass gathers each refine scale's input at its selected positions, gives every token its own scale's
level and absolute position embedding, guides each part with its own scale's ``t``, and composites each scale's
codes: scattered onto the scale's grid with zeros at unselected positions, then up-sampled and passed through that
scale's ``φ`` exactly as a full scale is. ``φ`` is a 3×3 convolution with a bias, so the composite is what the full
scale would add had its unselected codes been zero: the codes bleed one (bicubic-widened) pixel into unselected
neighbours and ``φ``'s bias reaches every pixel, as it does for a full scale. The alternative — masking ``φ``'s
output to the selected footprint — would drop the bias and the bleed where a full scale has them, and would not
reduce to the full scale when every position is selected; the chosen form does (k=1, band [100] is the baseline
bit for bit).

Guidance semantics differ from Infinity's: VAR's ``cfg`` is the ramp's maximum and ``cfg = 0`` is no guidance
(Infinity: 1 is none). ``SamplingConfig.cfg`` as a number is that maximum; as a per-scale tuple it is taken as the
per-scale ``t`` itself (no ramp), where ``t = 0`` leaves a scale unguided. The official loop doubles the batch even
at ``cfg = 0``; here ``cfg = 0`` drops the unconditional rows (the same logits mathematically, not bit for bit).
``SamplingConfig.tau`` is ignored: the official loop has no temperature.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from moss_models.core.family import ConfiguredPrecision, ScaleFamily, SquareSchedule, square_schedule
from moss_models.core.kv_cache import KVCache
from moss_models.core.pass_spec import PassSpec
from moss_models.core.sampling import SamplingConfig, filter_top_k_top_p_
from moss_models.core.steps import StepTokens
from moss_models.var.config import VARConfig
from moss_models.var.transformer import VARBlockConstants, VARContext, VARTransformer
from moss_models.var.vqvae import MultiScaleVQVAE

_PER_ROW = ("gamma1", "gamma2", "scale1", "scale2", "shift1", "shift2")


VARSchedule = SquareSchedule  # the model's one schedule (core.family.square_schedule)


@dataclass(frozen=True)
class ClassLabels:
    """Checked ImageNet class ids of a batch, ``(B,)`` int64 on the model's device."""

    labels: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.labels.shape[0])


def _label_error(got: Any, num_classes: int) -> ValueError:
    return ValueError(
        f"VAR is conditioned on class ids: ints in 0 … {num_classes - 1}, strings of them ('207'), or a 1-D "
        f"integer tensor; got {got!r:.80}. Map class names to ids before calling the model."
    )


def _parse_label(value: Any, num_classes: int) -> int:
    if isinstance(value, str):
        text = value.strip()
        if not text.lstrip("-").isdigit():
            raise _label_error(value, num_classes)
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _label_error(value, num_classes)
    if not 0 <= value < num_classes:
        raise _label_error(value, num_classes)
    return value


def var_schedule(config: VARConfig, resolution: Any = None, aspect_ratio: float = 1.0) -> VARSchedule:
    """The model's one schedule: its ``patch_nums`` as square grids, at its resolution (None: that one)."""
    return square_schedule(config.name, config.patch_nums, config.resolution, resolution, aspect_ratio)


def guidance_weights(sampling: SamplingConfig, num_scales: int) -> tuple[list[float], bool]:
    """Per scale, VAR's guidance weight ``t``, and whether ``cfg`` was the ramp (a number) rather than per-scale
    ``t`` values (a tuple)."""
    if isinstance(sampling.cfg, int | float):
        cfg = float(sampling.cfg)
        # the official Python-float order: ratio first, then cfg · ratio
        return [cfg * (si / (num_scales - 1)) for si in range(num_scales)], True
    return sampling.per_scale("cfg", num_scales), False


class VARFamily(ConfiguredPrecision, ScaleFamily):
    """A VAR transformer and its multi-scale VQVAE.

    ``more_smooth``: the official Gumbel smoothing of the codes (the demo's visualisation option; not used for
    FID). It lives on the family, not on :class:`SamplingConfig`, because no other family has it.
    ``precision_device``: the device type whose precision rules the passes follow (default: the model's; a
    meta-device model follows CUDA's, the release's fp16 autocast): CUDA autocasts to ``config.autocast_dtype``,
    other devices run the blocks' own dtype. The KV cache is kept in that compute dtype.
    """

    name = "var"

    def __init__(
        self,
        transformer: VARTransformer,
        vae: MultiScaleVQVAE,
        *,
        more_smooth: bool = False,
        precision_device: str | None = None,
    ):
        self.transformer = transformer.eval()
        self.vae = vae.eval().requires_grad_(
            False
        )  # a soft @ embedding product rounds differently with grads
        self.config: VARConfig = transformer.config
        if tuple(vae.patch_nums) != tuple(self.config.patch_nums):
            raise ValueError(
                f"the VQVAE's patch_nums {vae.patch_nums} differ from the transformer's {self.config.patch_nums}"
            )
        self.more_smooth = bool(more_smooth)
        device_type = self.device.type
        self.precision_device = precision_device or ("cuda" if device_type == "meta" else device_type)

    # ------------------------------------------------------------------------------------------ where and what

    @property
    def device(self) -> torch.device:
        return self.transformer.pos_start.device

    def schedule(self, resolution: Any = None, aspect_ratio: float = 1.0) -> VARSchedule:
        return var_schedule(self.config, resolution, aspect_ratio)

    def positions(self, schedule: VARSchedule) -> None:
        return None  # absolute positions, added once before the first block

    # ------------------------------------------------------------------------------------------ conditioning

    def condition(self, conditions: Any, *, per_image: bool = False) -> ClassLabels:
        """Class ids to a checked :class:`ClassLabels` (values are read here, before any pass)."""
        del per_image  # a label is a row of its own whatever the batch
        n = self.config.num_classes
        if isinstance(conditions, ClassLabels):
            labels = conditions.labels
        elif isinstance(conditions, torch.Tensor):
            labels = conditions
        else:
            if isinstance(conditions, int | str):
                conditions = [conditions]
            try:
                values = [_parse_label(v, n) for v in conditions]
            except TypeError:
                raise _label_error(conditions, n) from None
            if not values:
                raise _label_error(conditions, n)
            return ClassLabels(torch.tensor(values, dtype=torch.long, device=self.device))
        if (
            labels.ndim != 1
            or labels.numel() == 0
            or labels.dtype.is_floating_point
            or labels.dtype.is_complex
        ):
            raise _label_error(labels, n)
        if labels.dtype == torch.bool:
            raise _label_error(labels, n)
        if labels.device.type != "meta":
            low, high = int(labels.min()), int(labels.max())
            if low < 0 or high >= n:
                raise _label_error(f"class ids in {low} … {high}", n)
        return ClassLabels(labels.to(device=self.device, dtype=torch.long))

    def uses_guidance(self, sampling: SamplingConfig, schedule: VARSchedule) -> bool:
        weights, ramp = guidance_weights(sampling, len(schedule.grids))
        return float(sampling.cfg) != 0 if ramp else any(t != 0 for t in weights)

    def encode_condition(self, cond: ClassLabels, *, guidance: bool, per_image: bool) -> VARContext:
        """Rows ``[labels…, null…]`` (null rows only with guidance) and every block's AdaLN gains.

        ``per_image`` computes each image's rows on their own and merges them: the gains are a GEMM whose
        rounding may depend on the number of rows.
        """
        tf = self.transformer
        if not per_image or cond.batch_size == 1:
            return tf.prepare(cond.labels, guidance=guidance, check=False)
        parts = [
            tf.prepare(cond.labels[i : i + 1], guidance=guidance, check=False) for i in range(cond.batch_size)
        ]
        order = [(p, r) for r in range(2 if guidance else 1) for p in parts]  # all cond rows, then all uncond

        def rows(get) -> torch.Tensor:
            return torch.cat([get(p)[r : r + 1] for p, r in order])

        blocks = []
        for layer, first in enumerate(parts[0].blocks):
            per_row = {k: rows(lambda p, k=k, layer=layer: getattr(p.blocks[layer], k)) for k in _PER_ROW}
            blocks.append(VARBlockConstants(**per_row, qkv_bias=first.qkv_bias, multiplier=first.multiplier))
        return VARContext(
            labels=rows(lambda p: p.labels),
            cond=rows(lambda p: p.cond),
            has_uncond=guidance,
            blocks=tuple(blocks),
        )

    def context_rows(self, ctx: VARContext, rows: str, batch: int) -> VARContext:
        del batch
        return ctx.rows(rows)

    # ------------------------------------------------------------------------------------------ cache, latent

    def kv_cache(self, rows: int, capacity: int | Sequence[int]) -> KVCache:
        c = self.config
        return KVCache(c.depth, rows, c.num_heads, c.head_dim, capacity, self.compute_dtype, self.device)

    def initial_latent(self, batch: int, schedule: VARSchedule) -> torch.Tensor:
        return self.vae.quantize.new_fhat(batch, self.device)

    # ------------------------------------------------------------------------------------------ one pass

    def embed(self, latent: torch.Tensor, ctx: VARContext, tokens: StepTokens, schedule) -> torch.Tensor:
        tf = self.transformer
        if 0 in tokens.scales:
            if tokens.scales != (0,) or not tokens.is_full_scale:
                raise ValueError("the first scale (the start token) must run alone and in full")
            return tf.start_tokens(ctx)
        b, c = latent.shape[:2]
        device = latent.device
        packed = any(p.flat_index is not None for p in tokens.parts)
        feats, flats = [], []
        for part in tokens.parts:
            h, w = part.grid
            # (B, C, h·w) channel-major, as the official loop views it before its transpose
            small = F.interpolate(latent, size=(h, w), mode="area").reshape(b, c, h * w)
            flat = torch.arange(h * w, device=device)
            if part.flat_index is not None:
                small = small.gather(2, part.flat_index.unsqueeze(1).expand(-1, c, -1))
                flat = part.flat_index
            elif packed:
                flat = flat.expand(b, -1)
            feats.append(small)
            flats.append(flat)
        x = (feats[0] if len(feats) == 1 else torch.cat(feats, dim=2)).transpose(1, 2)
        flat = flats[0] if len(flats) == 1 else torch.cat(flats, dim=-1)
        x = tf.embed_tokens(x, tokens.scale_ids(device), flat, check=False)
        return x.repeat(ctx.batch_size // b, 1, 1)  # the CFG rows get the same input, as in the official loop

    def forward(self, x: torch.Tensor, ctx: VARContext, spec: PassSpec) -> torch.Tensor:
        return self.transformer.run_blocks(x, ctx, spec)

    def _guided(self, tokens: StepTokens, sampling: SamplingConfig, schedule) -> tuple[bool, list[float]]:
        weights, ramp = guidance_weights(sampling, len(schedule.grids))
        if ramp:  # the official loop mixes every scale, t = 0 at the first one included
            return float(sampling.cfg) != 0, weights
        return any(weights[s] != 0 for s in tokens.scales), weights

    def logits(self, hidden, ctx: VARContext, tokens: StepTokens, sampling: SamplingConfig, schedule):
        guided, _ = self._guided(tokens, sampling, schedule)
        rows = ctx.batch_size if guided and ctx.has_uncond else ctx.images
        return self.transformer.logits(hidden[:rows], ctx.cond[:rows])

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
        logits = mixed[0] if single else torch.cat(mixed, dim=1)
        b, n, v = logits.shape
        if generators is None:  # a meta-device dry run: shapes only
            if self.more_smooth:
                return torch.empty(b, n, v, device=logits.device)
            return torch.empty(b, n, dtype=torch.long, device=logits.device)
        filter_top_k_top_p_(logits, sampling.top_k, sampling.top_p)
        probs = logits.softmax(dim=-1)
        if len(generators) == 1:
            idx = torch.multinomial(probs.view(-1, v), 1, replacement=True, generator=generators[0]).view(
                b, n
            )
            if not self.more_smooth:
                return idx
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
            if not self.more_smooth:
                return torch.stack(draws)
            noise = torch.stack(noises)
        return self._gumbel_soft(logits, noise, tokens, num_scales)

    @staticmethod
    def _gumbel_soft(logits, noise, tokens: StepTokens, num_scales: int) -> torch.Tensor:
        """The official ``gumbel_softmax_with_rng(masked·(1 + ratio), τ, hard=False)``, each part at its scale's
        ratio; ``(B, N, V)`` soft one-hots."""
        single = len(tokens.parts) == 1
        logit_parts = [logits] if single else tokens.split(logits)
        noise_parts = [noise] if single else tokens.split(noise)
        out = []
        for lg, g, p in zip(logit_parts, noise_parts, tokens.parts, strict=True):
            ratio = p.scale_index / (num_scales - 1)
            tau = max(0.27 * (1 - ratio * 0.95), 0.005)
            out.append(((lg.mul(1 + ratio) + g) / tau).softmax(dim=-1))
        return out[0] if single else torch.cat(out, dim=1)

    def _codes(self, samples: torch.Tensor) -> torch.Tensor:
        """``(B, n, Cvae)`` codes of a part's samples: embedded indices, or soft one-hots times the codebook."""
        if self.more_smooth:
            return samples @ self.vae.quantize.embedding.weight.unsqueeze(0)
        return self.vae.quantize.embedding(samples)

    def accumulate(self, latent, samples, tokens: StepTokens, schedule) -> torch.Tensor:
        return self.accumulate_images(latent, samples, tokens, schedule, per_image=False)

    def accumulate_images(self, latent, samples, tokens: StepTokens, schedule, *, per_image: bool):
        """``f_hat + Σ_parts φ_si(bicubic_up(codes))`` (no upsampling at the last scale); a packed part's codes
        are scattered onto its grid with zeros elsewhere (see the module doc). ``per_image`` runs each φ one
        image at a time: a convolution's rounding depends on the batch size."""
        quant = self.vae.quantize
        num_scales = len(schedule.grids)
        side = tuple(latent.shape[-2:])
        b = latent.shape[0]
        out = latent.clone()  # added in place like the official f_hat, keeping its contiguous layout
        pieces = [samples] if len(tokens.parts) == 1 else tokens.split(samples)
        for piece, part in zip(pieces, tokens.parts, strict=True):
            codes = self._codes(piece)
            h, w = part.grid
            if part.flat_index is not None:
                index = part.flat_index.unsqueeze(-1).expand(-1, -1, codes.shape[-1])
                codes = codes.new_zeros(b, h * w, codes.shape[-1]).scatter(1, index, codes)
            phi = quant.phi(part.scale_index, num_scales)
            up = part.scale_index != num_scales - 1
            if per_image:
                # one image at a time from its codes on, batch of one included: the bicubic output's layout (and
                # so φ's rounding) depends on the batch too (one image comes out contiguous, more channels-last)
                maps = [quant.tokens_to_map(codes[i : i + 1], (h, w)) for i in range(b)]
                maps = [F.interpolate(m, size=side, mode="bicubic") if up else m for m in maps]
                out.add_(torch.cat([phi(m) for m in maps]))
            else:
                h_map = quant.tokens_to_map(codes, (h, w))
                out.add_(phi(F.interpolate(h_map, size=side, mode="bicubic") if up else h_map))
        return out

    # ------------------------------------------------------------------------------------------ decode

    def decode(self, latent: torch.Tensor, *, per_image: bool) -> torch.Tensor:
        if per_image and latent.shape[0] > 1:  # convolution rounding depends on the batch size
            return torch.cat([self.vae.decode(latent[i : i + 1]).float() for i in range(latent.shape[0])])
        return self.vae.decode(latent).float()

    def to_uint8(self, decoded: torch.Tensor) -> torch.Tensor:
        """``[-1, 1]`` to RGB uint8 ``(B, H, W, 3)``: the official ``(x + 1)·0.5`` to ``[0, 1]``, then ``·255``
        truncated (the demo's ``astype(np.uint8)``; the repo's convention for every family)."""
        return decoded.add(1).mul(0.5).permute(0, 2, 3, 1).mul(255).to(torch.uint8)

    # ------------------------------------------------------------------------------------------ accounting

    def accounting_key(self):
        return ("var", repr(self.config), self.precision_device, self.more_smooth)

    def dry_run_family(self) -> VARFamily:
        return meta_family(self.config, more_smooth=self.more_smooth, precision_device=self.precision_device)

    def dry_run_condition(self, batch: int, tokens: int | None) -> ClassLabels:
        del tokens  # a class label is one row whatever the prompt
        return ClassLabels(torch.zeros(batch, dtype=torch.long, device="meta"))


def meta_family(
    config: VARConfig, *, more_smooth: bool = False, precision_device: str | None = "cuda"
) -> VARFamily:
    """A VAR family on the meta device: the real modules, no memory (for exact FLOP and KV accounting). Its
    precision follows ``precision_device`` (default CUDA: the release's fp16 autocast and fp16 KV cache)."""
    with torch.device("meta"):
        tf = VARTransformer(config).cast_blocks()
        vae = MultiScaleVQVAE(config.vae)
    return VARFamily(tf, vae, more_smooth=more_smooth, precision_device=precision_device)
