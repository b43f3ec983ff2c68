import contextlib
import hashlib
import warnings
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


@contextlib.contextmanager
def _threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def two_threads():
    """The fixture was made with 2 CPU threads; CPU convolutions round differently with other thread counts."""
    with _threads(2):
        yield


class OfficialOutputs:
    """Compares moss's outputs with a fixture that the official code recorded on another machine.

    The fixtures were recorded on CPU in fp32 with 2 threads, and moss reproduces the official op order, so on a CPU
    whose fp32 kernels round as the recording machine's did every tensor is equal bit for bit, and that is what is
    asserted there. Other CPUs' SIMD paths sum matmul, convolution and attention reductions in another order (seen:
    a Xeon without AVX-512 on 2026-12-02, an AMD EPYC with AVX-512 and no AMX on 2026-12-03): about half the
    elements of a pass differ in their last bit (≤ 1e-6 on logits of size ~2), which a generation loop carries
    into its latents and images (≤ 3e-4), while the sampled indices stay the same. There each tensor must agree
    within the tolerance its test names, chosen about 5× above what those machines showed and far below what a real
    error moves (a wrong mask, embedding, schedule or scale order moves outputs by 1e-2 or more). Checksums of
    tensors the fixture does not store can only be checked bit for bit; elsewhere the stored tensors that depend on
    the same code stand in for them.

    Whether this CPU rounds alike is decided once per fixture by a canary: one cheap output recomputed and compared
    bit for bit. Where it differs, a warning in the test summary says that the comparisons used tolerances.
    """

    def __init__(self, name: str, exact: bool):
        self.name, self.exact = name, exact
        if not exact:
            warnings.warn(
                f"{name}: this CPU rounds fp32 reductions differently from the machine that recorded the fixture; "
                "its outputs are compared within tolerances, not bit for bit",
                stacklevel=2,
            )

    def assert_equal(
        self, actual: torch.Tensor, reference: torch.Tensor, *, atol: float, msg: str = ""
    ) -> None:
        """Bit for bit where this CPU rounds as the recording one; else within ``atol`` (float tensors only)."""
        if self.exact or not reference.is_floating_point():
            assert torch.equal(actual, reference), msg
        else:
            torch.testing.assert_close(actual, reference, rtol=0, atol=atol, msg=msg or None)

    def assert_images(self, actual: torch.Tensor, reference: torch.Tensor) -> None:
        """uint8 images: bit for bit, or elsewhere ±1 level at pixels a rounding boundary split (≤ 0.1 %)."""
        if self.exact:
            assert torch.equal(actual, reference)
            return
        diff = (actual.int() - reference.int()).abs()
        assert diff.max() <= 1 and (diff > 0).float().mean() <= 1e-3, (diff.max(), (diff > 0).float().mean())

    def assert_checksum(self, tensor: torch.Tensor, digest: str, msg: str = "") -> None:
        """A stored SHA-256 of a tensor's bytes: checked where the CPU rounds alike (see the class docstring)."""
        if self.exact:
            assert (
                hashlib.sha256(tensor.detach().contiguous().cpu().numpy().tobytes()).hexdigest() == digest
            ), msg


@pytest.fixture(scope="session")
def var_official() -> OfficialOutputs:
    """``fixtures/var_tiny``; the canary: the aln transformer's teacher-forced logits of image 0."""
    from moss_models.var import load_var_transformer

    folder = Path(__file__).parent / "fixtures" / "var_tiny"
    inputs, outputs = load_file(folder / "inputs.safetensors"), load_file(folder / "outputs.safetensors")
    model = load_var_transformer("var_tiny", folder / "var_tiny_aln.safetensors")
    with torch.no_grad(), _threads(2):
        logits = model.teacher_forced_logits(inputs["labels"][:1], inputs["tf_input_img0"])
    return OfficialOutputs("var_tiny", torch.equal(logits, outputs["aln_tf_logits_img0"]))


HART_TINY = Path(__file__).parent / "fixtures" / "hart_tiny"


@pytest.fixture(scope="session")
def hart_tensors() -> dict[str, torch.Tensor]:
    """The official ``DiffLoss.sample`` runs of ``fixtures/hart_tiny`` (inputs, recorded noise, samples)."""
    return load_file(HART_TINY / "diffusion_tensors.safetensors")


@pytest.fixture(scope="session")
def hart_head():
    """The fixture's diffusion head (the official ``DiffLoss`` at width 32, depth 2, 8 sampling steps)."""
    from moss_models.hart.diffusion import HARTDiffusionHead

    weights = load_file(HART_TINY / "diffusion_weights.safetensors")
    model = HARTDiffusionHead(target_channels=8, z_channels=64, width=32, depth=2, num_sampling_steps="8")
    model.load_state_dict({k.removeprefix("diffloss."): v for k, v in weights.items()}, strict=True)
    return model.eval()


@pytest.fixture(scope="session")
def hart_official(hart_head, hart_tensors) -> OfficialOutputs:
    """``fixtures/hart_tiny``; the canary: the diffusion head's unguided sample with the recorded noise."""
    n = hart_tensors["nocfg_noise_init"].shape[0]
    steps = hart_tensors["nocfg_noise_steps"][:-1]
    noise = [hart_tensors["nocfg_noise_init"]] + [step[:n] for step in steps]
    with torch.no_grad(), _threads(2):
        out = hart_head.sample(hart_tensors["z"][:n], cfg=None, noise=noise)
    return OfficialOutputs("hart_tiny", torch.equal(out, hart_tensors["nocfg_sample"][:n]))


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
