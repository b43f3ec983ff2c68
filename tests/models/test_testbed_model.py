"""testbed_random: the testbed architecture generating through the normal path (its own 10-scale 128² schedule on
an Infinity config), its placeholder presets, its vocabulary and its accounting."""

import numpy as np
import pytest
import torch

import moss_models
from moss_eval.quality.shapes import vocabulary
from moss_models import Moss, dry_run
from moss_models.core.presets import preset_thresholds
from moss_models.core.registry import model_entry
from moss_models.infinity import InfinityConfig, get_config, get_schedule
from moss_models.testbed import SHAPES_VOCABULARY, TESTBED, TESTBED_SIDES, make_spec
from moss_models.testbed.presets import SEARCH, UNTUNED

PROMPT = "a red circle on a striped background"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One CPU thread: at the testbed's sizes (width 128, ≤ 256 tokens) every op is tiny, and several threads
    spend far more time synchronising than computing (seconds instead of a tenth per image on shared cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def testbed():
    return moss_models.load("testbed_random")


def test_the_schedule_is_the_testbeds_through_the_family(testbed):
    sched = testbed.family.schedule(128, 1.0)
    assert [h for h, _ in sched.grids] == [w for _, w in sched.grids] == list(TESTBED_SIDES)
    assert [h * w for h, w in sched.grids] == [1, 4, 9, 16, 25, 36, 64, 100, 169, 256]
    assert sched.num_tokens == 680
    assert sched.pixels == (128, 128)  # 16 tokens × 8 pixels (the testbed VAE's downsampling), not × 16
    assert sched.rope_grid == (16, 16)
    assert sched == make_spec().schedule()  # the training schedule is the generation schedule
    # the registry's schedule (tools/run.py checks settings with it before building the model)
    assert model_entry("testbed_random").schedule(128, 1.0).grids == sched.grids


def test_bad_resolution_and_aspect_ratio_are_refused(testbed):
    with pytest.raises(ValueError, match=r"at resolution 128 only"):
        testbed.family.schedule(256, 1.0)
    with pytest.raises(ValueError, match=r"at resolution 128 only"):
        model_entry("testbed_random").schedule("0.06M", 1.0)
    with pytest.raises(ValueError, match=r"square \(aspect_ratio 1 only\)"):
        testbed.family.schedule(128, 0.5)
    with pytest.raises(ValueError, match=r"at resolution 128 only"):
        testbed([PROMPT], resolution=512)


def test_config_refuses_an_inconsistent_own_schedule():
    with pytest.raises(ValueError, match=r"scale_sides=\[2, 4\] must start at 1"):
        TESTBED.with_(scale_sides=(2, 4), max_resolution=32)
    with pytest.raises(ValueError, match=r"max_resolution=256 must be the last scale side 16 × 8"):
        TESTBED.with_(max_resolution=256)
    with pytest.raises(ValueError, match=r"11 scales but num_levels=10"):
        make_spec(tuple(range(1, 12)))


def test_released_configs_keep_the_official_schedules():
    assert all(get_config(n).scale_sides is None for n in ("infinity_2b", "infinity_8b", "infinity_tiny"))
    assert InfinityConfig.__dataclass_fields__["scale_sides"].default is None
    for res in (256, 512, 1024):
        sched = get_schedule(res)
        assert sched.token_stride == 16 and sched.pixels == (res, res)
    assert get_config("infinity_8b").token_stride == 16  # 8× VAE, 2×2 patchify


def test_generates_128_images_baseline_and_k2(testbed):
    base = testbed([PROMPT], method="off", seed=0)
    k2 = testbed([PROMPT], method="k2", seed=0)
    assert base.images[0].size == k2.images[0].size == (128, 128)
    result = testbed.generate([PROMPT], [0], method=Moss.preset("k2", "testbed"))
    assert result.images.shape == (1, 128, 128, 3)
    # k2 drafts the first 8 scales in full, then one packed pass of the last two scales' selected tokens
    assert result.stats.tokens_per_pass[:8] == [1, 4, 9, 16, 25, 36, 64, 100]
    assert len(result.stats.tokens_per_pass) == 9 and result.stats.tokens_per_pass[-1] < 169 + 256
    assert torch.equal(torch.from_numpy(np.array(k2.images[0])), result.images[0])
    # seeded: the same call gives the same image, another seed another one
    again = testbed.generate([PROMPT], [0])
    assert torch.equal(again.images[0], torch.from_numpy(np.array(base.images[0])))
    assert not torch.equal(testbed.generate([PROMPT], [1]).images[0], again.images[0])


def test_moss_k1_band_100_is_the_baseline_exactly(testbed):
    base = testbed.generate([PROMPT, "two blue stars on a plain background"], [3, 4])
    moss = testbed.generate([PROMPT, "two blue stars on a plain background"], [3, 4], method=Moss((100.0,)))
    assert torch.equal(moss.latent, base.latent)
    assert torch.equal(moss.images, base.images)
    assert moss.stats.tokens_per_pass == base.stats.tokens_per_pass


def test_presets_are_the_searched_thresholds():
    """k2…k5 are what tools/search_thresholds.py found on the trained testbed (benchmarks/results/testbed/search-kK.json),
    one descending band per refine scale, each with the record of how it was found. Where the search's answer has
    an empty band (equal neighbours), which a preset may not have, the preset is the best-scoring point of the
    search's trace without one, and SEARCH records the answer beside it."""
    import json
    from pathlib import Path

    assert not UNTUNED and set(SEARCH) == {"k2", "k3", "k4", "k5"}
    results = Path(__file__).parents[2] / "benchmarks" / "results" / "testbed"
    for k in ("k2", "k3", "k4", "k5"):
        bands = preset_thresholds("testbed", k)
        assert len(bands) == int(k[1:]) and list(bands) == sorted(bands, reverse=True), bands
        record = json.loads((results / f"search-{k}.json").read_text())
        assert record["model"] == "testbed" and record["tuned"]
        answer = tuple(record["thresholds"])
        if not record["empty_bands"]:
            assert answer == tuple(bands) and "answer" not in SEARCH[k]
            assert SEARCH[k]["psnr"] == round(record["how"]["score"], 3)
            continue
        strict = [
            t
            for t in record["trace"]
            if all(a > b for a, b in zip(t["thresholds"][:-1], t["thresholds"][1:], strict=True))
        ]
        best = max(strict, key=lambda t: t["score"])
        assert tuple(best["thresholds"]) == tuple(bands) and SEARCH[k]["answer"] == answer, (best, answer)
        assert SEARCH[k]["psnr"] == round(best["score"], 3)


def test_vocabulary_is_the_shapes_one():
    assert list(SHAPES_VOCABULARY) == vocabulary()
    assert len(SHAPES_VOCABULARY) == 32


def test_a_given_vocabulary_and_seeding():
    gen = moss_models.load("testbed_random", vocabulary=["red", "circle"])
    assert gen.family.text_encoder.vocabulary == ("red", "circle")
    a, b = moss_models.load("testbed_random"), moss_models.load("testbed_random")
    for x, y in ((a.transformer, b.transformer), (a.vae, b.vae), (a.text_encoder, b.text_encoder)):
        assert all(
            torch.equal(v, w) for v, w in zip(x.state_dict().values(), y.state_dict().values(), strict=True)
        )
    with pytest.raises(ValueError, match=r"seeded random weights only"):
        moss_models.load("testbed_random", weights="release")
    assert a.text_encoder.layers == 2  # contextual word features by default; text_layers=0: a bag of words
    assert moss_models.load("testbed_random", arch={"text_layers": 0}).text_encoder.layers == 0


def test_meta_device_accounting(testbed):
    # one dry run (a few seconds of meta kernels): it must account for exactly what the real generation does
    meta = moss_models.load("testbed_random", device="meta")
    assert meta.family.name == "testbed"
    k2 = Moss.preset("k2", "testbed")
    run = dry_run(meta, k2, resolution=128, batch_size=1)
    real = testbed.generate([PROMPT], [0], method=k2)
    assert run.tokens_per_pass == real.stats.tokens_per_pass
    assert run.kv_cache_bytes == real.stats.kv_cache_bytes
    assert len(run.flops_per_pass) == len(real.stats.tokens_per_pass) and min(run.flops_per_pass) > 0
