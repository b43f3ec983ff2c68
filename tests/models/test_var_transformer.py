"""VAR's transformer: released keys, equivalence with the official code, the MoSs embedding path, input checks.

Equivalence uses ``fixtures/var_tiny`` (made by running the official FoundationVision/VAR code; see its README):
two tiny transformers (per-block AdaLN ``aln`` as d16–d30, shared AdaLN ``saln`` as d36), loaded through
:func:`load_var_transformer`, and their per-scale raw logits of the official CFG loop (4 rows: two labels, then
two null rows). Passes are built here exactly as a generator builds them: one :class:`PassSpec` per scale over a
preallocated :class:`KVCache`, fed the official next-scale inputs. Every comparison is bit for bit on CPU with the
fixture's 2 torch threads.
"""

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from moss_models.core.checkpoints import (
    CHECKPOINT_ENV,
    CheckpointMismatchError,
    CheckpointNotFoundError,
)
from moss_models.core.kv_cache import KVCache
from moss_models.core.pass_spec import PassSpec
from moss_models.var import (
    VAR_CONFIGS,
    get_var_config,
    get_vqvae_config,
    load_var_transformer,
    load_vqvae,
    meta_var_transformer,
    var_release_path,
)

KEYS = Path(__file__).parent / "keys"
FIXTURE = Path(__file__).parent / "fixtures" / "var_tiny"
TINY_SALN = get_var_config("var_tiny", shared_aln=True)
RELEASES = ("var_d16", "var_d20", "var_d24", "var_d30", "var_d36")


def _manifest(name: str) -> tuple[dict[str, tuple[int, ...]], int]:
    """Key → shape in file order, and the header's parameter element count."""
    entries, params = {}, None
    for line in (KEYS / f"{name}.txt").read_text().splitlines():
        if line.startswith("# parameter elements:"):
            params = int(line.split(":")[1].split()[0].replace(",", ""))
        if line.startswith("#") or not line.strip():
            continue
        key, shape, _dtype, _kind = line.split("\t")
        entries[key] = tuple(int(v) for v in shape.strip("()").split(",") if v.strip())
    return entries, params


def _sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().cpu().numpy().tobytes()).hexdigest()


@pytest.fixture(scope="module")
def io():
    return load_file(FIXTURE / "inputs.safetensors"), load_file(FIXTURE / "outputs.safetensors")


@pytest.fixture(scope="module")
def metadata():
    return json.loads((FIXTURE / "metadata.json").read_text())


@pytest.fixture(scope="module")
def aln():
    return load_var_transformer("var_tiny", FIXTURE / "var_tiny_aln.safetensors")


@pytest.fixture(scope="module")
def saln():
    return load_var_transformer(TINY_SALN, FIXTURE / "var_tiny_saln.safetensors")


@pytest.fixture(scope="module")
def vae():
    return load_vqvae(FIXTURE / "vae_tiny.pth", config=get_vqvae_config(vocab_size=64, ch=4, norm_groups=2))


# ---- released layout ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", RELEASES)
def test_release_keys_shapes_order_and_counts(name):
    model = meta_var_transformer(name)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    manifest, params = _manifest(name)
    assert list(shapes.items()) == list(manifest.items())  # names, shapes and the official order
    assert sum(p.numel() for p in model.parameters()) == params


