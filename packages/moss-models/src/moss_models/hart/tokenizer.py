"""HART's hybrid tokenizer: VAR's multi-scale residual VQVAE with a continuous last scale.

Written from the math of the official ``HARTAutoEncoder``/``HARTAutoEncoderWithDisc`` and ``HARTHybridQuantizer``
(mit-han-lab/hart@e28a41f, MIT: ``hart/modules/models/autoencoder/*``). The encoder and decoder are VAR's
(``hart/modules/networks/basic_vae.py`` is VAR's ``models/basic_vae.py`` reformatted), so they are
:mod:`moss_models.var.vqvae`'s :class:`VQEncoder`/:class:`VQDecoder`, and φ is its :class:`PhiConv` picked by the
same tick rule (:func:`phi_index`). What HART changes is the quantiser's use at the scales' ends:

* the last scale is continuous: the inference loop adds the last scale's codes (discrete code plus the diffusion
  head's residual) to ``f_hat`` **without φ and without upsampling** (VAR applies φ there);
* the hybrid decomposition of an image (official ``f_to_idxBl_and_frest``) skips φ at the last scale and returns,
  after the per-scale indices, the residual left *before* the last scale's code is subtracted: the diffusion
  head's training target is that minus ``embedding(idx_last)``.

State dict: the release folder ``<ckpt>/tokenizer`` holds a ``HARTAutoEncoderWithDisc``; its keys are
``vae.encoder.*``, ``vae.decoder.*``, ``vae.quant_conv.*``, ``vae.post_quant_conv.*``,
``vae.quantize.{ema_vocab_hit_SV, quant_resi.qresi_ls.k.*, embedding.weight}`` and the GAN discriminator's
``disc.*``. :class:`HARTTokenizer` has exactly the ``vae.*`` keys, in the official order; the discriminator is a
training-only module and is not built (:func:`load_hart_tokenizer` drops and counts its keys).

Layouts: ``f_hat`` and latents are ``(B, Cvae, H, W)`` at the last scale's grid (64×64 for 1024²); a scale's
indices are ``(B, h·w)`` row-major; token codes are ``(B, l, Cvae)``.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from moss_models.core.checkpoints import (
    CheckpointNotFoundError,
    check_state_dict,
    load_into,
    load_state_dict,
)
from moss_models.var.vqvae import (
    PartiallySharedPhi,
    PerScalePhi,
    PhiConv,
    SharedPhi,
    VQDecoder,
    VQEncoder,
    VQVAEConfig,
)

log = logging.getLogger(__name__)

#: HART's 1024² schedule (14 scales, latent 64×64)
HART_PATCH_NUMS_1024: tuple[int, ...] = (1, 2, 3, 4, 5, 7, 9, 12, 16, 21, 27, 36, 48, 64)
#: the official ``HARTAutoEncoderConfig`` default schedule (VAR's 256²): a config.json without ``v_patch_nums``
OFFICIAL_DEFAULT_V_PATCH_NUMS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)

#: config.json keys written by Hugging Face ``PretrainedConfig`` bookkeeping; no effect on the network
_HF_BOOKKEEPING_KEYS = frozenset(
    {
        "_name_or_path",
        "_commit_hash",
        "_attn_implementation_autoset",
        "architectures",
        "auto_map",
        "model_type",
        "torch_dtype",
        "dtype",
        "transformers_version",
    }
)
#: official fields that only matter for training (or for a quantizer HART does not use); read and ignored
_TRAINING_ONLY_KEYS: dict[str, str] = {
    "beta": "the commitment-loss weight of VQ training",
    "test_mode": "whether the official model is built frozen; moss always builds it frozen",
    "levels": "FSQ levels, read by no quantizer the official code builds",
    "hybrid": "stored by the official config, read nowhere",
    "disable_quant_resi": "read only by the plain 'var' quantizer, and there only in commented-out code",
    "freeze_codebook_for_hybrid": "which parameters train",
}
_MODEL_TYPES = ("hart_autoencoder_with_disc",)
DISC_PREFIX = "disc."
DOUBLE_DECODER_PREFIXES = ("vae.decoder2.", "vae.post_quant_conv2.")
EMA_KEY = "vae.quantize.ema_vocab_hit_SV"


@dataclass(frozen=True)
class HARTTokenizerConfig:
    """The fields of the official ``tokenizer/config.json`` that shape the network.

    The defaults are the inferred ``hart-0.7b-1024px`` tokenizer (hart_var_fastvar.md §A.4: VAR's ch160v4096z32
    codec, the hybrid quantiser, the 14-scale 1024² schedule); :meth:`from_json_dict` fills a field the file omits
    with the *official class default* instead, as ``from_pretrained`` does.
    """

    vocab_size: int = 4096
    z_channels: int = 32  # Cvae
    ch: int = 160
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)  # ×16 downsampling
    dropout: float = 0.0  # inactive: the model is built in eval mode
    # read by training only: the hybrid decomposition always uses L2 (as the official)
    using_znorm: bool = False
    quant_conv_ks: int = 3
    quant_resi: float = 0.5  # φ(h) = (1 − r)·h + r·conv3×3(h)
    share_quant_resi: int = 4  # 4 φ spread over the scales
    default_qresi_counts: int = 0
    # The schedule stored in the tokenizer's config. It only sizes the ``ema_vocab_hit_SV`` buffer: every method
    # here takes the caller's patch_nums (the transformer passes its own, as the official loop does).
    v_patch_nums: tuple[int, ...] = HART_PATCH_NUMS_1024
    quantizer_type: str = "var_hybrid"
    # True: the file also holds vae.decoder2.* / vae.post_quant_conv2.* (dropped by the loader)
    double_decoder: bool = False
    # Not an official field: GroupNorm groups of the codec (the release: 32; tiny test models use fewer).
    norm_groups: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "ch_mult", tuple(int(m) for m in self.ch_mult))
        object.__setattr__(self, "v_patch_nums", tuple(int(p) for p in self.v_patch_nums))
        for key in ("vocab_size", "z_channels", "ch", "quant_conv_ks", "norm_groups"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"HART tokenizer config {key}={value!r}: must be a positive int")
        if self.quantizer_type != "var_hybrid":
            raise ValueError(
                f"HART tokenizer config quantizer_type={self.quantizer_type!r}: only 'var_hybrid' (HART's hybrid "
                "quantizer) is supported; a plain 'var' quantizer is VAR's VQVAE (moss_models.var)"
            )
        widths = sorted({self.ch * m for m in self.ch_mult})
        if any(w % self.norm_groups for w in widths):
            raise ValueError(
                f"HART tokenizer widths {widths} (ch={self.ch} × ch_mult) are not multiples of GroupNorm "
                f"norm_groups={self.norm_groups}; the release uses 32, tiny test models pass fewer "
                "(load_hart_tokenizer(..., norm_groups=2) for tests/models/fixtures/hart_tiny)"
            )
        self.vq_config()  # validates the remaining codec fields (schedule, kernel size)

    def vq_config(self) -> VQVAEConfig:
        """The equivalent :class:`VQVAEConfig` of the shared encoder/decoder/φ building blocks."""
        return VQVAEConfig(
            name="hart_tokenizer",
            vocab_size=self.vocab_size,
            z_channels=self.z_channels,
            ch=self.ch,
            ch_mult=self.ch_mult,
            dropout=self.dropout,
            using_znorm=self.using_znorm,
            quant_conv_ks=self.quant_conv_ks,
            quant_resi=self.quant_resi,
            share_quant_resi=self.share_quant_resi,
            default_qresi_counts=self.default_qresi_counts,
            patch_nums=self.v_patch_nums,
            norm_groups=self.norm_groups,
        )

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @classmethod
    def tiny(cls) -> HARTTokenizerConfig:
        """The official-code fixture's tokenizer (``tests/models/fixtures/hart_tiny/tokenizer_tiny``), matching
        the ``hart_tiny`` transformer: V=1024, Cvae=8, ch=4, GroupNorm groups 2, 4 scales (64² images)."""
        return cls(vocab_size=1024, z_channels=8, ch=4, v_patch_nums=(1, 2, 3, 4), norm_groups=2)

    @classmethod
    def from_json_dict(cls, d: dict, *, norm_groups: int = 32) -> HARTTokenizerConfig:
        """The config of a parsed ``tokenizer/config.json``.

        Fields the file omits take the official ``HARTAutoEncoderConfig`` defaults (note: its default schedule
        is VAR's 10-scale one and its default ``quantizer_type`` is ``'var'``, which is refused). Hugging Face
        bookkeeping keys and the training-only fields (``beta``, ``test_mode``, ``levels``, ``hybrid``,
        ``disable_quant_resi``, ``freeze_codebook_for_hybrid``) are ignored; any other key is an error that
        lists it. ``norm_groups`` is not in the official file (the release: 32).
        """
        if not isinstance(d, dict):
            raise ValueError(f"HART tokenizer config must be a JSON object, got {type(d).__name__}")
        model_type = d.get("model_type", _MODEL_TYPES[0])
        if model_type not in _MODEL_TYPES:
            raise ValueError(
                f"tokenizer config.json has model_type={model_type!r}; supported: {list(_MODEL_TYPES)} "
                "(the released HARTAutoEncoderWithDisc)"
            )
        names = {f.name for f in cls.__dataclass_fields__.values()} - {"norm_groups"}
        unknown = sorted(set(d) - names - _HF_BOOKKEEPING_KEYS - set(_TRAINING_ONLY_KEYS))
        if unknown:
            raise ValueError(
                f"tokenizer config.json has keys this re-implementation does not know: {unknown}; known network "
                f"fields: {sorted(names)}, ignored training-only fields: {sorted(_TRAINING_ONLY_KEYS)}"
            )
        official = dict(
            vocab_size=4096,
            z_channels=32,
            ch=160,
            ch_mult=(1, 1, 2, 2, 4),
            dropout=0.0,
            using_znorm=False,
            quant_conv_ks=3,
            quant_resi=0.5,
            share_quant_resi=4,
            default_qresi_counts=0,
            v_patch_nums=OFFICIAL_DEFAULT_V_PATCH_NUMS,
            quantizer_type="var",
            double_decoder=False,
        )
        values = {k: d.get(k, default) for k, default in official.items()}
        for key in ("ch_mult", "v_patch_nums"):
            if not isinstance(values[key], (list, tuple)):
                raise ValueError(f"tokenizer config.json {key}={values[key]!r}: must be a list of ints")
            if any(isinstance(p, (list, tuple)) for p in values[key]):
                raise ValueError(
                    f"tokenizer config.json {key}={values[key]!r}: only square grids are supported"
                )
        return cls(**values, norm_groups=norm_groups)

    def to_json_dict(self) -> dict:
        """The official field names and values (plus ``model_type``), as a config.json would hold them."""
        d = asdict(self)
        d.pop("norm_groups")
        d["ch_mult"], d["v_patch_nums"] = list(self.ch_mult), list(self.v_patch_nums)
        return {"model_type": _MODEL_TYPES[0], **d}


# --------------------------------------------------------------------------------------------------------------
# Modules (attribute names are the release's state-dict names)
# --------------------------------------------------------------------------------------------------------------


def _phi_or_identity(channels: int, ratio: float) -> nn.Module:
    # The official builds an identity instead of φ when |quant_resi| ≤ 1e-6.
    return PhiConv(channels, ratio) if abs(ratio) > 1e-6 else nn.Identity()


class HybridQuantizer(nn.Module):
    """The official ``quantize`` of a ``var_hybrid`` tokenizer: the ``(V, Cvae)`` codebook ``embedding``, the φ
    table ``quant_resi`` and the training statistic ``ema_vocab_hit_SV`` ``(len(v_patch_nums), V)`` (registered
    because it is in the state dict; inference never reads it)."""

    def __init__(self, cfg: HARTTokenizerConfig):
        super().__init__()
        C, ratio, share = cfg.z_channels, cfg.quant_resi, cfg.share_quant_resi
        if share == 0:
            count = cfg.default_qresi_counts or len(cfg.v_patch_nums)
            self.quant_resi: nn.Module = PerScalePhi([_phi_or_identity(C, ratio) for _ in range(count)])
        elif share == 1:
            self.quant_resi = SharedPhi(_phi_or_identity(C, ratio))
        else:
            self.quant_resi = PartiallySharedPhi([_phi_or_identity(C, ratio) for _ in range(share)])
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(cfg.v_patch_nums), cfg.vocab_size))
        self.embedding = nn.Embedding(cfg.vocab_size, C)

    def nearest(self, z_NC: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code by L2: ``|z|² + |e|² − 2 z·e`` with one fused ``addmm_`` (the official
        computation; its rounding decides near ties), then the first minimum."""
        codebook = self.embedding.weight.detach()
        dist = torch.sum(z_NC.square(), dim=1, keepdim=True) + torch.sum(codebook.square(), dim=1)
        dist.addmm_(z_NC, codebook.T, alpha=-2, beta=1)
        return torch.argmin(dist, dim=1)


class _HARTAutoEncoder(nn.Module):
    """The official ``HARTAutoEncoder`` module tree (the ``vae.`` part of the release's state dict)."""

    def __init__(self, cfg: HARTTokenizerConfig):
        super().__init__()
        vq = cfg.vq_config()
        pad = cfg.quant_conv_ks // 2
        # Registration order = the official one, so state_dict() lists the keys in the release's order.
        self.encoder = VQEncoder(vq)
        self.decoder = VQDecoder(vq)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, cfg.quant_conv_ks, padding=pad)
        self.post_quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, cfg.quant_conv_ks, padding=pad)
        self.quantize = HybridQuantizer(cfg)


