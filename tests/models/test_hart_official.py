"""HART against the official code: the `hart_tiny` fixture (tests/models/fixtures/hart_tiny, README "Transformer").

The fixture is the official ``HARTForT2I.autoregressive_infer_cfg`` on CPU at a tiny configuration (random weights,
saved in the release layout), run twice: ``more_smooth`` off and on. Here the same files are loaded through moss's
release loader and generated with the one engine (``seeding="official"``: the batch's one CPU generator, seeded as
the official ``g_seed``), the diffusion head fed the noise the official run drew from the global RNG.
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from moss_models.core import NextScaleGenerator, SamplingConfig
from moss_models.hart import HARTFamily, HARTTextBatch, load_hart_transformer
from moss_models.hart.loading import config_of_release
from moss_models.hart.tokenizer import load_hart_tokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "hart_tiny"
RELEASE = FIXTURE / "llm_release"
DIFFUSION_GLOBAL_SEED = 1234  # outputs_metadata.json["diffusion_global_seed"]


class ReplayedNoise(HARTFamily):
    """The family, its diffusion head fed the official run's noise: the global RNG seeded 1234 drew ``x_T``
    ``(N, C)``, then ``randn_like(x)`` over both CFG halves ``(2N, C)`` at every step, of which the conditional
    half is the one the guided sampler keeps."""

    def diffusion_sample(self, z, cfg, generator):
        rows, c = z.shape[0] // 2, self.config.d_vae
        g = torch.Generator().manual_seed(DIFFUSION_GLOBAL_SEED)
        steps = self.transformer.diffloss.num_steps
        noise = [torch.randn(rows, c, generator=g)]
        noise += [torch.randn(2 * rows, c, generator=g)[:rows] for _ in range(steps - 1)]
        out = self.transformer.diffloss.sample(z, cfg=cfg, noise=noise)
        self.diffusion_outputs.append(out)
        return out


@pytest.fixture(scope="module")
def release():
    tokenizer = load_hart_tokenizer(RELEASE / "tokenizer", norm_groups=2)
    cfg = config_of_release(RELEASE / "llm", "hart_tiny")
    cfg = cfg.with_(vocab_size=tokenizer.config.vocab_size, d_vae=tokenizer.config.z_channels)
    transformer = load_hart_transformer(cfg, RELEASE / "llm" / "ema_model.bin")
    inputs = load_file(FIXTURE / "llm_inputs.safetensors")
    text = HARTTextBatch(inputs["features"], inputs["position_ids"], inputs["mask"].bool())
    return transformer, tokenizer, text, load_file(FIXTURE / "outputs.safetensors")


def _generate(release, more_smooth: bool):
    transformer, tokenizer, text, _ = release
    family = ReplayedNoise(transformer, tokenizer, more_smooth=more_smooth)
    family.diffusion_outputs = []
    sampling = SamplingConfig(cfg=4.5, top_p=0.0, seeding="official")
    result = NextScaleGenerator(family).generate(text, [0, 0], sampling=sampling, keep=("logits",))
    return family, result


@pytest.mark.parametrize("run", ["plain", "smooth"])
def test_generation_equals_the_official_loop(release, run, two_threads, hart_official):
    """Logits (plain run), sampled indices, the diffusion head's output, the final latent and the image: bit for
    bit (within tolerances on CPUs that round otherwise, see ``OfficialOutputs``), with the official sampling
    reproduced by the same CPU generator."""
    ref = release[3]
    family, result = _generate(release, more_smooth=run == "smooth")
    idx = torch.cat([s.indices for s in result.samples], dim=1)
    if run == "plain":
        logits = torch.cat(result.logits, dim=1)
        hart_official.assert_equal(logits, ref["plain_raw_logits"], atol=5e-6)
    assert torch.equal(idx, ref[f"{run}_idx"])
    (diffused,) = family.diffusion_outputs
    n = diffused.shape[0]
    hart_official.assert_equal(diffused, ref[f"{run}_diffusion_out"][:n], atol=5e-6)
    hart_official.assert_equal(result.latent, ref[f"{run}_f_hat"], atol=1e-3)
    hart_official.assert_equal(result.decoded.add(1).mul(0.5), ref[f"{run}_image"], atol=5e-4)