def test_release_configs():
    # §B.1: heads = depth, width = 64·depth; d36 is 512² with shared AdaLN
    assert round(sum(p.numel() for p in meta_var_transformer("var_d16").parameters()) / 1e6, 2) == 310.28
    assert round(sum(p.numel() for p in meta_var_transformer("var_d36").parameters()) / 1e6, 2) == 2353.89
    for name in RELEASES:
        cfg = VAR_CONFIGS[name]
        assert (cfg.num_heads, cfg.embed_dim, cfg.ffn_hidden) == (cfg.depth, 64 * cfg.depth, 256 * cfg.depth)
        assert cfg.release_file == f"{name}.pth" and cfg.block_dtype == torch.float32
        assert cfg.shared_aln == (name == "var_d36") and cfg.resolution == (512 if name == "var_d36" else 256)
    assert VAR_CONFIGS["var_d36"].patch_nums == (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)
    assert VAR_CONFIGS["var_d36"].num_tokens == 2240 and VAR_CONFIGS["var_d16"].num_tokens == 680
    with pytest.raises(ValueError, match="unknown VAR config"):
        get_var_config("var_d12")
    bf16 = meta_var_transformer(get_var_config("var_d16", block_dtype=torch.bfloat16)).cast_blocks()
    dtypes = {k: v.dtype for k, v in bf16.state_dict().items()}
    assert dtypes["blocks.3.attn.mat_qkv.weight"] == torch.bfloat16
    assert dtypes["head.weight"] == dtypes["pos_1LC"] == dtypes["class_emb.weight"] == torch.float32


# ---- loading --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("config", "file"), [("var_tiny", "aln"), (TINY_SALN, "saln")])
def test_fixture_loads_strictly_without_the_mask(config, file, metadata):
    path = FIXTURE / f"var_tiny_{file}.safetensors"
    stored = load_file(path)
    assert "attn_bias_for_masking" not in stored
    model = load_var_transformer(config, path)
    state = model.state_dict()
    assert set(state) == set(stored) | {"attn_bias_for_masking"}
    assert all(torch.equal(state[k], v) for k, v in stored.items())
    # recomputed exactly as the release saves it
    assert (
        _sha(state["attn_bias_for_masking"])
        == metadata["not_stored_checksums"][f"{file}_attn_bias_for_masking"]
    )
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_schedule_buffers_are_checked(tmp_path):
    stored = load_file(FIXTURE / "var_tiny_aln.safetensors")
    bad = dict(stored, lvl_1L=stored["lvl_1L"].flip(1).contiguous())
    save_file(bad, tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointMismatchError, match=r"lvl_1L .* differs from the one the schedule"):
        load_var_transformer("var_tiny", tmp_path / "bad.safetensors")
    mask = torch.zeros(1, 1, 680, 680)
    save_file(dict(stored, attn_bias_for_masking=mask), tmp_path / "mask.safetensors")
    with pytest.raises(CheckpointMismatchError, match="attn_bias_for_masking"):
        load_var_transformer("var_tiny", tmp_path / "mask.safetensors")
    # lvl_1L is required like any other key; the error lists the differing keys
    save_file({k: v for k, v in stored.items() if k != "lvl_1L"}, tmp_path / "nolvl.safetensors")
    with pytest.raises(CheckpointMismatchError, match="1 missing keys: lvl_1L"):
        load_var_transformer("var_tiny", tmp_path / "nolvl.safetensors")
    with pytest.raises(CheckpointMismatchError, match=r"missing keys: shared_ada_lin\.1\.weight"):
        load_var_transformer(TINY_SALN, FIXTURE / "var_tiny_aln.safetensors")


def test_missing_release_file_is_one_paragraph(tmp_path, monkeypatch):
    monkeypatch.setenv(CHECKPOINT_ENV, str(tmp_path))
    with pytest.raises(CheckpointNotFoundError) as err:
        load_var_transformer("var_d30")
    message = str(err.value)
    assert "\n" not in message
    assert "var_d30.pth" in message and str(tmp_path / "var_d30.pth") in message and CHECKPOINT_ENV in message
    with pytest.raises(CheckpointNotFoundError, match=r"var_d36\.pth"):
        var_release_path("var_d36")
    with pytest.raises(CheckpointNotFoundError, match=re.escape(str(tmp_path / "nowhere.pth"))):
        load_var_transformer("var_tiny", tmp_path / "nowhere.pth")


# ---- equivalence with the official code -----------------------------------------------------------------------


