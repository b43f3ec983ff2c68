"""Checkpoint files: formats, strict key checks with readable errors, missing files, safe loading."""

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from moss_models.core.checkpoints import (
    CheckpointMismatchError,
    UnreadableCheckpointError,
    UnsafeCheckpointError,
    load_state_dict,
)
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
    with pytest.raises(UnsafeCheckpointError, match=r"contains pickled Python objects \(.*posix\.system\)"):
        load_state_dict(path)


class Settings:  # an object a training script pickled beside its weights
    lr = 1e-4


def _torch_refusal(path) -> str:
    with pytest.raises(pickle.UnpicklingError) as err:
        torch.load(path, map_location="cpu", weights_only=True)
    return str(err.value)


def test_pickled_objects_get_moss_own_refusal_and_a_conversion_recipe(tmp_path):
    path = tmp_path / "with_objects.pth"
    torch.save({"w": torch.zeros(1), "obj": Settings()}, path)
    with pytest.raises(UnsafeCheckpointError) as err:
        load_state_dict(path)
    message = str(err.value)
    assert (
        isinstance(err.value, ValueError) and err.value.__cause__ is None and err.value.__suppress_context__
    )
    assert (
        f"checkpoint {path} is not a plain tensor checkpoint: it contains pickled Python objects" in message
    )
    assert "test_loading.Settings" in message  # the global torch refused, named
    assert "moss will not unpickle it, because unpickling a file can run arbitrary code" in message
    # the conversion is offered only for a trusted file, and produces a file moss reads
    trusted, recipe = message.split("Only if you trust where this file came from", 1)
    assert "weights_only" not in trusted
    assert f"{tmp_path / 'with_objects.safetensors'}" in recipe and "safetensors" in recipe
    # torch's own advice (retry with the unsafe loader, allow-list the class) is not passed on
    refusal = _torch_refusal(path)
    for torch_hint in ("Re-running `torch.load` with `weights_only` set to `False`", "add_safe_globals"):
        assert torch_hint in refusal and torch_hint not in message
    assert refusal not in message and "pytorch.org" not in message
    exec(recipe.split('python -c "', 1)[1].split('"\n', 1)[0], {})  # the recipe itself, on this trusted file
    assert load_state_dict(tmp_path / "with_objects.safetensors").keys() == {"w"}


def test_corrupt_and_empty_torch_files_are_unreadable_not_unsafe(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"w": torch.zeros(64)}, good)
    cases = {
        "empty.pth": b"",
        "garbage.pth": b"not a checkpoint at all " * 4,
        "truncated.pth": good.read_bytes()[: good.stat().st_size // 2],
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UnreadableCheckpointError) as err:
            load_state_dict(tmp_path / name)
        message = str(err.value)
        assert (
            f"checkpoint {tmp_path / name} ({len(data):,} bytes) is not a torch checkpoint moss can read"
            in message
        )
        assert "weights_only" not in message and "\n" not in message, name
    assert "failed finding central directory" in str(err.value)  # the truncated zip: torch's reason, kept


def test_unsupported_format(tmp_path):
    path = tmp_path / "weights.npz"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"unsupported checkpoint format '\.npz'"):
        load_state_dict(path)
