"""VAR's multi-scale residual VQVAE: released keys, equivalence with the official code, input checks, loading.

Equivalence uses ``fixtures/var_tiny`` (made by running the official FoundationVision/VAR code; see its README):
a tiny VQVAE (V=64, ch=4, GroupNorm groups=2, the release's 10-scale 256² schedule and φ layout), loaded here
through :func:`load_vqvae`. Every comparison is bit for bit on CPU with the fixture's 2 torch threads (only the
decoder depends on the thread count). Tensors the fixture keeps only as sha256 are compared by checksum.
"""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from moss_models.core.checkpoints import (
    CHECKPOINT_ENV,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    UnsafeCheckpointError,
)
from moss_models.var import (
    PATCH_NUMS_512,
    VQVAE_RELEASE_FILE,
    MultiScaleVQVAE,
    get_vqvae_config,
    load_vqvae,
    phi_index,
    vqvae_release_path,
)

KEYS = Path(__file__).parent / "keys" / "var_vqvae_ch160v4096z32.txt"
FIXTURE = Path(__file__).parent / "fixtures" / "var_tiny"
TINY = get_vqvae_config(vocab_size=64, ch=4, norm_groups=2)


def _manifest() -> dict[str, tuple[int, ...]]:
    entries = {}
    for line in KEYS.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, _dtype, _kind = line.split("\t")
        entries[key] = tuple(int(v) for v in shape.strip("()").split(",") if v.strip())
    return entries


def _sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().cpu().numpy().tobytes()).hexdigest()


# ---- released layout ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("resolution", [256, 512])
def test_release_keys_shapes_and_order(resolution):
    with torch.device("meta"):
        vae = MultiScaleVQVAE(get_vqvae_config(resolution=resolution))
    shapes = {k: tuple(v.shape) for k, v in vae.state_dict().items()}
    manifest = _manifest()
    assert shapes == manifest
    assert list(shapes) == list(manifest)  # same order as the official module tree
    assert sum(p.numel() for p in vae.parameters()) == 108_948_355
    assert [k for k, _ in vae.named_buffers()] == ["quantize.ema_vocab_hit_SV"]


def test_schedules_and_phi_table():
    assert get_vqvae_config().patch_nums == (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    assert get_vqvae_config(resolution=512).patch_nums == PATCH_NUMS_512 == (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)
    with torch.device("meta"):
        vae = MultiScaleVQVAE()
    # si = 2 of 10 is a float64 near-tie between φ₀ and φ₁ that the official rule resolves to φ₁.
    assert vae.quantize.phi_indices() == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    assert vae.quantize.phi_indices(14) == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3]  # HART's 14 scales
    assert vae.quantize.phi(2) is vae.quantize.quant_resi.qresi_ls[1]
    # 3 φ over [1/6, 5/6]: si = 3 of 10 (1/3) is again a near-tie, resolved to φ₀ (numpy's argmin agrees).
    assert [phi_index(si, 10, 3) for si in range(10)] == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert vae.config.resolution == 256 and get_vqvae_config(resolution=512).resolution == 512


def test_phi_sharing_layouts():
    small = {"vocab_size": 8, "ch": 32, "z_channels": 4}
    unshared = MultiScaleVQVAE(get_vqvae_config(share_quant_resi=0, **small))
    shared = MultiScaleVQVAE(get_vqvae_config(share_quant_resi=1, **small))
    assert {k for k in unshared.state_dict() if "quant_resi" in k} == {
        f"quantize.quant_resi.{i}.{p}" for i in range(10) for p in ("weight", "bias")
    }
    assert {k for k in shared.state_dict() if "quant_resi" in k} == {
        "quantize.quant_resi.qresi.weight",
        "quantize.quant_resi.qresi.bias",
    }
    assert unshared.quantize.phi_indices() == list(range(10))
    assert shared.quantize.phi_indices() == [0] * 10


# ---- equivalence with the official code (fixture) --------------------------------------------------------------


