"""HART's hybrid tokenizer: release key layout, loading, and bit-exact equivalence with the official code.

Equivalence uses ``fixtures/hart_tiny`` (``tokenizer_*``; made by running mit-han-lab/hart@e28a41f on CPU, see
its README): a tiny HARTAutoEncoderWithDisc (V=1024, Cvae=8, ch=4, GroupNorm groups 2) loaded through
:func:`load_hart_tokenizer`, run on two images — the config's 4-scale schedule at 64² and a 6-scale one at 128².
Every comparison is bit for bit on CPU with the fixture's 2 torch threads.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from moss_models.core.checkpoints import CheckpointMismatchError, CheckpointNotFoundError
from moss_models.hart.tokenizer import (
    HART_PATCH_NUMS_1024,
    HARTTokenizer,
    HARTTokenizerConfig,
    load_hart_tokenizer,
)
from moss_models.var.vqvae import phi_index

FIXTURE = Path(__file__).parent / "fixtures" / "hart_tiny"
TOKENIZER_DIR = FIXTURE / "tokenizer_tiny"
MANIFEST = FIXTURE / "tokenizer_hart_0.7b_inferred_keys.txt"
RUNS = {"s4": (1, 2, 3, 4), "s6": (1, 2, 3, 4, 6, 8)}


@pytest.fixture(scope="module")
def tokenizer() -> HARTTokenizer:
    return load_hart_tokenizer(TOKENIZER_DIR, norm_groups=2)


@pytest.fixture(scope="module")
def outputs() -> dict[str, torch.Tensor]:
    return load_file(FIXTURE / "tokenizer_outputs.safetensors")


def _image(outputs, run: str) -> torch.Tensor:
    # the driver's uint8 → [-1, 1] conversion (make_tokenizer_diffusion_fixture.image_from_uint8)
    return outputs[f"{run}_image_uint8"].to(torch.float32).div(127.5).sub(1.0)


def _manifest() -> list[tuple[str, tuple[int, ...]]]:
    entries = []
    for line in MANIFEST.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, _dtype, _kind = line.split("\t")
        entries.append((key, tuple(int(v) for v in shape.strip("()").split(",") if v.strip())))
    return entries


# ---- layout ---------------------------------------------------------------------------------------------------


def test_phi_index_table_of_the_14_scales():
    with torch.device("meta"):
        tok = HARTTokenizer(HARTTokenizerConfig())
    expected = [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3]
    assert [tok.phi_index(si, 14) for si in range(14)] == expected
    assert [phi_index(si, len(HART_PATCH_NUMS_1024), 4) for si in range(14)] == expected


def test_release_keys_shapes_and_order_at_the_0_7b_config():
    """Our state dict is the manifest's ``vae.*`` part in the same order; the only difference is the 22
    discriminator entries (``disc.*``, training only), which the loader drops."""
    with torch.device("meta"):
        tok = HARTTokenizer(HARTTokenizerConfig())
    ours = [(k, tuple(v.shape)) for k, v in tok.state_dict().items()]
    release = _manifest()
    assert len(release) == 346
    only_release = [k for k, _ in release if k not in dict(ours)]
    assert only_release == [k for k, _ in release if k.startswith("disc.")]
    assert len(only_release) == 22
    assert ours == [(k, s) for k, s in release if not k.startswith("disc.")]
    assert dict(ours)["vae.quantize.ema_vocab_hit_SV"] == (14, 4096)
    parameters = sum(v.numel() for k, v in tok.state_dict().items() if k != "vae.quantize.ema_vocab_hit_SV")
    assert parameters == 108_948_355  # VAR's 108.95 M codec


# ---- loading --------------------------------------------------------------------------------------------------


def test_fixture_loads_strictly_with_the_discriminator_dropped(tokenizer):
    report = tokenizer.load_report
    assert report.weights_file.name == "model.safetensors"
    assert report.disc_keys_dropped == 6  # the fixture stores 6 of the 22 disc.* entries
    assert report.double_decoder_keys_dropped == 0
    assert report.ema_vocab_hit_loaded
    file = load_file(TOKENIZER_DIR / "model.safetensors")
    assert not any(k.startswith("disc.") for k in tokenizer.state_dict())
    for key, value in tokenizer.state_dict().items():
        assert torch.equal(value, file[key]), key
    assert tokenizer.config == HARTTokenizerConfig.tiny()
    assert not tokenizer.training and not any(p.requires_grad for p in tokenizer.parameters())


def test_pytorch_model_bin_loads_the_same(tokenizer, tmp_path):
    shutil.copy(TOKENIZER_DIR / "config.json", tmp_path / "config.json")
    torch.save(load_file(TOKENIZER_DIR / "model.safetensors"), tmp_path / "pytorch_model.bin")
    other = load_hart_tokenizer(tmp_path, norm_groups=2)
    assert other.load_report.weights_file.name == "pytorch_model.bin"
    for (k, a), (k2, b) in zip(tokenizer.state_dict().items(), other.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)


def _copy_with(tmp_path: Path, state: dict, config: dict | None = None) -> Path:
    cfg = config if config is not None else json.loads((TOKENIZER_DIR / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    save_file(state, str(tmp_path / "model.safetensors"))
    return tmp_path


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    state = load_file(TOKENIZER_DIR / "model.safetensors")
    del state["vae.quant_conv.bias"]
    state["vae.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError, match=r"1 missing keys: vae\.quant_conv\.bias") as err:
        load_hart_tokenizer(_copy_with(tmp_path, state), norm_groups=2)
    assert "1 unexpected keys: vae.extra.weight" in str(err.value)


def test_ema_statistic_of_another_schedule_is_replaced_with_a_warning(tmp_path):
    state = load_file(TOKENIZER_DIR / "model.safetensors")
    state["vae.quantize.ema_vocab_hit_SV"] = torch.ones(10, 1024)
    with pytest.warns(UserWarning, match="ema_vocab_hit_SV has shape"):
        tok = load_hart_tokenizer(_copy_with(tmp_path, state), norm_groups=2)
    assert not tok.load_report.ema_vocab_hit_loaded
    assert torch.equal(tok.vae.quantize.ema_vocab_hit_SV, torch.zeros(4, 1024))


def test_double_decoder_entries_are_dropped(tmp_path):
    state = load_file(TOKENIZER_DIR / "model.safetensors")
    for key in list(state):
        for own, second in (
            ("vae.decoder.", "vae.decoder2."),
            ("vae.post_quant_conv.", "vae.post_quant_conv2."),
        ):
            if key.startswith(own):
                state[second + key[len(own) :]] = state[key].clone()
    config = json.loads((TOKENIZER_DIR / "config.json").read_text()) | {"double_decoder": True}
    tok = load_hart_tokenizer(_copy_with(tmp_path, state, config), norm_groups=2)
    decoder_entries = sum(k.startswith("vae.decoder.") for k in state) + 2
    assert tok.load_report.double_decoder_keys_dropped == decoder_entries


def test_missing_files_are_named(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match=r"config\.json"):
        load_hart_tokenizer(tmp_path)
    shutil.copy(TOKENIZER_DIR / "config.json", tmp_path / "config.json")
    with pytest.raises(CheckpointNotFoundError, match=r"model\.safetensors"):
        load_hart_tokenizer(tmp_path)


# ---- config ---------------------------------------------------------------------------------------------------


def test_config_json_fields():
    d = json.loads((TOKENIZER_DIR / "config.json").read_text())
    cfg = HARTTokenizerConfig.from_json_dict(d, norm_groups=2)
    assert HARTTokenizerConfig.from_json_dict(cfg.to_json_dict(), norm_groups=2) == cfg
    with pytest.raises(ValueError, match=r"\['use_fsq'\]"):
        HARTTokenizerConfig.from_json_dict(d | {"use_fsq": True})
    without_type = {k: v for k, v in d.items() if k != "quantizer_type"}
    with pytest.raises(ValueError, match="quantizer_type='var'"):  # the official default
        HARTTokenizerConfig.from_json_dict(without_type, norm_groups=2)
    with pytest.raises(ValueError, match=r"norm_groups=32; the release uses 32"):
        HARTTokenizerConfig.from_json_dict(d)  # the tiny widths need norm_groups=2
    with pytest.raises(ValueError, match="model_type"):
        HARTTokenizerConfig.from_json_dict(d | {"model_type": "vqgan"})


# ---- equivalence with the official code -------------------------------------------------------------------------


@pytest.mark.parametrize("run", sorted(RUNS))
def test_hybrid_decomposition_matches_official(tokenizer, outputs, run, two_threads):
    """``encode_latent`` = ``quant_conv(encoder(x))``; ``decompose_latent`` = ``f_to_idxBl_and_frest``."""
    latent = tokenizer.encode_latent(_image(outputs, run))
    assert torch.equal(latent, outputs[f"{run}_latent"])
    indices, f_rest = tokenizer.decompose_latent(latent, RUNS[run])
    assert [tuple(i.shape) for i in indices] == [(2, p * p) for p in RUNS[run]]
    assert torch.equal(torch.cat(indices, dim=1), outputs[f"{run}_indices"])
    assert torch.equal(f_rest, outputs[f"{run}_f_rest"])
    if run == "s4":  # the image-level entry point is the composition of the two (one more encoder run)
        indices, f_rest = tokenizer.encode_scales(_image(outputs, run), RUNS[run])
        assert torch.equal(torch.cat(indices, dim=1), outputs[f"{run}_indices"])
        assert torch.equal(f_rest, outputs[f"{run}_f_rest"])


@pytest.mark.parametrize("run", sorted(RUNS))
def test_inference_updates_and_decode_match_official(tokenizer, outputs, run, two_threads):
    """``next_autoregressive_input`` = hybrid ``get_next_autoregressive_input`` at every scale (the last one:
    ``f_hat + h``, no φ, no upsampling), fed as the official loop feeds it; ``decode`` = ``fhat_to_img``."""
    patch_nums = RUNS[run]
    SN, side = len(patch_nums), patch_nums[-1]
    offsets = [0]
    for p in patch_nums:
        offsets.append(offsets[-1] + p * p)
    indices = outputs[f"{run}_indices"]
    f_hat = torch.zeros(2, tokenizer.channels, side, side)
    for si, pn in enumerate(patch_nums):
        if si < SN - 1:
            tokens = tokenizer.codebook[indices[:, offsets[si] : offsets[si + 1]]]
        else:  # the continuous last-scale target stands in for discrete code + diffusion residual
            tokens = outputs[f"{run}_f_rest"].clone()
        f_hat, nxt = tokenizer.next_autoregressive_input(
            si, patch_nums, f_hat, tokenizer.tokens_to_map(tokens, pn)
        )
        assert torch.equal(f_hat, outputs[f"{run}_f_hats"][si]), si
        if si < SN - 1:
            assert torch.equal(nxt, outputs[f"{run}_next_input_{si + 1}"]), si
        else:
            assert nxt is None
    # discrete scales plus the continuous residual reconstruct the latent (up to rounding)
    torch.testing.assert_close(f_hat, outputs[f"{run}_latent"], rtol=0, atol=1e-6)
    assert torch.equal(tokenizer.decode(f_hat), outputs[f"{run}_decoded"])


def test_bad_inputs_are_refused(tokenizer):
    f_hat = torch.zeros(1, 8, 4, 4)
    with pytest.raises(ValueError, match="si=4 is outside"):
        tokenizer.next_autoregressive_input(4, (1, 2, 3, 4), f_hat, torch.zeros(1, 8, 4, 4))
    with pytest.raises(ValueError, match=r"codes of scale 1 must be \(1, 8, 2, 2\)"):
        tokenizer.next_autoregressive_input(1, (1, 2, 3, 4), f_hat, torch.zeros(1, 8, 3, 3))
    with pytest.raises(ValueError, match=r"the latent must be \(B, 8, 3, 3\)"):
        tokenizer.decompose_latent(torch.zeros(1, 8, 4, 4), (1, 2, 3))
