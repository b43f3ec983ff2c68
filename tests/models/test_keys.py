"""Full-size configs instantiate on the meta device with the released state_dict keys and shapes."""

from pathlib import Path

import pytest
import torch

from moss_models.infinity import BSQVAE, InfinityTransformer, get_config

KEYS = Path(__file__).parent / "keys"


def _manifest(name):
    entries = {}
    for line in (KEYS / f"{name}.txt").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, _dtype, _kind = line.split("\t")
        entries[key] = tuple(int(v) for v in shape.strip("()").split(",") if v.strip())
    return entries


def _shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize(
    ("config", "manifest", "params"),
    [("infinity_2b", "infinity_2b", 2_204_564_032), ("infinity_8b", "infinity_8b", 8_375_791_824)],
)
def test_transformer_keys_and_shapes(config, manifest, params):
    with torch.device("meta"):
        model = InfinityTransformer(get_config(config))
    assert _shapes(model) == _manifest(manifest)
    assert sum(p.numel() for p in model.parameters()) == params


def test_released_blocks_are_bf16_and_the_rest_fp32():
    with torch.device("meta"):
        model = InfinityTransformer(get_config("infinity_2b")).cast_blocks()
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    assert dtypes["block_chunks.3.module.2.sa.mat_qkv.weight"] == torch.bfloat16
    assert dtypes["head.weight"] == dtypes["cfg_uncond"] == dtypes["word_embed.weight"] == torch.float32


@pytest.mark.parametrize(
    ("config", "manifest"),
    [("infinity_2b", "infinity_vae_d32"), ("infinity_8b", "infinity_vae_d14_patchify_8b")],
)
def test_vae_keys_and_shapes(config, manifest):
    with torch.device("meta"):
        vae = BSQVAE(get_config(config).vae)
    assert _shapes(vae) == _manifest(manifest)
