"""The testbed's two training stages, on the real Infinity modules.

**VAE** (:func:`vae_losses`): ``BSQVAE.encoder`` → the multi-scale bitwise residual quantiser of
``BSQVAE.encode`` (:func:`quantize_latent`, through :func:`moss_models.core.tokenizer.residual_quantize`) with a
straight-through estimator → ``BSQVAE.decoder``. The release's quantiser has no parameters, so the encoder and
decoder are all that learns; a commitment term keeps the encoder's latent near the summed codes it is replaced
by. (No GAN or perceptual loss: procedural shapes are flat colours and edges, and they would not fit 2 CPU cores.)

**Transformer** (:func:`transformer_losses`): teacher forcing over every scale in one block-causal pass
(``InfinityTransformer.teacher_forced_logits``). Each scale's input is what generation feeds it: the running sum of
the coarser scales' codes (``InfinityFamily.codes_of``, upsampled to the latent grid as ``accumulate`` adds
them) resized by ``InfinityFamily.tokens_of``; the labels are the VAE's bits of every scale, two logits per bit.
A fraction of the prompts is replaced by ``cfg_uncond`` (the unconditional rows CFG uses at generation), so
guidance works with the trained model. With ``self_correction`` the inputs carry flipped bits and the labels
correct them (:func:`self_correcting_teacher_forcing`, Infinity's Bitwise Self-Correction). With
``reweight_by_scale`` each token's loss is weighted by :func:`scale_loss_weights` (Infinity's
``--reweight_loss_by_scale``), which shifts the objective towards the coarse scales that decide a picture's layout.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from moss_models.core.tokenizer import residual_quantize
from moss_models.infinity.family import InfinityFamily
from moss_models.infinity.text import TextBatch
from moss_models.infinity.vae import BSQVAE, upsample_codes

Grid = tuple[int, int]


def quantize_latent(
    vae: BSQVAE, z: torch.Tensor, grids: Sequence[Grid]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``BSQVAE.encode``'s quantisation of an encoder output ``z`` ``(B, d, H, W)``: the summed codes and one
    ``(B, h, w, d)`` bit tensor per grid (the same operations; a test checks the two agree bit for bit)."""
    size = tuple(z.shape[-2:])
    if tuple(grids[-1]) != size:
        raise ValueError(f"the last grid {tuple(grids[-1])} must be the VAE latent grid {size}")

    def down(residual: torch.Tensor, grid: Grid) -> torch.Tensor:
        return F.interpolate(residual, size=grid, mode="area") if grid != size else residual

    def quantize(r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bits = (r > 0).permute(0, 2, 3, 1).to(torch.long)
        return bits, vae.bits_to_codes(bits).permute(0, 3, 1, 2)

    return residual_quantize(
        z.float(), grids, down=down, quantize=quantize, up=lambda c: upsample_codes(c, size)
    )


def cropped_grids(sides: Sequence[int], latent_side: int) -> list[Grid]:
    """The schedule for VAE training on crops whose latent grid is ``latent_side`` (the full schedule's sides
    scaled down, at least 1, without repeats, ending at the crop's latent grid)."""
    full = sides[-1]
    scaled = sorted({max(1, min(latent_side, round(s * latent_side / full))) for s in sides} | {latent_side})
    return [(s, s) for s in scaled]


def vae_losses(
    vae: BSQVAE, images: torch.Tensor, grids: Sequence[Grid], commit_weight: float = 0.25
) -> dict[str, torch.Tensor]:
    """One VAE training step's losses on ``(B, 3, H, W)`` images in [-1, 1]; ``loss`` is the one to minimise.

    The reconstruction is the decoder's raw output (``BSQVAE.decode`` clamps to [-1, 1], which would stop the
    gradient of every overshooting pixel); L1 + MSE (L1 keeps edges sharp, MSE is what PSNR measures).
    """
    z = vae.encoder(images).float()
    with torch.no_grad():
        summed, _ = quantize_latent(vae, z, grids)
    z_q = (
        z + (summed - z).detach()
    )  # straight-through: the decoder sees the codes, the encoder gets its gradient
    recon = vae.decoder(z_q)
    mse = F.mse_loss(recon, images)
    l1 = F.l1_loss(recon, images)
    commit = F.mse_loss(z, summed)
    with torch.no_grad():
        clamped = F.mse_loss(recon.clamp(-1, 1), images)
        psnr = 10 * torch.log10(4 / clamped.clamp_min(1e-10))  # peak-to-peak 2 in [-1, 1]
    return {"loss": l1 + mse + commit_weight * commit, "l1": l1, "mse": mse, "commit": commit, "psnr": psnr}


def teacher_forcing(
    family: InfinityFamily, bits: Sequence[torch.Tensor], grids: Sequence[Grid]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The transformer inputs of scales 1…S−1 ``(B, L − 1, d)`` and the bit labels of every scale ``(B, L, d)``,
    from per-scale ``(B, h, w, d)`` bits, built with the family's own generation operations."""
    b = bits[0].shape[0]
    latent = torch.zeros(b, family.vae.codebook_dim, *grids[-1], device=bits[0].device)
    inputs, labels = [], []
    for s, (scale_bits, grid) in enumerate(zip(bits, grids, strict=True)):
        flat = scale_bits.reshape(b, grid[0] * grid[1], -1)
        labels.append(flat)
        latent = latent + upsample_codes(family.codes_of(flat, tuple(grid)), tuple(grids[-1]))
        if s + 1 < len(grids):
            inputs.append(family.tokens_of(latent, tuple(grids[s + 1])))
    return torch.cat(inputs, dim=1), torch.cat(labels, dim=1)


def self_correcting_teacher_forcing(
    family: InfinityFamily,
    z: torch.Tensor,
    grids: Sequence[Grid],
    strength: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`teacher_forcing` with Infinity's Bitwise Self-Correction (the release's
    ``BitwiseSelfCorrection.flip_requant``, ``noise_apply_requant=1`` on every scale): the inputs are built from
    bits of which a fraction ``p`` is flipped (``p`` drawn per step uniformly from 0, 0.01, …, ``strength``), and
    each scale's labels quantise the residual left by the *flipped* sum, so the model learns to correct the errors
    of its own coarser scales, as it must at generation, where they are its samples, not the VAE's.

    ``z``: the VAE encoder's output ``(B, d, H, W)``. ``strength=0`` is :func:`teacher_forcing` of the VAE's bits
    exactly. ``generator`` draws ``p`` and the flips (CPU).
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength={strength} must be in [0, 1]")
    size = tuple(grids[-1])
    if tuple(z.shape[-2:]) != size:
        raise ValueError(f"the last grid {size} must be the VAE latent grid {tuple(z.shape[-2:])}")
    b = z.shape[0]
    z = z.float()
    p = 0.0
    if strength > 0:  # as the release: one strength per step, in hundredths
        p = int(torch.randint(0, round(100 * strength) + 1, (1,), generator=generator)) / 100
    latent = torch.zeros_like(z)
    inputs, labels = [], []
    for s, grid in enumerate(grids):
        grid = tuple(grid)
        residual = z - latent
        if grid != size:
            residual = F.interpolate(residual, size=grid, mode="area")
        bits = (residual > 0).permute(0, 2, 3, 1).to(torch.long).reshape(b, grid[0] * grid[1], -1)
        labels.append(bits)
        if p > 0:
            flip = torch.rand(bits.shape, generator=generator).to(bits.device) < p
            bits = torch.where(flip, 1 - bits, bits)
        latent = latent + upsample_codes(family.codes_of(bits, grid), size)
        if s + 1 < len(grids):
            inputs.append(family.tokens_of(latent, tuple(grids[s + 1])))
    return torch.cat(inputs, dim=1), torch.cat(labels, dim=1)


def drop_conditions(text: TextBatch, cfg_uncond: torch.Tensor, drop: Sequence[bool]) -> TextBatch:
    """``text`` with the rows marked in ``drop`` replaced by ``cfg_uncond[:len_i]``, the unconditional features
    CFG gives a prompt of that length at generation (``TextBatch.with_unconditional``)."""
    if len(drop) != text.batch_size:
        raise ValueError(f"drop has {len(drop)} entries for {text.batch_size} prompts")
    # per packed row: its position in its prompt (the row of cfg_uncond it takes) and whether it is dropped,
    # laid out on the host and sent in one copy, then one gather and one select (not a slice per prompt)
    rows = torch.tensor(text.token_positions(), dtype=torch.long)
    dropped = torch.tensor([bool(d) for n, d in zip(text.lens, drop, strict=True) for _ in range(n)])
    device = text.kv_compact.device
    rows, dropped = rows.to(cfg_uncond.device, non_blocking=True), dropped.to(device, non_blocking=True)
    uncond = cfg_uncond.index_select(0, rows).to(device=device, dtype=text.kv_compact.dtype)
    kv = torch.where(dropped[:, None], uncond, text.kv_compact)
    return TextBatch.from_packed(kv, text.lens, text.truncated)


def scale_loss_weights(grids: Sequence[Grid]) -> torch.Tensor:
    """Infinity's ``reweight_loss_by_scale`` (trainer.py): token weights ``sqrt(area_last / area_scale)`` for every
    token of every scale, normalised to sum to 1, so a scale's share of the loss grows with its side rather than
    with its area (the 10-scale testbed schedule: the six scales up to 6x6 hold 13 % of the tokens and get 31 %
    of the weight). Shape ``(sum(h*w),)``, float32."""
    last = float(grids[-1][0] * grids[-1][1]) ** 0.5
    parts = [torch.full((h * w,), last / float(h * w) ** 0.5) for h, w in grids]
    weights = torch.cat(parts)
    return weights / weights.sum()


def transformer_losses(
    family: InfinityFamily,
    text_encoder,
    images: torch.Tensor,
    prompts: Sequence[str],
    schedule,
    drop: Sequence[bool] | None = None,
    *,
    self_correction: float = 0.0,
    reweight_by_scale: bool = False,
    generator: torch.Generator | None = None,
    prefix_images: int = 0,
    prefix_scales: int = 0,
) -> dict[str, torch.Tensor]:
    """One transformer training step's losses: bitwise cross-entropy over every token of every scale (``loss``,
    the mean over tokens, or with ``reweight_by_scale`` the :func:`scale_loss_weights` average, as Infinity's
    trainer), the plain token mean (``token_loss``, comparable across the two), the bit accuracy, and the loss of
    each scale (``loss_s{i}``). The VAE is frozen (its bits are the labels).

    ``text_encoder``: anything with ``encode(prompts) -> TextBatch`` (the word encoder, trained with it);
    ``drop``: which prompts are replaced by the unconditional features (None: none); ``self_correction``: the
    largest bit-flip rate of :func:`self_correcting_teacher_forcing` (0: plain teacher forcing), drawn from
    ``generator``.

    **Prefix images**: the last ``prefix_images`` images of the batch go through the first ``prefix_scales``
    scales only. Attention is block-causal, so a scale's logits do not depend on the scales after it, and a
    sequence cut after scale K gives the same terms for scales 1…K as the whole one, at a fraction of the cost
    (the testbed: 91 of 680 tokens up to side 6). They add samples to those scales' terms of the same objective:
    the loss is the mean over every image of the per-image terms of scales 1…K plus the mean over the whole
    images of the rest, so its expectation is the plain loss's, with less variance where the layout is decided.
    ``token_loss``, ``bit_acc`` and ``loss_s{i}`` are the whole images'; ``prefix_loss`` is the prefix images'
    token mean.
    """
    grids = tuple(tuple(g) for g in schedule.grids)
    n_all = images.shape[0]
    if not 0 <= prefix_images < n_all:
        raise ValueError(f"prefix_images={prefix_images} must leave at least one whole image of {n_all}")
    if prefix_images and not 1 <= prefix_scales < len(grids):
        raise ValueError(f"prefix_scales={prefix_scales} must be between 1 and {len(grids) - 1}")
    tf = family.transformer
    with torch.no_grad():
        if self_correction > 0:
            z = family.vae.encoder(images)
            inputs, labels = self_correcting_teacher_forcing(family, z, grids, self_correction, generator)
        else:
            _, bits = family.vae.encode(images, list(grids))
            inputs, labels = teacher_forcing(family, bits, grids)
    rope = family.rope_tables(schedule)
    d = family.config.d_vae
    whole = n_all - prefix_images
    drop = list(drop) if drop is not None else [False] * n_all

    def token_losses(rows: slice, scales: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = sum(h * w for h, w in grids[:scales])
        text = text_encoder.encode(list(prompts[rows]))
        if any(drop[rows]):
            text = drop_conditions(text, tf.cfg_uncond, drop[rows])
        logits = tf.teacher_forced_logits(text, inputs[rows, : n - 1], grids[:scales], rope)
        b = logits.shape[0]
        target = labels[rows, :n]
        per_bit = F.cross_entropy(logits.view(b * n * d, 2), target.reshape(-1), reduction="none")
        return per_bit.view(b, n, d), logits, target

    per_bit, logits, target = token_losses(slice(0, whole), len(grids))
    b, n, _ = per_bit.shape
    per_token = per_bit.mean(-1)
    if reweight_by_scale:
        weights = scale_loss_weights(grids).to(per_token.device)
    else:
        weights = torch.full((n,), 1.0 / n, device=per_token.device)
    if prefix_images:
        terms = per_token * weights  # each token's term of its image's loss (which sums them)
        cut = sum(h * w for h, w in grids[:prefix_scales])
        prefix_bit, _, _ = token_losses(slice(whole, n_all), prefix_scales)
        prefix_terms = prefix_bit.mean(-1) * weights[:cut]
        head = torch.cat([terms[:, :cut], prefix_terms]).sum(-1).mean()
        loss = head + terms[:, cut:].sum(-1).mean()
    elif reweight_by_scale:
        loss = (per_token * weights).sum(-1).mean()
    else:
        loss = per_token.mean()
    out = {"loss": loss}
    with torch.no_grad():
        out["token_loss"] = per_token.mean()
        out["bit_acc"] = (logits.view(b, n, d, 2).argmax(-1) == target).float().mean()
        sizes = [h * w for h, w in grids]
        for s, part in enumerate(per_bit.split(sizes, dim=1)):
            out[f"loss_s{s}"] = part.mean()
        if prefix_images:
            out["prefix_loss"] = prefix_bit.mean()
    return out


# the sublayers whose outputs a block adds to its residual stream (Infinity's AdaLNSelfAttn key names): zeroed, the
# block returns its input unchanged
_RESIDUAL_OUTPUTS = ("sa.proj", "ca.proj", "ffn.fc2")


def grow_depth(
    state: dict[str, torch.Tensor],
    fresh: dict[str, torch.Tensor],
    old_depth: int,
    old_chunks: int,
    new_depth: int,
    new_chunks: int,
) -> dict[str, torch.Tensor]:
    """An Infinity state dict of ``new_depth`` blocks that computes exactly what ``state`` (``old_depth`` blocks)
    computes: old block ``j`` becomes block ``j·f`` (``f = new_depth / old_depth``) and each is followed by
    ``f − 1`` identity blocks. Those take ``fresh``'s weights (a newly initialised model of the new depth, whose
    state dict supplies every key) with their residual outputs (``sa.proj``, ``ca.proj``, ``ffn.fc2``) zeroed, so
    they start as identity and still learn: each output projection's gradient is its input, which is not zero.

    Function-preserving depth growth, for continuing a trained export with more capacity instead of starting over.
    Block keys are ``block_chunks.{c}.module.{i}.…`` with ``new_depth / new_chunks`` blocks per chunk.
    """
    if old_depth < 1 or new_depth % old_depth or old_depth % old_chunks or new_depth % new_chunks:
        raise ValueError(
            f"depth {old_depth} ({old_chunks} chunks) cannot grow to {new_depth} ({new_chunks} chunks): the new "
            "depth must be a multiple of the old, and each depth a multiple of its chunk count"
        )
    factor, old_per, new_per = new_depth // old_depth, old_depth // old_chunks, new_depth // new_chunks

    def block_of(key: str, per: int) -> tuple[int, str] | None:
        parts = key.split(".", 4)
        if parts[0] != "block_chunks" or len(parts) < 5 or parts[2] != "module":
            return None
        return int(parts[1]) * per + int(parts[3]), parts[4]

    def key_of(block: int, rest: str) -> str:
        return f"block_chunks.{block // new_per}.module.{block % new_per}.{rest}"

    out = dict(fresh)
    for key, value in state.items():
        where = block_of(key, old_per)
        target = key if where is None else key_of(where[0] * factor, where[1])
        if target not in fresh:
            raise ValueError(f"{key} (as {target}) is not a key of the grown model")
        if fresh[target].shape != value.shape:
            raise ValueError(
                f"{key}: shape {tuple(value.shape)}, the grown model's {tuple(fresh[target].shape)}"
            )
        out[target] = value
    for key in fresh:
        where = block_of(key, new_per)
        if where is not None and where[0] % factor and where[1].rsplit(".", 1)[0] in _RESIDUAL_OUTPUTS:
            out[key] = torch.zeros_like(fresh[key])
    return out
