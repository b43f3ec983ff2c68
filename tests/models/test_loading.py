"""Checkpoint files: formats, strict key checks with readable errors, missing files, safe loading."""

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from moss_models.core.checkpoints import CheckpointMismatchError, load_state_dict
from moss_models.infinity import (
    CHECKPOINT_ENV,
    CheckpointNotFoundError,
    InfinityTransformer,
    get_config,
    load_infinity,
    load_transformer,
    load_vae,
    release_paths,
)

from .conftest import FIXTURE


@pytest.fixture(scope="module")
def tiny_state():
    return load_state_dict(FIXTURE / "infinity_tiny.safetensors")


def _assert_same_weights(model, state):
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_plain_pth_state_dict(tmp_path, tiny_state):
    path = tmp_path / "tiny.pth"
    torch.save(tiny_state, path)
    _assert_same_weights(load_transformer("infinity_tiny", path), tiny_state)


def test_sharded_safetensors_with_index(tmp_path, tiny_state):
    folder = tmp_path / "tiny_weights"
    folder.mkdir()
    keys = sorted(tiny_state)
    halves = {
        "model-00001-of-00002.safetensors": keys[: len(keys) // 2],
        "model-00002-of-00002.safetensors": keys[len(keys) // 2 :],
    }
    weight_map = {}
    for shard, names in halves.items():
        save_file({k: tiny_state[k].contiguous() for k in names}, str(folder / shard))
        weight_map.update(dict.fromkeys(names, shard))
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    _assert_same_weights(load_transformer("infinity_tiny", folder), tiny_state)


def test_training_checkpoint_nesting_is_unwrapped(tmp_path, tiny_state):
    path = tmp_path / "ckpt.pth"
    torch.save({"trainer": {"gpt_fsdp": tiny_state}}, path)
    _assert_same_weights(load_transformer("infinity_tiny", path), tiny_state)


def test_vae_under_vae_key_and_raw_conv_names(tmp_path):
    state = torch.load(FIXTURE / "vae_tiny.pth", weights_only=True)["vae"]
    raw = {
        k.replace(".conv.weight", ".weight").replace(".conv.bias", ".bias").replace(".norm.", "."): v
        for k, v in state.items()
    }
    assert raw.keys() != state.keys()
    path = tmp_path / "vae_raw.pth"
    torch.save({"vae": raw, "optimizer": {"step": torch.tensor(3)}}, path)
    vae = load_vae("infinity_tiny", path)
    _assert_same_weights(vae, state)


def test_8b_weights_into_the_2b_config_say_so(tmp_path):
    # An "8B checkpoint" whose tensors are 1-element storages expanded to the real shapes: a few hundred KB.
    with torch.device("meta"):
        big = InfinityTransformer(get_config("infinity_8b"))
    state = {k: torch.zeros(1).expand(v.shape) for k, v in big.state_dict().items()}
    path = tmp_path / "fake_8b.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError) as err:
        load_transformer("infinity_2b", path)
    message = str(err.value)
    assert "looks like infinity_8b weights (width 3584, depth 40), not infinity_2b" in message
    assert "168 unexpected keys: block_chunks.0.module.4.ada_gss" in message
    assert "mis-shaped keys: pos_start: file (1, 1, 3584) vs model (1, 1, 2048)" in message


def test_missing_and_misshaped_keys_are_listed(tmp_path, tiny_state):
    broken = dict(tiny_state)
    del broken["head.weight"]
    broken["lvl_embed.weight"] = torch.zeros(3, 3)
    broken["extra.thing"] = torch.zeros(1)
    path = tmp_path / "broken.safetensors"
    save_file(broken, str(path))
    with pytest.raises(CheckpointMismatchError, match=r"1 missing keys: head\.weight") as err:
        load_transformer("infinity_tiny", path)
    assert "1 unexpected keys: extra.thing" in str(err.value)
    assert "lvl_embed.weight: file (3, 3) vs model (15, 64)" in str(err.value)


def test_missing_release_files_name_each_file_and_the_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv(CHECKPOINT_ENV, str(tmp_path))
    (tmp_path / "infinity_vae_d32reg.pth").write_bytes(b"")
    with pytest.raises(CheckpointNotFoundError) as err:
        release_paths("infinity_2b")
    message = str(err.value)
    assert "2 of 3 are missing" in message
    assert f"infinity_2b_reg.pth (looked for {tmp_path / 'infinity_2b_reg.pth'})" in message
    assert f"flan-t5-xl/ (looked for {tmp_path / 'flan-t5-xl'})" in message
    assert "infinity_vae_d32reg.pth" not in message.split("missing:")[1].split("Download")[0]
    assert f"export {CHECKPOINT_ENV}=" in message
    with pytest.raises(CheckpointNotFoundError):
        load_infinity("infinity_8b", tmp_path)


def test_unknown_names():
    with pytest.raises(ValueError, match=r"unknown Infinity config 'infinity_3b'; choose one of \["):
        get_config("infinity_3b")
    with pytest.raises(ValueError, match="has no release files"):
        release_paths("infinity_tiny")


def test_pickles_are_never_executed(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned > /dev/null",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"x": Exploit()}, f, protocol=2)
    with pytest.raises(pickle.UnpicklingError):
        load_state_dict(path)


def test_unsupported_format(tmp_path):
    path = tmp_path / "weights.npz"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"unsupported checkpoint format '\.npz'"):
        load_state_dict(path)
