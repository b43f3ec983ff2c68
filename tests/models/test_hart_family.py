"""HART as a family of the engine: hart_tiny on CPU, MoSs (identity and k2), the peers' presets, the text encoder,
the key manifest of the release and the release loader's checks."""

from pathlib import Path

import pytest
import torch

import moss_models
from moss_models import FasterVAR, FastVAR, Moss
from moss_models.core import NextScaleGenerator, SamplingConfig, method_by_name
from moss_models.core.checkpoints import CheckpointMismatchError, CheckpointNotFoundError
from moss_models.hart import (
    HARTFamily,
    HARTTextBatch,
    derived_key_names,
    get_hart_config,
    meta_hart_transformer,
    release_paths,
)
from moss_models.hart import presets as hart_presets
from moss_models.hart.config import config_from_llm_json
from moss_models.hart.loading import _drop_derived
from moss_models.hart.text import SYSTEM_PROMPT, WordHashTokenizer, pad_ids

KEYS = Path(__file__).parent / "keys"
SAMPLING = SamplingConfig(cfg=4.5, top_p=0.0, seeding="per_image")


@pytest.fixture(scope="module")
def tiny():
    """hart_tiny (random weights) and a fixed text batch (the random Qwen2 is tested on its own below)."""
    pipe = moss_models.load("hart_tiny", text_encoder=_no_encoder())
    cfg = pipe.family.config
    g = torch.Generator().manual_seed(5)
    feats = torch.randn(2, cfg.context_token, cfg.context_dim, generator=g)
    mask = torch.ones(2, cfg.context_token, dtype=torch.bool)
    mask[1, 3:] = False
    text = HARTTextBatch(feats, torch.cumsum(mask, 1) - 1, mask)
    return pipe, text


class _NoEncoder:
    """Stands in where a test passes precomputed features (building the random Qwen2 takes seconds)."""

    channels = get_hart_config("hart_tiny").context_dim

    def encode(self, prompts, per_image=False):
        raise AssertionError("this test passes HARTTextBatch features")


def _no_encoder():
    return _NoEncoder()


def _run(pipe, text, method, **kw):
    return pipe.generate(text, [3, 4], method=method, sampling=kw.pop("sampling", SAMPLING), **kw)


def test_baseline_generates_and_is_reproducible(tiny):
    pipe, text = tiny
    a = _run(pipe, text, None)
    b = _run(pipe, text, None, decode=False)
    assert a.images.shape == (2, 128, 128, 3) and a.images.dtype == torch.uint8
    assert torch.equal(a.latent, b.latent)
    cfg = pipe.family.config
    # one pass per scale; the first carries the text context in place of the 1×1 scale
    assert a.stats.tokens_per_pass == [pn * pn for pn in cfg.patch_nums]
    depth, heads, hd = cfg.depth, cfg.num_heads, cfg.head_dim
    cached = cfg.context_token + sum(pn * pn for pn in cfg.patch_nums[1:-1])  # the last scale caches nothing
    assert a.stats.kv_cache_bytes == depth * 2 * 4 * heads * cached * hd * 4  # 2 images × CFG rows, fp32


def test_moss_identity_k1_band_100_is_the_baseline(tiny):
    """k=1 with band [100]: every position of the last scale in the packed pass, bit for bit the baseline."""
    pipe, text = tiny
    base = _run(pipe, text, None, decode=False)
    ident = _run(pipe, text, Moss(thresholds=(100.0,)), decode=False)
    assert ident.stats.tokens_per_pass == base.stats.tokens_per_pass
    assert torch.equal(ident.latent, base.latent)
    pipe.family.more_smooth = True
    try:
        smooth_base = _run(pipe, text, None, decode=False)
        assert torch.equal(
            _run(pipe, text, Moss(thresholds=(100.0,)), decode=False).latent, smooth_base.latent
        )
        assert not torch.equal(smooth_base.latent, base.latent)
    finally:
        pipe.family.more_smooth = False


def test_k2_preset_packs_the_last_two_scales(tiny):
    pipe, text = tiny
    k2 = method_by_name("k2", "hart")
    assert k2.thresholds == (80.0, 55.0)
    out = _run(pipe, text, k2, decode=False)
    n = len(pipe.family.config.patch_nums)
    assert out.stats.forward_passes == n - 1  # 6 drafter scales + one packed pass of scales 6 and 7
    packed = out.steps[-1]
    assert packed.tokens.scales == (n - 2, n - 1)
    # the 55–80 % band of 7² at scale 6 and the top 55 % of 8² at scale 7: a part of each grid
    counts = [p.count for p in packed.tokens.parts]
    assert 0 < counts[0] < 49 and 0 < counts[1] < 64 and abs(counts[1] - 0.55 * 64) <= 1
    assert packed.samples.codes.shape[:2] == packed.samples.indices.shape
    assert torch.isfinite(out.latent).all()


