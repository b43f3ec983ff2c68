"""Method presets for HART: the MoSs paper's thresholds, and the peers' released HART settings.

* MoSs: ``k2`` with ``[80, 55]`` ("Implementation Details": "For the HART model, MoSs2 is [80,55]"), coarsest
  refine scale first: at 1024² the packed stage holds 48² (the 55–80 % band) and 64² (the top 55 %).
* FastVAR (csguoh/FastVAR@34cdd65, ``HART/``): cache the sub-layer outputs at 36², prune 50 % of the tokens at 48²
  and 75 % at 64² (``fastvar_utils.py`` L41-54), in all 24 blocks (``is_later_layer=True``), self-attention and FFN
  (HART has no cross-attention), nothing skipped: the diffusion head runs on all 4096 restored tokens.
* FasterVAR (sen-mao/FasterVAR@3183ebb, ``hart/sample_fastervar.py`` and ``hart_transformer_t2i.py``): guidance
  weight 0 at 48² and 64² (``cfg[i] = 0 for i in [-2, -1]``), low-rank tokens block by block at 64² only
  (``low_rank_scales = (64,)``) with ``alpha='0.96'``, nothing skipped. Its rank is ``int(ratio·min(L, C)) + 1``
  with ``L = 4096`` tokens and ``C = 1536`` channels (``min(x.shape[1], x.shape[2])``), where moss's FasterVAR
  computes ``int(ratio'·L) + 1``; :data:`FASTERVAR_RANK_RATIOS` holds ``ratio' = (int(ratio·1536) + 0.5) / 4096``,
  so that moss's rank is the official one exactly — at HART-0.7B's width and 1024² only (on another width or
  resolution the official rank would differ; give ``moss.ranks`` there).
"""

from moss_models.core.peers import FasterVAR, FastVAR
from moss_models.core.presets import register_peer_settings, register_rank_ratios, register_thresholds

THRESHOLDS: dict[str, tuple[float, ...]] = {"k2": (80.0, 55.0)}

#: FasterVAR's released HART table (``hart/hart/utils/rank_ratio.py``, alpha '0.96', scale 64, one per block)
_OFFICIAL_0_96_SCALE64 = (
    0.018744562601806715, 0.023373292425588648, 0.04417770342810599, 0.09879463294091506, 0.1585374671442322,
    0.2074957426329037, 0.2318480559566116, 0.2366069362690658, 0.25318724085591604, 0.26998995816674004,
    0.29325045350214707, 0.32766253193025374, 0.35949184621649616, 0.39399502998667213, 0.40009417110913664,
    0.4096064364911891, 0.4172558145453881, 0.4268221646860662, 0.42552817960536066, 0.3918371348844954,
    0.3481849502073154, 0.2754036400488672, 0.2678144204427658, 0.3102232341181697,
)  # fmt: skip
_OFFICIAL_WIDTH, _LAST_SCALE_TOKENS = 1536, 64 * 64


def official_rank(ratio: float) -> int:
    """FasterVAR's HART rank at 64² for HART-0.7B: ``int(ratio·min(4096, 1536)) + 1``."""
    return int(ratio * min(_LAST_SCALE_TOKENS, _OFFICIAL_WIDTH)) + 1


FASTERVAR_RANK_RATIOS = {
    "0.96": {-1: tuple((int(r * _OFFICIAL_WIDTH) + 0.5) / _LAST_SCALE_TOKENS for r in _OFFICIAL_0_96_SCALE64)}
}


#: FastVAR's and FasterVAR's released HART settings, as their methods take them (conf/moss/<peer>.yaml reads them)
FASTVAR = {
    "prune": ((-2, 0.5), (-1, 0.75)), "cache_scale": -3, "layers": (0, 24), "sublayers": ("sa", "ffn"), "skip": (),
}  # fmt: skip
FASTERVAR = {"unguided": (-2, -1), "low_rank": (-1,), "alpha": "0.96", "skip": ()}


def fastvar() -> FastVAR:
    """FastVAR's released HART setting."""
    return FastVAR(**FASTVAR, name="fastvar")


def fastervar() -> FasterVAR:
    """FasterVAR's released HART setting (ranks from :data:`FASTERVAR_RANK_RATIOS`, registered for ``hart``)."""
    return FasterVAR(**FASTERVAR, name="fastervar")


register_thresholds("hart", THRESHOLDS)
register_rank_ratios("hart", FASTERVAR_RANK_RATIOS)
register_peer_settings("hart", "fastvar", FASTVAR)
register_peer_settings("hart", "fastervar", FASTERVAR)