def _check_float(name: str, t: torch.Tensor, ndim: int) -> None:
    if not isinstance(t, torch.Tensor) or not t.dtype.is_floating_point:
        what = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name} must be a floating-point tensor, got {what}")
    if t.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")


def _check_patch_nums(patch_nums: Sequence[int]) -> tuple[int, ...]:
    pns = tuple(patch_nums)
    if len(pns) < 2 or any(isinstance(p, bool) or not isinstance(p, int) or p < 1 for p in pns):
        raise ValueError(f"patch_nums={pns}: need at least two positive int grid sizes")
    return pns


@dataclass(frozen=True)
class TokenizerLoadReport:
    """What :func:`load_hart_tokenizer` read, and what it dropped on purpose."""

    weights_file: Path
    disc_keys_dropped: int  # the GAN discriminator's entries (training only)
    double_decoder_keys_dropped: (
        int  # vae.decoder2.* / vae.post_quant_conv2.* (inference decodes with decoder)
    )
    ema_vocab_hit_loaded: bool  # False: absent or of another schedule length; the zero buffer is kept
    notes: list[str] = field(default_factory=list)


class HARTTokenizer(nn.Module):
    """HART's tokenizer for inference: encoder, decoder and the hybrid multi-scale quantiser.

    Built frozen (eval mode, no gradients) like the official ``test_mode`` model: besides being inference-only,
    ``torch.matmul`` folds broadcast products differently when an operand requires grad.
    """

    def __init__(self, config: HARTTokenizerConfig | None = None, *, frozen: bool = True):
        super().__init__()
        self.config = config or HARTTokenizerConfig()
        self.vae = _HARTAutoEncoder(self.config)
        self.load_report: TokenizerLoadReport | None = None
        if frozen:
            self.eval().requires_grad_(False)

    # ---- codebook and φ ------------------------------------------------------------------------------------

    @property
    def codebook(self) -> torch.Tensor:
        """The ``(V, Cvae)`` quantiser embedding (``vae.quantize.embedding.weight``)."""
        return self.vae.quantize.embedding.weight

    @property
    def channels(self) -> int:
        return self.config.z_channels

    def phi_index(self, si: int, num_scales: int) -> int:
        """Which φ of the table scale ``si`` of ``num_scales`` uses (``[0,0,0,1,1,1,1,2,2,2,2,3,3,3]`` for 14)."""
        return self.vae.quantize.quant_resi.index_for(si, num_scales)

    def phi(self, si: int, num_scales: int, h: torch.Tensor) -> torch.Tensor:
        """φ of scale ``si`` (of ``num_scales``) applied to ``h`` ``(B, Cvae, H, W)``."""
        if not 0 <= si < num_scales:
            raise ValueError(f"scale index si={si} is outside 0 … {num_scales - 1}")
        return self.vae.quantize.quant_resi.phi_for(si, num_scales)(h)

    def tokens_to_map(self, h_BlC: torch.Tensor, pn: int) -> torch.Tensor:
        """``(B, pn·pn, Cvae)`` token codes to ``(B, Cvae, pn, pn)`` the way the official loop does it
        (``transpose(1, 2).reshape``: a channels-last view), which the bicubic/φ kernels' rounding depends on."""
        _check_float("h_BlC", h_BlC, 3)
        B, length, C = h_BlC.shape
        if length != pn * pn or self.channels != C:
            raise ValueError(f"h_BlC {tuple(h_BlC.shape)} is not (B, {pn}·{pn}, {self.channels}) token codes")
        return h_BlC.transpose(1, 2).reshape(B, C, pn, pn)

    # ---- inference loop ------------------------------------------------------------------------------------

    def next_autoregressive_input(
        self, si: int, patch_nums: Sequence[int], f_hat: torch.Tensor, h: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One step of the inference loop (official hybrid ``get_next_autoregressive_input``), updating ``f_hat``
        ``(B, Cvae, G, G)`` (``G = patch_nums[-1]``) **in place** with scale ``si``'s codes ``h``
        ``(B, Cvae, pn_si, pn_si)``.

        Before the last scale: ``f_hat += φ_si(bicubic_up(h, G))`` and the second value is ``f_hat``
        area-downsampled to ``(B, Cvae, pn_{si+1}, pn_{si+1})``. At the last scale: ``f_hat += h`` — no φ, no
        upsampling — and the second value is None. Pass ``h`` laid out as :meth:`tokens_to_map` makes it to match
        the official bits.
        """
        pns = _check_patch_nums(patch_nums)
        SN, G = len(pns), pns[-1]
        if not 0 <= si < SN:
            raise ValueError(f"scale index si={si} is outside 0 … {SN - 1} for patch_nums={pns}")
        _check_float("f_hat", f_hat, 4)
        _check_float("h", h, 4)
        B, C = f_hat.shape[:2]
        if tuple(f_hat.shape[1:]) != (self.channels, G, G):
            raise ValueError(f"f_hat must be (B, {self.channels}, {G}, {G}), got {tuple(f_hat.shape)}")
        if tuple(h.shape) != (B, C, pns[si], pns[si]):
            raise ValueError(
                f"codes of scale {si} must be ({B}, {C}, {pns[si]}, {pns[si]}), got {tuple(h.shape)}"
            )
        if si == SN - 1:
            f_hat.add_(h)
            return f_hat, None
        f_hat.add_(self.phi(si, SN, F.interpolate(h, size=(G, G), mode="bicubic")))
        nxt = pns[si + 1]
        return f_hat, F.interpolate(f_hat, size=(nxt, nxt), mode="area")

    def decode(self, f_hat: torch.Tensor) -> torch.Tensor:
        """``decoder(post_quant_conv(f_hat)).clamp(-1, 1)`` (official ``fhat_to_img``): ``(B, Cvae, h, w)`` to
        ``(B, 3, 16h, 16w)`` images in [-1, 1] (the official loop then maps them with ``(x + 1) / 2``)."""
        _check_float("f_hat", f_hat, 4)
        if f_hat.shape[1] != self.channels:
            raise ValueError(f"f_hat must have {self.channels} channels, got shape {tuple(f_hat.shape)}")
        return self.vae.decoder(self.vae.post_quant_conv(f_hat)).clamp_(-1, 1)

    # ---- encoding (teacher forcing / evaluation) -----------------------------------------------------------

    def encode_latent(self, images: torch.Tensor) -> torch.Tensor:
        """``quant_conv(encoder(images))``: ``(B, 3, H, W)`` in [-1, 1] to the ``(B, Cvae, H/16, W/16)`` latent."""
        _check_float("images", images, 4)
        d = self.config.downsample
        if images.shape[1] != 3 or images.shape[2] % d or images.shape[3] % d:
            raise ValueError(
                f"images must be (B, 3, H, W) with H and W multiples of {d}, got {tuple(images.shape)}"
            )
        return self.vae.quant_conv(self.vae.encoder(images))

    @torch.no_grad()
    def encode_scales(
        self, img: torch.Tensor, patch_nums: Sequence[int]
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The hybrid decomposition of ``(B, 3, H, W)`` images in [-1, 1] (official ``img_to_idxBl_and_frest``):
        :meth:`decompose_latent` of :meth:`encode_latent`."""
        return self.decompose_latent(self.encode_latent(img), patch_nums)

    @torch.no_grad()
    def decompose_latent(
        self, f: torch.Tensor, patch_nums: Sequence[int]
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The hybrid decomposition of a ``(B, Cvae, G, G)`` latent (official ``f_to_idxBl_and_frest``).

        Per scale, the residual (area-downsampled, except at the last scale) is snapped to its nearest code, and
        ``bicubic_up(code)`` — through φ except at the last scale — is subtracted. Returns the per-scale
        ``(B, pn²)`` int64 indices (all scales, the last one included) and the continuous residual of the last
        scale *before* its code is subtracted, ``(B, G·G, Cvae)`` token-major (the official layout); the
        diffusion head's target is that minus ``embedding(idx_last)``.
        """
        pns = _check_patch_nums(patch_nums)
        _check_float("latent", f, 4)
        B, C, H, W = f.shape
        if self.channels != C or (pns[-1], pns[-1]) != (H, W):
            raise ValueError(
                f"patch_nums={pns}: the latent must be (B, {self.channels}, {pns[-1]}, {pns[-1]}) (the last grid), "
                f"got {tuple(f.shape)}"
            )
        quant = self.vae.quantize
        SN = len(pns)
        f_rest = f.detach().clone()
        indices: list[torch.Tensor] = []
        rest_before_last = f_rest
        for si, pn in enumerate(pns):
            last = si == SN - 1
            rest = f_rest if last else F.interpolate(f_rest, size=(pn, pn), mode="area")
            idx_N = quant.nearest(rest.permute(0, 2, 3, 1).reshape(-1, C))
            # The official upsamples at the last scale too (to the same size: bicubic at scale 1 copies).
            codes = F.interpolate(
                quant.embedding(idx_N.view(B, pn, pn)).permute(0, 3, 1, 2), size=(H, W), mode="bicubic"
            ).contiguous()
            if last:
                rest_before_last = f_rest.clone()
            else:
                codes = self.phi(si, SN, codes)
            f_rest.sub_(codes)
            indices.append(idx_N.reshape(B, pn * pn))
        return indices, rest_before_last.permute(0, 2, 3, 1).reshape(B, H * W, C)


# --------------------------------------------------------------------------------------------------------------
# Loading <ckpt>/tokenizer
# --------------------------------------------------------------------------------------------------------------

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def load_hart_tokenizer(
    folder: str | Path,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    norm_groups: int = 32,
) -> HARTTokenizer:
    """Build the tokenizer of ``folder/config.json`` and load ``folder/model.safetensors`` (or
    ``pytorch_model.bin``, read with ``torch.load(weights_only=True)``) with a strict key check.

    Dropped on purpose, and counted in ``tokenizer.load_report``: the discriminator's ``disc.*`` entries, and with
    ``double_decoder`` the unused second decoder (``vae.decoder2.*``, ``vae.post_quant_conv2.*``).
    ``vae.quantize.ema_vocab_hit_SV`` (a training statistic inference never reads) is loaded when its shape is
    the config's, else the model's zero buffer is kept with a warning — the official ``load_state_dict`` replaces a
    mis-shaped one the same way. Any other missing, unexpected or mis-shaped key raises
    :class:`~moss_models.core.checkpoints.CheckpointMismatchError` listing them.

    ``device``/``dtype``: where to put the weights and their floating dtype (None: CPU, float32 — what the
    official ``from_pretrained`` builds whatever the file's dtype).
    ``norm_groups`` is not in the official config (the release: 32).
    """
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointNotFoundError(
            f"HART tokenizer config {config_path} does not exist; pass the release's <ckpt>/tokenizer folder "
            "(it holds config.json and model.safetensors or pytorch_model.bin)"
        )
    weights = next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)
    if weights is None:
        present = sorted(p.name for p in folder.iterdir())
        raise CheckpointNotFoundError(
            f"HART tokenizer folder {folder} has none of {list(WEIGHT_FILES)} (it holds {present})"
        )
    config = HARTTokenizerConfig.from_json_dict(json.loads(config_path.read_text()), norm_groups=norm_groups)
    state = load_state_dict(weights)

    disc = [k for k in state if k.startswith(DISC_PREFIX)]
    double = [k for k in state if k.startswith(DOUBLE_DECODER_PREFIXES)] if config.double_decoder else []
    for key in disc + double:
        del state[key]
    with torch.device("meta"):
        tokenizer = HARTTokenizer(config)
    own_ema = tokenizer.vae.quantize.ema_vocab_hit_SV
    notes: list[str] = []
    ema_loaded = EMA_KEY in state and tuple(state[EMA_KEY].shape) == tuple(own_ema.shape)
    if EMA_KEY in state and not ema_loaded:
        notes.append(
            f"{EMA_KEY} has shape {tuple(state[EMA_KEY].shape)}, the config's schedule gives "
            f"{tuple(own_ema.shape)}; the zero buffer is kept (a training statistic inference never reads)"
        )
        warnings.warn(notes[-1], stacklevel=2)
    if not ema_loaded:
        state[EMA_KEY] = torch.zeros(own_ema.shape, dtype=torch.float32)
    what = f"HART tokenizer checkpoint {weights}"
    check_state_dict(tokenizer, state, what)  # on the meta model: a wrong file fails before allocation
    tokenizer = tokenizer.to_empty(device="cpu")
    load_into(tokenizer, state, what)
    tokenizer.to(device=device, dtype=dtype)
    tokenizer.eval().requires_grad_(False)
    tokenizer.load_report = TokenizerLoadReport(
        weights_file=weights,
        disc_keys_dropped=len(disc),
        double_decoder_keys_dropped=len(double),
        ema_vocab_hit_loaded=ema_loaded,
        notes=notes,
    )
    log.info(
        "loaded %s: %d discriminator entries and %d second-decoder entries dropped; ema_vocab_hit_SV %s",
        weights,
        len(disc),
        len(double),
        "loaded" if ema_loaded else "kept at zero",
    )
    return tokenizer