def test_refine_diffusion_option_changes_only_the_coarser_refine_scale(tiny):
    pipe, text = tiny
    fam: HARTFamily = pipe.family
    k2 = method_by_name("k2", "hart")
    fam.refine_diffusion = "every_refine_scale"
    try:
        every = _run(pipe, text, k2, decode=False)
    finally:
        fam.refine_diffusion = "last_scale"
    last = _run(pipe, text, k2, decode=False)
    a, b = (
        every.steps[-1].samples.split(every.steps[-1].tokens),
        last.steps[-1].samples.split(last.steps[-1].tokens),
    )
    assert torch.equal(a[0].indices, b[0].indices)  # the same draws
    assert not torch.equal(a[0].codes, b[0].codes)  # the 7² tokens got a diffusion residual
    with pytest.raises(ValueError, match="refine_diffusion"):
        HARTFamily(fam.transformer, fam.tokenizer, refine_diffusion="sometimes")


def test_peer_presets(tiny):
    pipe, text = tiny
    fv = hart_presets.fastvar()
    assert isinstance(fv, FastVAR) and fv.cache_scale == -3 and dict(fv.prune) == {-2: 0.5, -1: 0.75}
    assert fv.skip == () and fv.sublayers == ("sa", "ffn") and fv.layers == (0, 24)
    out = _run(pipe, text, fv, decode=False)
    assert out.stats.forward_passes == len(pipe.family.config.patch_nums)
    fr = hart_presets.fastervar()
    assert isinstance(fr, FasterVAR) and fr.unguided == (-2, -1) and fr.low_rank == (-1,) and fr.skip == ()
    # the converted ratios reproduce the official rank int(ratio·min(4096, 1536)) + 1 at 64² exactly
    ratios = hart_presets.FASTERVAR_RANK_RATIOS["0.96"][-1]
    ranks = [int(r * 4096) + 1 for r in ratios]
    assert ranks == [hart_presets.official_rank(r) for r in hart_presets._OFFICIAL_0_96_SCALE64]
    out = _run(pipe, text, fr, decode=False)
    assert out.steps[-1].step.rows == "uncond" and torch.isfinite(out.latent).all()


def test_release_keys_match_the_inferred_manifest():
    """Meta-device keys of hart_0.7b vs the inferred manifest: equal except the three schedule buffers."""
    manifest = {}
    for line in (KEYS / "hart_0.7b_inferred.txt").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, _dtype, _kind = line.split("\t")
        manifest[key] = tuple(int(v) for v in shape.strip("()").split(",") if v.strip())
    model = meta_hart_transformer("hart_0.7b")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    derived = set(derived_key_names(get_hart_config("hart_0.7b")))
    assert len(derived) == 26 and derived <= set(manifest)
    assert ours == {k: v for k, v in manifest.items() if k not in derived}
    assert sum(p.numel() for p in model.parameters()) == 729_663_552
    # the conditional keys of the config.json switches
    small = get_hart_config("hart_0.7b", depth=2)
    plain = set(meta_hart_transformer(small).state_dict())
    alt = meta_hart_transformer(small.with_(attn_l2_norm=True, use_context_norm=True))
    extra = set(alt.state_dict()) - plain
    assert extra == {"context_norm.weight"} | {f"blocks.{i}.attn.scale_mul_1H11" for i in range(2)}


def test_config_json_switches_are_read_and_unsupported_ones_refused():
    cfg = config_from_llm_json({"depth": 3, "num_heads": 2, "embed_dim": 64, "attn_l2_norm": True}, name="x")
    assert (cfg.depth, cfg.num_heads, cfg.attn_l2_norm) == (3, 2, True)
    with pytest.raises(ValueError, match="attn_type='gpt2'"):
        config_from_llm_json({"attn_type": "gpt2"}, name="x")
    with pytest.raises(ValueError, match="disable_aln=False"):
        config_from_llm_json({"disable_aln": False}, name="x")


