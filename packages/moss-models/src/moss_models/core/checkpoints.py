"""Loading weights from files users downloaded: safe formats only, keys checked strictly.

* ``.pth``/``.pt``/``.bin`` — ``torch.load(weights_only=True, mmap=True)``: no arbitrary unpickling, and the
  multi-GB release files are memory-mapped instead of read into RAM;
* ``.safetensors`` — one file, or a folder of shards with a ``*.safetensors.index.json`` (the 8B release).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

SHOWN = 8  # how many keys of each kind an error message lists


class CheckpointMismatchError(ValueError):
    """The checkpoint's keys or shapes do not match the model."""


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
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # files written without the zip container cannot be memory-mapped
            obj = torch.load(path, map_location="cpu", weights_only=True)
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
