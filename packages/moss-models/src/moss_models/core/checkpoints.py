"""Loading weights from files users downloaded: safe formats only, keys checked strictly.

* ``.pth``/``.pt``/``.bin`` — ``torch.load(weights_only=True, mmap=True)``: no arbitrary unpickling, and the
  multi-GB release files are memory-mapped instead of read into RAM. A file that holds pickled Python objects is
  refused with :class:`UnsafeCheckpointError` (moss never unpickles: unpickling runs arbitrary code); an empty,
  truncated or foreign file with :class:`UnreadableCheckpointError`;
* ``.safetensors`` — one file, or a folder of shards with a ``*.safetensors.index.json`` (the 8B release).
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

SHOWN = 8  # how many keys of each kind an error message lists
CHECKPOINT_ENV = "MOSS_CHECKPOINTS"  # where every family looks for release files unless given a folder


class CheckpointNotFoundError(FileNotFoundError):
    """Some release files are missing; the message names each one and where it was looked for."""


def checkpoint_root(root: str | Path | None = None) -> Path:
    """``root`` if given, else ``$MOSS_CHECKPOINTS``, else ``./checkpoints``."""
    return Path(root or os.environ.get(CHECKPOINT_ENV) or "checkpoints").expanduser()


class CheckpointMismatchError(ValueError):
    """The checkpoint's keys or shapes do not match the model."""


class UnsafeCheckpointError(ValueError):
    """The checkpoint holds pickled Python objects, which moss will not unpickle (that can run arbitrary code)."""


class UnreadableCheckpointError(ValueError):
    """The file is not a torch checkpoint moss can read: empty, truncated, corrupt or not from ``torch.save``."""


def _unsafe_message(path: Path, err: pickle.UnpicklingError) -> str:
    # torch names the refused global ("GLOBAL __main__.Foo was not an allowed global", "unsupported GLOBAL
    # posix.system"); its advice (retry with the unsafe loader, or allow-list the class) is deliberately not passed on.
    found = re.search(r"GLOBAL ([\w.]+)", str(err))
    what = f" (the first one torch refused: {found.group(1)})" if found else ""
    target = path.with_suffix(".safetensors")
    recipe = (
        'python -c "import torch, safetensors.torch as st; '
        f"sd = torch.load({str(path)!r}, map_location='cpu', weights_only=False); "
        "st.save_file({k: v.contiguous().clone() for k, v in sd.items() if isinstance(v, torch.Tensor)}, "
        f'{str(target)!r})"'
    )
    return (
        f"checkpoint {path} is not a plain tensor checkpoint: it contains pickled Python objects{what}. moss will "
        "not unpickle it, because unpickling a file can run arbitrary code, and there is no moss setting that "
        "changes this. Use a .safetensors release of these weights if there is one. Only if you trust where this "
        "file came from, convert it once, outside moss, to a safetensors file that holds only its tensors:\n"
        f"    {recipe}\n"
        "(if the weights sit under a key, e.g. sd['model'], save that dict instead) and point moss at "
        f"{target}."
    )


def _torch_load(path: Path) -> object:
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # files written without the zip container cannot be memory-mapped
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "GLOBAL" in str(err):
            raise UnsafeCheckpointError(_unsafe_message(path, err)) from None
        reason = "its bytes are not a pickle that torch.save wrote"
    except EOFError:
        reason = "it ends before its data does"
    except RuntimeError as err:  # a corrupt zip container: torch's first sentence says what is wrong
        reason = str(err).split(". ")[0].strip()
    raise UnreadableCheckpointError(
        f"checkpoint {path} ({path.stat().st_size:,} bytes) is not a torch checkpoint moss can read: {reason}. "
        "It may be empty, truncated by an interrupted download, or not a torch.save file; download it again "
        "or check the path."
    ) from None


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a torch file, a safetensors file or a sharded safetensors folder."""
    path = Path(path)
    if path.is_dir():
        return _load_sharded(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.suffix in (".pth", ".pt", ".bin", ".ckpt"):
        obj = _torch_load(path)
        if not isinstance(obj, Mapping):
            raise CheckpointMismatchError(f"{path} holds a {type(obj).__name__}, not a state dict")
        return dict(obj)
    raise ValueError(
        f"unsupported checkpoint format {path.suffix!r} ({path}); use .pth, .safetensors or a shard folder"
    )


def _load_sharded(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    indexes = sorted(folder.glob("*.safetensors.index.json"))
    if indexes:
        weight_map = json.loads(indexes[0].read_text())["weight_map"]
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise FileNotFoundError(f"{indexes[0]} lists shards that are not in {folder}: {missing}")
    else:
        shards = sorted(p.name for p in folder.glob("*.safetensors"))
        if not shards:
            raise FileNotFoundError(f"{folder} holds no *.safetensors shards and no index")
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        state.update(load_file(str(folder / shard)))
    return state


def compare_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> tuple[list, list, list]:
    """``(missing, unexpected, mis-shaped)`` keys of ``state`` against ``model.state_dict()``."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        (k, tuple(state[k].shape), tuple(expected[k].shape))
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    return missing, unexpected, misshaped


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], what: str, hint: str = "") -> None:
    """Raise :class:`CheckpointMismatchError` listing the first differing keys unless they match exactly."""
    missing, unexpected, misshaped = compare_state_dict(model, state)
    if not (missing or unexpected or misshaped):
        return
    lines = [
        f"{what} does not match the model ({len(state)} keys in the file, {len(model.state_dict())} expected)."
    ]
    if hint:
        lines.append(hint)
    for label, items in (("missing", missing), ("unexpected", unexpected)):
        if items:
            shown = ", ".join(items[:SHOWN]) + (
                f", … (+{len(items) - SHOWN} more)" if len(items) > SHOWN else ""
            )
            lines.append(f"  {len(items)} {label} keys: {shown}")
    if misshaped:
        shown = "; ".join(f"{k}: file {a} vs model {b}" for k, a, b in misshaped[:SHOWN])
        more = f"; … (+{len(misshaped) - SHOWN} more)" if len(misshaped) > SHOWN else ""
        lines.append(f"  {len(misshaped)} mis-shaped keys: {shown}{more}")
    raise CheckpointMismatchError("\n".join(lines))


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], what: str, hint: str = "") -> nn.Module:
    """Strictly check, then load ``state`` (cast to each parameter's dtype, on its device)."""
    check_state_dict(model, state, what, hint)
    model.load_state_dict(state, strict=True)
    return model