def test_derived_buffers_are_checked_and_dropped():
    cfg = get_hart_config("hart_tiny")
    n = cfg.num_tokens
    from moss_models.hart.transformer import level_ids

    state = {
        "lvl_1L": level_ids(cfg),
        "attn_bias_for_masking": torch.zeros(1, 1, n, n),
        "blocks.0.attn.zero_k_bias": torch.zeros(64),
        "head.bias": torch.zeros(3),
    }
    assert set(_drop_derived(state, cfg, "f")) == {"head.bias"}
    bad = dict(state, lvl_1L=level_ids(cfg) + 1)
    with pytest.raises(CheckpointMismatchError, match="lvl_1L"):
        _drop_derived(bad, cfg, "f")


def test_missing_release_files_are_listed_in_one_paragraph(tmp_path):
    with pytest.raises(CheckpointNotFoundError) as err:
        release_paths("hart_0.7b", tmp_path)
    text = str(err.value)
    assert "\n" not in text and "6 of 6 are missing" in text
    for name in ("llm/config.json", "llm/ema_model.bin", "tokenizer/config.json", "tokenizer/model.safetensors",
                 "Qwen2-VL-1.5B-Instruct/config.json", "Qwen2-VL-1.5B-Instruct/tokenizer_config.json"):  # fmt: skip
        assert name in text


def test_text_padding_and_tiny_qwen2():
    assert pad_ids([5, 6, 7], 5, 0, "right") == ([5, 6, 7, 0, 0], False)
    assert pad_ids([5, 6, 7], 5, 0, "left") == ([0, 0, 5, 6, 7], False)
    assert pad_ids([1, 2, 3], 2, 0, "right") == ([1, 2], True)
    tok = WordHashTokenizer(512)
    assert tok("A b")["input_ids"] == tok("a  B")["input_ids"] and all(
        0 < i < 512 for i in tok("x y")["input_ids"]
    )
    assert SYSTEM_PROMPT.startswith("Given a user prompt") and SYSTEM_PROMPT.endswith("User Prompt:\n")
    from moss_models.hart.text import tiny_text_encoder

    cfg = get_hart_config("hart_tiny")
    enc = tiny_text_encoder(cfg.context_dim, cfg.context_token, seed=2)
    batch = enc.encode(["a red fox", "one two three four five six seven eight nine ten"])
    assert batch.features.shape == (2, cfg.context_token, cfg.context_dim)
    assert batch.position_ids[0].tolist() == [0, 1, 2, 2, 2, 2, 2, 2] and batch.truncated == [False, True]
    alone = enc.encode(["a red fox"])  # the prompt's features do not depend on the other prompts
    assert torch.allclose(alone.features[0], batch.features[0], atol=1e-5)
    # the tiny model, called with prompts through this encoder (what tools/run.py model=hart_tiny does)
    pipe = moss_models.load("hart_tiny", text_encoder=enc)
    out = pipe(["a red fox"], method="k2", seed=0, cfg=4.5, top_p=0.0)
    assert out.images[0].size == (128, 128) and isinstance(pipe, NextScaleGenerator)


def test_meta_dry_run_counts_the_context_prefix():
    from moss_models import estimate_kv_cache

    fam = moss_models.load("hart_0.7b", device="meta").family
    assert isinstance(fam.dry_run_family(), HARTFamily)
    base = estimate_kv_cache(fam)
    k2 = estimate_kv_cache(fam, method_by_name("k2", "hart"))
    per_token = 24 * 2 * 2 * 1536 * 2  # layers × (K, V) × CFG rows × width × fp16
    assert base.nbytes == per_token * 5654  # 300 context + Σ pn² of scales 1…12
    assert k2.nbytes == per_token * 3350  # 300 context + Σ pn² of scales 1…11


def test_triton_rope_gives_the_torch_rope_result_bit_for_bit(tiny):
    """attn=cssa_triton: HART's q/k RoPE through the Triton table kernel (interpreted on CPU) rounds exactly as the
    torch reference, so MoSs k2's latent is the same bits, drafter and packed stage alike."""
    from moss_models import AttentionSpec

    pipe, text = tiny
    torch_rope = _run(pipe, text, Moss(thresholds=(80.0, 55.0)), decode=False)
    triton_rope = _run(
        pipe, text, Moss(thresholds=(80.0, 55.0), attention=AttentionSpec(rope_impl="triton")), decode=False
    )
    assert torch.equal(triton_rope.latent, torch_rope.latent)