def _official_layout(features: torch.Tensor) -> torch.Tensor:
    """``(B, l, Cvae)`` features in the layout the official loop passes to ``word_embed``: a channel-major
    ``(B, Cvae, l)`` map transposed (CPU GEMMs round a transposed operand differently)."""
    return features.transpose(1, 2).contiguous().transpose(1, 2)


def _pass(si: int, pn: int, cache: KVCache | None, append: bool) -> PassSpec:
    """The PassSpec a generator builds for scale ``si`` in full."""
    flat = torch.arange(pn * pn)
    return PassSpec(
        torch.full((pn * pn,), si), flat // pn, flat % pn, scales=(si,), cache=cache, append=append
    )


def _cached_cfg_run(model, labels, next_inputs, *, last_appends: bool) -> torch.Tensor:
    """The official CFG loop's raw logits ``(2B, L, V)``, scale by scale over a KV cache."""
    cfg = model.config
    ctx = model.prepare(labels, guidance=True)
    cache = KVCache(
        cfg.depth, ctx.batch_size, cfg.num_heads, cfg.head_dim, cfg.num_tokens, torch.float32, "cpu"
    )
    begins, outs = cfg.scale_begins, []
    for si, pn in enumerate(cfg.patch_nums):
        append = last_appends or si < cfg.num_scales - 1
        spec = _pass(si, pn, cache, append)
        if si == 0:
            x = model.start_tokens(ctx)
        else:
            feats = _official_layout(next_inputs[:, begins[si] - 1 : begins[si + 1] - 1])
            x = model.embed_tokens(feats, spec.scale_ids, spec.rows * pn + spec.cols).repeat(2, 1, 1)
        outs.append(model.logits(model.run_blocks(x, ctx, spec), ctx.cond))
    assert cache.length == cfg.num_tokens - (0 if last_appends else cfg.patch_nums[-1] ** 2)
    return torch.cat(outs, dim=1)


@torch.no_grad()
def test_aln_teacher_forcing_is_bit_exact(aln, io, two_threads, var_official):
    inputs, outputs = io
    logits = aln.teacher_forced_logits(inputs["labels"][:1], inputs["tf_input_img0"])
    var_official.assert_equal(logits, outputs["aln_tf_logits_img0"], atol=5e-6)


@pytest.mark.parametrize("last_appends", [True, False])
@torch.no_grad()
def test_aln_cached_cfg_passes_are_bit_exact(aln, io, two_threads, last_appends, var_official):
    inputs, outputs = io
    logits = _cached_cfg_run(aln, inputs["labels"], outputs["aln_next_inputs"], last_appends=last_appends)
    var_official.assert_equal(logits, outputs["aln_raw_logits"], atol=5e-6)


@torch.no_grad()
def test_saln_cached_passes_and_teacher_forcing_are_bit_exact(
    saln, vae, io, metadata, two_threads, var_official
):
    inputs, outputs = io
    idx = outputs["saln_idx"]
    begins = saln.config.scale_begins
    scales = [idx[:, begins[i] : begins[i + 1]] for i in range(saln.config.num_scales)]
    # the fixture keeps saln's next inputs as a checksum: our VQVAE rebuilds them bit for bit from its indices
    next_inputs = vae.teacher_forcing_inputs(scales)
    var_official.assert_checksum(next_inputs, metadata["not_stored_checksums"]["saln_next_inputs"])
    logits = _cached_cfg_run(saln, inputs["labels"], next_inputs, last_appends=True)
    var_official.assert_equal(logits, outputs["saln_raw_logits"], atol=5e-6)
    # the fixture ran saln's teacher forcing on the same input as aln's (image 0 of the aln run)
    tf = saln.teacher_forced_logits(inputs["labels"][:1], inputs["tf_input_img0"])
    var_official.assert_checksum(tf, metadata["not_stored_checksums"]["saln_tf_logits_img0"])