@pytest.fixture(scope="module")
def fixture_data():
    meta = json.loads((FIXTURE / "metadata.json").read_text())
    kwargs = meta["vqvae_constructor_kwargs"]
    for name in ("vocab_size", "z_channels", "ch", "share_quant_resi", "using_znorm", "quant_resi", "beta"):
        assert getattr(TINY, name) == kwargs[name], name
    assert (
        list(TINY.patch_nums) == kwargs["v_patch_nums"] and TINY.norm_groups == meta["vqvae_norm_num_groups"]
    )
    return load_file(FIXTURE / "inputs.safetensors"), load_file(FIXTURE / "outputs.safetensors"), meta


@pytest.fixture(scope="module")
def tiny_vae():
    return load_vqvae(FIXTURE / "vae_tiny.pth", config=TINY)


def _per_scale(flat: torch.Tensor, patch_nums) -> list[torch.Tensor]:
    out, start = [], 0
    for pn in patch_nums:
        out.append(flat[:, start : start + pn * pn])
        start += pn * pn
    return out


def test_fixture_weights_load_strictly(tiny_vae):
    state = torch.load(FIXTURE / "vae_tiny.pth", weights_only=True)
    assert list(state) == list(tiny_vae.state_dict())
    for k, v in tiny_vae.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert not tiny_vae.training and not any(p.requires_grad for p in tiny_vae.parameters())


def test_decode_matches_official(tiny_vae, fixture_data, two_threads, var_official):
    _, outputs, meta = fixture_data
    with torch.no_grad():
        images = tiny_vae.decode(outputs["aln_f_hat"].clone())
        var_official.assert_equal(images[0:1], outputs["aln_decoded_img0"], atol=1e-4)
        var_official.assert_checksum(images, meta["not_stored_checksums"]["aln_decoded"])
        for run in ("saln", "aln_smooth"):
            decoded = tiny_vae.decode(outputs[f"{run}_f_hat"].clone())
            var_official.assert_checksum(decoded, meta["not_stored_checksums"][f"{run}_decoded"], run)


def test_teacher_forcing_inputs_match_official(tiny_vae, fixture_data, var_official):
    inputs, outputs, meta = fixture_data
    pns = TINY.patch_nums
    with torch.no_grad():
        both = tiny_vae.teacher_forcing_inputs(_per_scale(outputs["aln_idx"], pns))
        first = tiny_vae.teacher_forcing_inputs(_per_scale(outputs["aln_idx"][0:1], pns))
        saln = tiny_vae.teacher_forcing_inputs(_per_scale(outputs["saln_idx"], pns))
    assert both.dtype == torch.float32 and both.shape == (2, 679, 32)
    # official: bit-exact with the AR inputs at B = 2
    var_official.assert_equal(both, outputs["aln_next_inputs"], atol=1e-5)
    var_official.assert_equal(first, inputs["tf_input_img0"], atol=1e-5)
    var_official.assert_checksum(saln, meta["not_stored_checksums"]["saln_next_inputs"])


@pytest.mark.parametrize("run", ["aln", "saln"])
def test_inference_steps_match_official(tiny_vae, fixture_data, run):
    """The sampled indices of the official runs replayed through ``embed_indices`` + ``next_scale_input``."""
    _, outputs, meta = fixture_data
    pns = TINY.patch_nums
    scales = _per_scale(outputs[f"{run}_idx"], pns)
    f_hat = tiny_vae.quantize.new_fhat(2)
    nexts = []
    with torch.no_grad():
        for si, idx in enumerate(scales):
            f_hat, nxt = tiny_vae.next_scale_input(si, f_hat, tiny_vae.embed_indices(idx))
            if si < len(pns) - 1:
                assert nxt.shape == (2, 32, pns[si + 1], pns[si + 1])
                nexts.append(nxt.view(2, 32, -1).transpose(1, 2))
            else:
                assert nxt is f_hat
        from_indices = tiny_vae.quantize.indices_to_fhat(scales)
    nexts = torch.cat(nexts, dim=1)
    if run == "aln":
        assert torch.equal(nexts, outputs["aln_next_inputs"])
    else:
        assert _sha(nexts) == meta["not_stored_checksums"]["saln_next_inputs"]
    assert torch.equal(f_hat, outputs[f"{run}_f_hat"])
    assert torch.equal(from_indices, outputs[f"{run}_f_hat"])


