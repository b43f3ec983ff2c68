from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from moss_models.infinity import TextBatch, generator, load_transformer, load_vae

FIXTURE = Path(__file__).parent / "fixtures" / "infinity_tiny"


@pytest.fixture(scope="session")
def fixture_io():
    return load_file(FIXTURE / "inputs.safetensors"), load_file(FIXTURE / "outputs.safetensors")


@pytest.fixture(scope="session")
def tiny_generator():
    """The official-code fixture's weights loaded through the release loading path."""
    transformer = load_transformer("infinity_tiny", FIXTURE / "infinity_tiny.safetensors")
    vae = load_vae("infinity_tiny", FIXTURE / "vae_tiny.pth")
    return generator(transformer, vae)


@pytest.fixture(scope="session")
def fixture_text(fixture_io):
    inputs, _ = fixture_io
    return TextBatch(inputs["kv_compact"], inputs["lens"].tolist(), inputs["cu_seqlens_k"])


@pytest.fixture
def two_threads():
    """The fixture was made with 2 CPU threads; CPU convolutions round differently with other thread counts."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_generator_1024():
    """The fixture's weights with the config allowing 1024² (the peers' fixtures run the official 1M schedule)."""
    from moss_models.infinity import get_config

    config = get_config("infinity_tiny", max_resolution=1024)
    transformer = load_transformer(config, FIXTURE / "infinity_tiny.safetensors")
    vae = load_vae(config, FIXTURE / "vae_tiny.pth")
    return generator(transformer, vae)


@pytest.fixture(scope="session")
def fixture_prompt0(fixture_io):
    """Prompt 0 alone: the peers' official Infinity code runs at batch 1 only."""
    inputs, _ = fixture_io
    n = int(inputs["lens"][0])
    return TextBatch(inputs["kv_compact"][:n], [n], inputs["cu_seqlens_k"][:2])