@torch.no_grad()
def test_context_rows(aln, io):
    inputs, _ = io
    ctx = aln.prepare(inputs["labels"], guidance=True)
    assert ctx.labels.tolist() == [207, 980, 1000, 1000] and ctx.images == 2
    un = ctx.rows("uncond")
    assert torch.equal(un.cond, aln.class_emb.weight[[1000, 1000]])
    assert torch.equal(un.blocks[1].gamma2, ctx.blocks[1].gamma2[2:])
    assert ctx.rows("cond").batch_size == 2 and not un.has_uncond
    with pytest.raises(ValueError, match="no unconditional rows"):
        aln.prepare(inputs["labels"]).rows("uncond")


# ---- the MoSs path --------------------------------------------------------------------------------------------


@torch.no_grad()
def test_packed_tokens_keep_their_own_level_and_position(aln):
    torch.manual_seed(0)
    begins = aln.config.scale_begins
    # tokens of scales 4 (5×5) and 7 (10×10), interleaved, at per-image positions
    ids = torch.tensor([7, 4, 7, 4, 4])
    flat = torch.tensor([[99, 0, 13, 24, 7], [0, 3, 98, 12, 20]])
    x = torch.randn(2, 5, aln.config.d_vae)
    got = aln.embed_tokens(x, ids, flat)
    for b in range(2):
        for j in range(5):
            s, p = int(ids[j]), int(flat[b, j])
            lvl_pos = aln.lvl_embed.weight[s] + aln.pos_1LC[0, begins[s] + p]
            want = aln.word_embed(x[b, j]) + lvl_pos
            torch.testing.assert_close(got[b, j], want, rtol=0, atol=1e-6)  # a GEMM row vs a GEMV
    # positions shared by every image give the same rows
    shared = aln.embed_tokens(x, ids, flat[0])
    assert torch.equal(shared[0], got[0])