def test_encoder_indices_match_official(tiny_vae, fixture_data, two_threads, var_official):
    _, outputs, meta = fixture_data
    image = outputs["aln_decoded_img0"]
    with torch.no_grad():
        idx = tiny_vae.images_to_indices(image.clone())
        fhats = tiny_vae.images_to_fhats(image.clone())
        both = tiny_vae.images_to_indices(tiny_vae.decode(outputs["aln_f_hat"].clone()))
    assert [t.shape for t in idx] == [(1, pn * pn) for pn in TINY.patch_nums]
    assert all(t.dtype == torch.int64 for t in idx)
    assert torch.equal(torch.cat(idx, dim=1), outputs["vae_encode_idx_img0"])
    var_official.assert_checksum(fhats[-1], meta["not_stored_checksums"]["vae_encode_img0_f_hat_last"])
    var_official.assert_checksum(torch.cat(both, dim=1), meta["not_stored_checksums"]["vae_encode_idx_B2"])


def test_nearest_code_ties_pick_the_first_index():
    cfg = get_vqvae_config(vocab_size=4, z_channels=4, ch=32, patch_nums=(1, 2))
    q = MultiScaleVQVAE(cfg).quantize
    with torch.no_grad():
        q.embedding.weight.copy_(torch.tensor([[9.0] * 4, [1.0] * 4, [-9.0] * 4, [1.0] * 4]))
    idx = q.latent_to_indices(torch.ones(2, 4, 2, 2))
    assert idx[0].tolist() == [[1], [1]]


