"""HART's residual diffusion head: a MAR-style MLP denoiser sampled with a respaced IDDPM.

Written from the math of the official ``DiffLoss`` and its diffusion code (mit-han-lab/hart@e28a41f, MIT:
``hart/modules/diffusion/{diffloss,gaussian_diffusion,respace,__init__}.py``, themselves adapted from MAR and
OpenAI's IDDPM). At the last scale the transformer gives, per token, a condition ``z`` (the last layer's output
plus the embedded discrete code, RMS-normed); the head samples the continuous residual the discrete code missed.

* Network (:class:`SimpleMLPAdaLN`, mounted as ``net`` so the transformer's keys read ``diffloss.net.*``):
  ``y = time_embed(t) + cond_embed(z)``; ``x = input_proj(x)``; ``depth`` residual blocks
  ``x + gate·MLP(LN(x)·(1 + scale) + shift)`` with ``(shift, scale, gate) = adaLN_modulation(y)``; a final
  LayerNorm (no affine) modulated by ``(shift, scale)`` and a Linear to ``2·Cvae`` channels (ε, then the
  learned-range variance interpolation values).
* Process (official ``create_diffusion(num_sampling_steps, noise_schedule="cosine")``): cosine ᾱ over 1000
  steps, respaced to ``num_sampling_steps`` ("8": steps 0, 143, 285, 428, 571, 714, 856, 999), ε-prediction,
  ``LEARNED_RANGE`` variance, ``p_sample_loop`` with ``clip_denoised=True`` (x₀ clamped to [-1, 1]).
* Guidance (official ``forward_with_cfg``): ``z`` holds the conditional rows, then the unconditional ones; both
  halves see the same ``x``; ``ε = (1 + cfg)·ε_c − cfg·ε_u``; the variance values are the conditional rows'.
  As in the official ``DiffLoss.sample``, ``cfg == 1.0`` exactly means *no* guidance.
* The sample is multiplied by ``vae_scale = 0.6`` (training divides the target by it).

The schedule tables are computed once in float64 as the official numpy code does, and cast to float32 (the
official ``_extract_into_tensor`` indexes the float64 table, then ``.float()``) per device on first use; a
sampling step does no host work beyond indexing them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import nn

DIFFUSION_STEPS = 1000  # the training process the head was trained with
VAE_SCALE = 0.6  # official DiffLoss.vae_scale
FREQUENCY_EMBEDDING_SIZE = 256  # official TimestepEmbedder default
MAX_PERIOD = 10000


# --------------------------------------------------------------------------------------------------------------
# Schedule (float64, as the official numpy code)
# --------------------------------------------------------------------------------------------------------------


def space_timesteps(num_timesteps: int, section_counts: str | Sequence[int]) -> list[int]:
    """The kept timesteps (sorted) of an original process of ``num_timesteps`` steps (official
    ``space_timesteps``): ``"8"`` takes 8 evenly strided steps with Python rounding; ``"10,15,20"`` strides each
    third separately; ``"ddimN"`` uses the integer stride that gives exactly N steps."""
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired = int(section_counts[len("ddim") :])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired:
                    return list(range(0, num_timesteps, stride))
            raise ValueError(
                f"num_sampling_steps={section_counts!r}: no integer stride gives exactly {desired} of "
                f"{num_timesteps} steps"
            )
        try:
            section_counts = [int(x) for x in section_counts.split(",")]
        except ValueError:
            raise ValueError(
                f"num_sampling_steps={section_counts!r}: expected comma-separated step counts (e.g. '8') or "
                "'ddimN'"
            ) from None
    counts = [int(c) for c in section_counts]
    if not counts or any(c < 1 for c in counts):
        raise ValueError(f"num_sampling_steps={section_counts!r}: step counts must be positive")
    size_per, extra = divmod(num_timesteps, len(counts))
    start, steps = 0, []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"num_sampling_steps={section_counts!r}: cannot take {count} steps of {size}")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0
        for _ in range(count):
            steps.append(start + round(position))
            position += stride
        start += size
    return sorted(set(steps))


def cosine_alphas_cumprod(num_timesteps: int = DIFFUSION_STEPS, max_beta: float = 0.999) -> list[float]:
    """ᾱ_t of the official cosine schedule: ``β_i = min(1 − ᾱ(t₂)/ᾱ(t₁), 0.999)`` with
    ``ᾱ(t) = cos((t + 0.008)/1.008 · π/2)²``, then the running product of ``1 − β`` (float64, sequential as
    ``np.cumprod``)."""

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    out, running = [], 1.0
    for i in range(num_timesteps):
        beta = min(1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), max_beta)
        running *= 1.0 - beta
        out.append(running)
    return out


def respaced_tables(
    num_sampling_steps: str | Sequence[int], num_timesteps: int = DIFFUSION_STEPS
) -> dict[str, torch.Tensor]:
    """The float64 tables of the respaced process (official ``SpacedDiffusion`` → ``GaussianDiffusion``), indexed
    by the respaced step ``i`` (0 = least noisy): ``timestep_map`` (int64, the original step the network sees),
    ``betas``, ``sqrt_recip_alphas_cumprod``, ``sqrt_recipm1_alphas_cumprod``, ``posterior_log_variance_clipped``
    (the learned-range minimum), ``log_betas`` (its maximum), ``posterior_mean_coef1`` and ``_coef2``."""
    kept = set(space_timesteps(num_timesteps, num_sampling_steps))
    betas, timestep_map, last = [], [], 1.0
    for t, ac in enumerate(cosine_alphas_cumprod(num_timesteps)):
        if t in kept:
            betas.append(1 - ac / last)
            last = ac
            timestep_map.append(t)
    b = torch.tensor(betas, dtype=torch.float64)
    # ᾱ of the respaced process, recomputed from its own betas as the official GaussianDiffusion does (the
    # sequential product, not torch.cumprod, so that the bits are numpy's).
    acs, running = [], 1.0
    for beta in betas:
        running *= 1.0 - beta
        acs.append(running)
    ac = torch.tensor(acs, dtype=torch.float64)
    ac_prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    posterior_variance = b * (1.0 - ac_prev) / (1.0 - ac)
    if len(betas) > 1:
        # log-clipped: the posterior variance is 0 at step 0, so step 1's value stands in for it
        clipped = torch.log(torch.cat([posterior_variance[1:2], posterior_variance[1:]]))
    else:
        clipped = torch.empty(0, dtype=torch.float64)
    return {
        "timestep_map": torch.tensor(timestep_map, dtype=torch.int64),
        "betas": b,
        "sqrt_recip_alphas_cumprod": torch.sqrt(1.0 / ac),
        "sqrt_recipm1_alphas_cumprod": torch.sqrt(1.0 / ac - 1),
        "posterior_log_variance_clipped": clipped,
        "log_betas": torch.log(b),
        "posterior_mean_coef1": b * torch.sqrt(ac_prev) / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * torch.sqrt(1.0 - b) / (1.0 - ac),
    }


def timestep_frequencies(t: torch.Tensor, dim: int = FREQUENCY_EMBEDDING_SIZE) -> torch.Tensor:
    """Sinusoidal embedding ``[cos(t·f), sin(t·f)]`` of ``(N,)`` timesteps, ``f_j = 10000^(−j/half)`` in float32
    (official ``TimestepEmbedder.timestep_embedding``)."""
    half = dim // 2
    freqs = torch.exp(-math.log(MAX_PERIOD) * torch.arange(0, half, dtype=torch.float32) / half).to(t.device)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


# --------------------------------------------------------------------------------------------------------------
# Network (attribute names are the release's state-dict names)
# --------------------------------------------------------------------------------------------------------------


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """``mlp = Linear(256 → W), SiLU, Linear(W → W)`` over the sinusoidal frequencies."""

    def __init__(self, hidden: int, frequency_size: int = FREQUENCY_EMBEDDING_SIZE):
        super().__init__()
        self.frequency_size = frequency_size
        self.mlp = nn.Sequential(nn.Linear(frequency_size, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t_freq: torch.Tensor) -> torch.Tensor:
        """``t_freq``: the frequencies of :func:`timestep_frequencies` (precomputed per sampling step)."""
        return self.mlp(t_freq)


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.in_ln = nn.LayerNorm(channels, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(channels, channels), nn.SiLU(), nn.Linear(channels, channels))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(channels, 3 * channels))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.adaLN_modulation(y).chunk(3, dim=-1)
        return x + gate * self.mlp(_modulate(self.in_ln(x), shift, scale))


class FinalLayer(nn.Module):
    def __init__(self, channels: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(channels, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(channels, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(channels, 2 * channels))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(y).chunk(2, dim=-1)
        return self.linear(_modulate(self.norm_final(x), shift, scale))


class SimpleMLPAdaLN(nn.Module):
    """The denoiser: ``(x (N, Cvae), timestep frequencies, condition embedding) → (N, 2·Cvae)``."""

    def __init__(self, in_channels: int, model_channels: int, out_channels: int, z_channels: int, depth: int):
        super().__init__()
        self.in_channels = in_channels
        self.time_embed = TimestepEmbedder(model_channels)
        self.cond_embed = nn.Linear(z_channels, model_channels)
        self.input_proj = nn.Linear(in_channels, model_channels)
        self.res_blocks = nn.ModuleList(ResBlock(model_channels) for _ in range(depth))
        self.final_layer = FinalLayer(model_channels, out_channels)

    def trunk(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Everything after the conditioning ``y = time_embed(t) + cond_embed(z)``."""
        h = self.input_proj(x)
        for block in self.res_blocks:
            h = block(h, y)
        return self.final_layer(h, y)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The official signature: ``t`` holds (original-process) timesteps, ``c`` the conditions."""
        y = self.time_embed(timestep_frequencies(t, self.time_embed.frequency_size)) + self.cond_embed(c)
        return self.trunk(x, y)


# --------------------------------------------------------------------------------------------------------------
# The head
# --------------------------------------------------------------------------------------------------------------

_TABLE_NAMES = (
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_log_variance_clipped",
    "log_betas",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)


class HARTDiffusionHead(nn.Module):
    """The official ``DiffLoss`` for inference: ``net`` is the denoiser (state-dict keys ``net.*``, i.e.
    ``diffloss.net.*`` in the transformer), :meth:`sample` the respaced IDDPM sampler."""

    def __init__(
        self,
        target_channels: int,
        z_channels: int,
        width: int,
        depth: int,
        num_sampling_steps: str = "8",
        *,
        diffusion_steps: int = DIFFUSION_STEPS,
        vae_scale: float = VAE_SCALE,
        clip_denoised: bool = True,
    ):
        super().__init__()
        for key, value in (
            ("target_channels", target_channels),
            ("z_channels", z_channels),
            ("width", width),
            ("depth", depth),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"HARTDiffusionHead {key}={value!r}: must be a positive int")
        self.in_channels = target_channels
        self.vae_scale = vae_scale
        self.clip_denoised = clip_denoised
        self.num_sampling_steps = str(num_sampling_steps)
        self.net = SimpleMLPAdaLN(target_channels, width, 2 * target_channels, z_channels, depth)
        # Kept out of the state dict and out of Module.to(dtype) (a half-precision copy would lose the
        # schedule): float64 masters here, float32 copies per device in _device_tables. Always on the CPU, so a
        # head built under torch.device("meta") (a model checked before it is allocated) still has its values.
        with torch.device("cpu"):
            self._tables64 = respaced_tables(self.num_sampling_steps, diffusion_steps)
        self._device_cache: dict[torch.device, dict[str, torch.Tensor]] = {}

    @property
    def num_steps(self) -> int:
        """Respaced sampling steps (network evaluations per sample)."""
        return len(self._tables64["timestep_map"])

    @property
    def timestep_map(self) -> list[int]:
        """The original-process timestep of each respaced step (``[0, 143, …, 999]`` for "8")."""
        return self._tables64["timestep_map"].tolist()

    def _device_tables(self, device: torch.device) -> dict[str, torch.Tensor]:
        tables = self._device_cache.get(device)
        if tables is None:
            tables = {name: self._tables64[name].to(device).float() for name in _TABLE_NAMES}
            # The frequencies are computed on the sampling device, as the official computes them per step there
            # (cos/sin kernels differ between devices).
            tables["t_freq"] = timestep_frequencies(
                self._tables64["timestep_map"].to(device), self.net.time_embed.frequency_size
            )
            self._device_cache[device] = tables
        return tables

    def _noise_source(
        self,
        rows: int,
        device: torch.device,
        generator: torch.Generator | None,
        noise: Sequence[torch.Tensor] | None,
    ):
        C, S = self.in_channels, self.num_steps
        if noise is not None:
            draws = list(noise)
            if len(draws) != S:
                raise ValueError(
                    f"noise= must hold {S} tensors (the initial x_T, then one per step t = {S - 1} … 1; the "
                    f"official step-0 draw is multiplied by zero and not taken), got {len(draws)}"
                )
            for i, d in enumerate(draws):
                if not isinstance(d, torch.Tensor) or tuple(d.shape) != (rows, C):
                    got = tuple(d.shape) if isinstance(d, torch.Tensor) else type(d).__name__
                    raise ValueError(f"noise[{i}] must be a ({rows}, {C}) tensor, got {got}")
            return lambda i: draws[i].to(device=device, dtype=torch.float32)
        if generator is None:
            raise ValueError(
                "HARTDiffusionHead.sample needs generator= (a torch.Generator seeded by the caller, on z's device) "
                "or noise=; it never draws from the global RNG"
            )
        if generator.device.type != device.type:
            raise ValueError(f"generator is on {generator.device}, z on {device}; they must share a device")
        return lambda i: torch.randn(rows, C, generator=generator, device=device, dtype=torch.float32)

    @torch.no_grad()
    def sample(
        self,
        z: torch.Tensor,
        *,
        cfg: float | torch.Tensor | None,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        noise: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Sample ``(N, Cvae)`` float32 residuals for ``N`` conditions (official ``DiffLoss.sample``).

        ``cfg``: None — no guidance, ``z`` is ``(N, Cz)`` conditions. A number (or 0-d tensor) — ``z`` is
        ``(2N, Cz)``: the N conditional rows, then the N unconditional ones, and the result is the guided
        conditional half (the official returns ``2N`` rows of which HART keeps the first ``N``); ``cfg == 1.0``
        exactly is the official "no guidance" value and samples the conditional rows unguided. A 1-D tensor of
        ``N`` values guides each row with its own scale (an extension).

        Noise: ``x_T`` and one draw per step ``t ≥ 1`` (N rows each; the official draws the same for both CFG
        halves) come from ``generator`` (seeded by the caller; the global RNG is never touched), or from
        ``noise`` — ``num_steps`` tensors ``(N, Cvae)`` in that order — to reproduce a run exactly.
        """
        if not isinstance(z, torch.Tensor) or not z.dtype.is_floating_point or z.ndim != 2:
            raise ValueError(f"z must be a (rows, z_channels) floating-point tensor, got {_describe(z)}")
        guided, scale = self._guidance(cfg, z.shape[0])
        if isinstance(scale, torch.Tensor):
            scale = scale.to(z.device)
        if guided:
            rows = z.shape[0] // 2
        elif cfg is not None:  # the official cfg == 1.0: the conditional half, unguided
            rows = z.shape[0] // 2
            z = z[:rows]
        else:
            rows = z.shape[0]
        draw = self._noise_source(rows, z.device, generator, noise)
        tables = self._device_tables(z.device)
        net = self.net
        net_dtype = net.input_proj.weight.dtype
        C = self.in_channels
        c_emb = net.cond_embed(z.to(net_dtype))  # constant over the steps
        x = draw(0)
        S = self.num_steps
        for k, i in enumerate(reversed(range(S))):
            t_freq = tables["t_freq"][i].expand(c_emb.shape[0], -1)
            y = net.time_embed(t_freq.to(net_dtype)) + c_emb
            x_in = torch.cat([x, x], dim=0) if guided else x
            out = net.trunk(x_in.to(net_dtype), y)
            if guided:
                # mixed in the network's output dtype (fp16 under the official autocast), then float32 as the
                # official p_mean_variance promotes it against its float32 tables
                eps_c, eps_u = out[:rows, :C], out[rows:, :C]
                eps = (eps_c * (1 + scale) - scale * eps_u).float()
                var_values = out[:rows, C:].float()
            else:
                eps, var_values = out[:, :C].float(), out[:, C:].float()
            # p_mean_variance with LEARNED_RANGE variance and ε-prediction (the official op order)
            frac = (var_values + 1) / 2
            log_variance = (
                frac * tables["log_betas"][i] + (1 - frac) * tables["posterior_log_variance_clipped"][i]
            )
            x0 = tables["sqrt_recip_alphas_cumprod"][i] * x - tables["sqrt_recipm1_alphas_cumprod"][i] * eps
            if self.clip_denoised:
                x0 = x0.clamp(-1, 1)
            mean = tables["posterior_mean_coef1"][i] * x0 + tables["posterior_mean_coef2"][i] * x
            if i == 0:
                x = mean  # no noise at the last step (the official multiplies its draw by zero)
            else:
                x = mean + torch.exp(0.5 * log_variance) * draw(k + 1) * temperature
        return x * self.vae_scale

    @staticmethod
    def _guidance(cfg: float | torch.Tensor | None, rows: int) -> tuple[bool, float | torch.Tensor]:
        if cfg is None:
            return False, 0.0
        if isinstance(cfg, torch.Tensor) and cfg.ndim == 1:
            if rows % 2 or cfg.shape[0] != rows // 2:
                raise ValueError(
                    f"a per-row cfg needs z with 2N rows and N values; got z with {rows} rows, cfg "
                    f"{tuple(cfg.shape)}"
                )
            return True, cfg.float().unsqueeze(1)
        if isinstance(cfg, torch.Tensor):
            if cfg.ndim != 0:
                raise ValueError(f"cfg must be a number, a 0-d or a 1-d tensor, got shape {tuple(cfg.shape)}")
            cfg = cfg.item()
        if isinstance(cfg, bool) or not isinstance(cfg, (int, float)) or not math.isfinite(cfg):
            raise ValueError(f"cfg={cfg!r}: must be a finite number, a tensor, or None (no guidance)")
        if rows % 2:
            raise ValueError(
                f"with cfg={cfg} z must hold 2N rows (conditional, then unconditional); got {rows}"
            )
        if cfg == 1.0:
            warnings.warn(
                "cfg=1.0 disables guidance in the official DiffLoss.sample (it tests `cfg == 1.0`); reproduced: "
                "the conditional rows are sampled unguided",
                stacklevel=3,
            )
            return False, 0.0
        return True, float(cfg)


def _describe(z: object) -> str:
    if isinstance(z, torch.Tensor):
        return f"{z.dtype} tensor of shape {tuple(z.shape)}"
    return type(z).__name__