@pytest.mark.parametrize("mode", ["cssa", "sa"])
@torch.no_grad()
def test_packed_pass_of_one_whole_scale_equals_the_plain_pass(aln, io, two_threads, mode, var_official):
    """k=1 with every token of the next scale, as a packed pass with per-image positions, is the plain pass."""
    from moss_models.core.attention import AttentionSpec

    inputs, outputs = io
    cfg, nxt = aln.config, outputs["aln_next_inputs"]
    begins, si = cfg.scale_begins, 6
    pn = cfg.patch_nums[si]
    results = []
    for packed in (False, True):
        ctx = aln.prepare(inputs["labels"], guidance=True)
        cache = KVCache(cfg.depth, 4, cfg.num_heads, cfg.head_dim, cfg.num_tokens, torch.float32, "cpu")
        for s in range(si):
            p = cfg.patch_nums[s]
            spec = _pass(s, p, cache, True)
            x = (
                aln.start_tokens(ctx)
                if s == 0
                else aln.embed_tokens(
                    _official_layout(nxt[:, begins[s] - 1 : begins[s + 1] - 1]),
                    spec.scale_ids,
                    spec.rows * p + spec.cols,
                ).repeat(2, 1, 1)
            )
            aln.run_blocks(x, ctx, spec)
        feats = _official_layout(nxt[:, begins[si] - 1 : begins[si + 1] - 1])
        ids = torch.full((pn * pn,), si)
        if packed:  # the MoSs stage: per-image selections, nothing appended
            flat = torch.arange(pn * pn).expand(2, -1)
            rows, cols = (flat // pn).repeat(2, 1), (flat % pn).repeat(2, 1)
            spec = PassSpec(ids, rows, cols, scales=(si,), cache=cache, attention=AttentionSpec(mode=mode))
        else:
            flat = torch.arange(pn * pn)
            spec = _pass(si, pn, cache, True)
        x = aln.embed_tokens(feats, ids, flat).repeat(2, 1, 1)
        results.append(aln.logits(aln.run_blocks(x, ctx, spec), ctx.cond))
    assert torch.equal(results[0], results[1])
    var_official.assert_equal(
        results[0], outputs["aln_raw_logits"][:, begins[si] : begins[si + 1]], atol=5e-6
    )


# ---- bad input ------------------------------------------------------------------------------------------------


def test_bad_input_is_refused(aln, io):
    inputs, _ = io
    for labels, match in (
        (torch.tensor([3, 1001]), "0 … 999"),
        (torch.tensor([-1]), "0 … 999"),
        (torch.tensor([1.0]), "integer class ids"),
        (torch.tensor([[1, 2]]), "1-D tensor"),
    ):
        with pytest.raises(ValueError, match=match):
            aln.prepare(labels)
    assert aln.prepare(torch.tensor([1000])).labels.tolist() == [1000]  # the null class is allowed
    with pytest.raises(ValueError, match=r"\(B, 679, 32\)"):
        aln.teacher_forced_logits(inputs["labels"][:1], inputs["tf_input_img0"][:, :-1])
    with pytest.raises(ValueError, match="labels must be"):
        aln.teacher_forced_logits(inputs["labels"], inputs["tf_input_img0"])
    ids, flat = torch.zeros(4, dtype=torch.long) + 1, torch.arange(4)
    with pytest.raises(ValueError, match=r"\(B, N, 32\)"):
        aln.embed_tokens(torch.zeros(1, 4, 16), ids, flat)
    with pytest.raises(ValueError, match="own scale grid"):
        aln.embed_tokens(torch.zeros(1, 4, 32), ids, flat + 1)
    with pytest.raises(ValueError, match="flat_positions must be"):
        aln.embed_tokens(torch.zeros(1, 4, 32), ids, flat[:3])
    with pytest.raises(ValueError, match="scale_ids must lie"):
        aln.embed_tokens(torch.zeros(1, 4, 32), ids + 20, flat)
    ctx = aln.prepare(inputs["labels"], guidance=True)
    with pytest.raises(ValueError, match="R=4 rows"):
        aln.run_blocks(torch.zeros(2, 1, 64), ctx, _pass(0, 1, None, False))


@torch.no_grad()
def test_runs_under_bf16_autocast_with_a_bf16_cache(aln, io):
    """The release runs fp32 weights under CUDA autocast (fp16 in the demo); the same code path on CPU with
    bf16: half-precision projections and attention, an fp32 residual stream, a half-precision KV cache."""
    inputs, outputs = io
    cfg = aln.config
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ctx = aln.prepare(inputs["labels"], guidance=True)
        cache = KVCache(cfg.depth, 4, cfg.num_heads, cfg.head_dim, cfg.num_tokens, torch.bfloat16, "cpu")
        outs = []
        for si, pn in enumerate(cfg.patch_nums[:4]):
            spec = _pass(si, pn, cache, True)
            begins = cfg.scale_begins
            x = (
                aln.start_tokens(ctx)
                if si == 0
                else aln.embed_tokens(
                    outputs["aln_next_inputs"][:, begins[si] - 1 : begins[si + 1] - 1],
                    spec.scale_ids,
                    spec.rows * pn + spec.cols,
                ).repeat(2, 1, 1)
            )
            h = aln.run_blocks(x, ctx, spec)
            assert h.dtype == torch.float32
            outs.append(aln.logits(h, ctx.cond))
        tf = aln.teacher_forced_logits(inputs["labels"][:1], inputs["tf_input_img0"])
    assert cache.keys[0].dtype == torch.bfloat16 and cache.length == 30
    ref = outputs["aln_raw_logits"][:, :30]
    torch.testing.assert_close(torch.cat(outs, 1), ref, rtol=0, atol=0.1)
    torch.testing.assert_close(tf, outputs["aln_tf_logits_img0"], rtol=0, atol=0.1)