# ---- bad input --------------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors(tiny_vae):
    q = tiny_vae.quantize
    idx = [torch.zeros(1, pn * pn, dtype=torch.long) for pn in TINY.patch_nums]
    with pytest.raises(ValueError, match=r"images must be \(B, 3, H, W\) with H and W multiples of 16"):
        tiny_vae.images_to_indices(torch.zeros(1, 3, 250, 256))
    with pytest.raises(ValueError, match=r"images must be \(B, 3"):
        tiny_vae.images_to_indices(torch.zeros(1, 4, 256, 256))
    with pytest.raises(ValueError, match=r"images must be a floating-point tensor, got torch\.uint8"):
        tiny_vae.images_to_indices(torch.zeros(1, 3, 256, 256, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"last scale's grid \(16, 16\) must be the latent's grid \(8, 8\)"):
        tiny_vae.images_to_indices(torch.zeros(1, 3, 128, 128))
    with pytest.raises(ValueError, match="latent has 8 channels, the codebook 32"):
        q.latent_to_indices(torch.zeros(1, 8, 16, 16))
    with pytest.raises(ValueError, match="indices of scale 0 must be an integer tensor"):
        tiny_vae.teacher_forcing_inputs([t.float() for t in idx])
    with pytest.raises(ValueError, match=r"indices of scale 3 must be \(B, 16\) for the 4² grid"):
        tiny_vae.teacher_forcing_inputs([*idx[:3], torch.zeros(1, 15, dtype=torch.long), *idx[4:]])
    with pytest.raises(ValueError, match=r"with B=1, got shape \(2, 4\)"):
        tiny_vae.teacher_forcing_inputs([idx[0], torch.zeros(2, 4, dtype=torch.long), *idx[2:]])
    with pytest.raises(ValueError, match="need indices for 10 scales, got 9"):
        q.indices_to_fhat(idx[:9])
    f_hat = q.new_fhat(1)
    with pytest.raises(ValueError, match=r"scale index 10 is outside 0 … 9"):
        tiny_vae.next_scale_input(10, f_hat, torch.zeros(1, 32, 16, 16))
    with pytest.raises(ValueError, match=r"codes of scale 2 must be \(1, 32, 3, 3\), got \(1, 32, 2, 2\)"):
        tiny_vae.next_scale_input(2, f_hat, torch.zeros(1, 32, 2, 2))
    with pytest.raises(ValueError, match=r"f_hat must be \(B, 32, 16, 16\)"):
        tiny_vae.next_scale_input(0, torch.zeros(1, 32, 8, 8), torch.zeros(1, 32, 1, 1))
    with pytest.raises(ValueError, match="h_BChw must be a floating-point tensor"):
        tiny_vae.next_scale_input(0, f_hat, torch.zeros(1, 32, 1, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"cannot be a 3×3 grid"):
        tiny_vae.embed_indices(torch.zeros(1, 8, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="idx_Bl must be an integer tensor"):
        tiny_vae.embed_indices(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="f_hat must have 32 channels"):
        tiny_vae.decode(torch.zeros(1, 3, 16, 16))


def test_bad_configs():
    with pytest.raises(ValueError, match="need at least two positive int grid sizes"):
        get_vqvae_config(patch_nums=(16,))
    with pytest.raises(ValueError, match="must be multiples of norm_groups=32"):
        get_vqvae_config(ch=4)
    with pytest.raises(
        ValueError, match=r"unknown VAR VQVAE config 'var_vqvae_xl'; choose one of \['var_vqvae'\]"
    ):
        get_vqvae_config("var_vqvae_xl")
    with pytest.raises(ValueError, match=r"VAR has schedules for \[256, 512\] px, not 1024"):
        get_vqvae_config(resolution=1024)


# ---- loading ----------------------------------------------------------------------------------------------------


def test_missing_release_file_is_one_paragraph(tmp_path, monkeypatch):
    monkeypatch.setenv(CHECKPOINT_ENV, str(tmp_path))
    with pytest.raises(CheckpointNotFoundError) as err:
        load_vqvae(config=TINY)
    message = str(err.value)
    assert "\n" not in message
    assert f"(looked for {tmp_path / VQVAE_RELEASE_FILE})" in message
    assert "FoundationVision/var" in message and f"export {CHECKPOINT_ENV}=" in message
    with pytest.raises(CheckpointNotFoundError, match=r"looked for .*nowhere\.pth"):
        load_vqvae(tmp_path / "nowhere.pth", config=TINY)


def test_release_name_under_the_checkpoint_root(tmp_path, monkeypatch):
    (tmp_path / VQVAE_RELEASE_FILE).write_bytes((FIXTURE / "vae_tiny.pth").read_bytes())
    monkeypatch.setenv(CHECKPOINT_ENV, str(tmp_path))
    assert vqvae_release_path() == tmp_path / VQVAE_RELEASE_FILE
    vae = load_vqvae(config=TINY)
    assert torch.equal(
        vae.quantize.embedding.weight, load_vqvae(root=tmp_path, config=TINY).quantize.embedding.weight
    )


def test_mismatched_keys_are_listed(tmp_path):
    state = torch.load(FIXTURE / "vae_tiny.pth", weights_only=True)
    del state["quant_conv.bias"]
    state["quantize.extra"] = torch.zeros(1)
    state["quantize.embedding.weight"] = torch.zeros(65, 32)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError) as err:
        load_vqvae(path, config=TINY)
    message = str(err.value)
    assert "1 missing keys: quant_conv.bias" in message
    assert "1 unexpected keys: quantize.extra" in message
    assert "quantize.embedding.weight: file (65, 32) vs model (64, 32)" in message
    with pytest.raises(CheckpointMismatchError, match=r"mis-shaped keys: encoder\.conv_in\.weight"):
        load_vqvae(FIXTURE / "vae_tiny.pth", config=TINY.with_(ch=8))


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "unsafe.pth"
    torch.save({"quant_conv.bias": torch.zeros(32), "note": _NotATensor()}, path)
    with pytest.raises(UnsafeCheckpointError):
        load_vqvae(path, config=TINY)


def test_usage_buffer_of_another_schedule_length_is_replaced(tmp_path):
    """As the official ``VQVAE.load_state_dict``: a (10, V) usage EMA into a 3-scale model gives its own zeros."""
    vae = load_vqvae(FIXTURE / "vae_tiny.pth", config=TINY.with_(patch_nums=(1, 4, 16)))
    assert vae.quantize.ema_vocab_hit_SV.shape == (3, 64)
    assert not vae.quantize.ema_vocab_hit_SV.any()


class _NotATensor:
    pass
