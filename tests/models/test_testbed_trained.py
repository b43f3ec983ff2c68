"""model=testbed: the trained testbed shipped with moss-models. Its export format round-trips through the loader,
bad exports are refused with one message, and the shipped weights draw what the prompts ask for (Shapes-GenEval on
a fixed held-out prompt set) with MoSs k2 close to the full model."""

import json

import pytest
import torch

import moss_models
from moss_eval.quality.shapes import ShapeDetector, evaluation_prompts, score_image, summarize
from moss_models import CheckpointMismatchError, CheckpointNotFoundError
from moss_models.core.registry import DEFAULT_MODEL, model_entry
from moss_models.testbed import (
    CARD_FILE,
    TRAINED_NAME,
    WEIGHTS_DIR,
    export_files,
    load_trained_testbed,
    make_spec,
    random_testbed,
    save_testbed,
    spec_from_record,
    spec_record,
)

PROMPTS = [
    "a blue star above a red circle on a striped background",
    "two purple circles on a noisy background",
]
SHIPPED = all((WEIGHTS_DIR / f).is_file() for f in (CARD_FILE, "vae.safetensors", "transformer.safetensors"))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the testbed's ops are tiny: more threads only synchronise
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A seeded random testbed written as a training export (what tools/train_testbed.py writes)."""
    folder = tmp_path_factory.mktemp("export")
    model = random_testbed(seed=3)
    f = model.family
    save_testbed(folder, make_spec(), f.transformer, f.text_encoder, vae=f.vae, card={"note": "test"})
    return folder, model


def test_spec_record_round_trips():
    spec = make_spec()
    record = json.loads(json.dumps(spec_record(spec)))  # through JSON, as the card stores it
    assert spec_from_record(record) == spec and record["text"] == {"layers": 2, "heads": 2}
    # a card of the first exports, whose word encoder had no contextual layers, has no "text" entry
    del record["text"]
    assert spec_from_record(record).text_layers == 0
    with pytest.raises(ValueError, match="not a testbed spec record"):
        spec_from_record({"config": {}, "vae": {}})


def test_an_export_loads_back_bit_identical(export):
    folder, model = export
    loaded = moss_models.load(TRAINED_NAME, checkpoints=str(folder))
    assert loaded.family.name == "testbed" and loaded.name == TRAINED_NAME
    assert loaded.family.text_encoder.vocabulary == model.family.text_encoder.vocabulary
    for method in ("off", "k2"):
        a = model(PROMPTS, method=method, seed=5)
        b = loaded(PROMPTS, method=method, seed=5)
        assert torch.equal(a.result.images, b.result.images), method
    card = json.loads((folder / CARD_FILE).read_text())
    assert card["note"] == "test" and card["files"]["vae"] == "vae.safetensors"


def test_missing_files_are_named_together(tmp_path, export):
    folder, _ = export
    (tmp_path / CARD_FILE).write_text((folder / CARD_FILE).read_text())
    with pytest.raises(CheckpointNotFoundError) as err:
        export_files(tmp_path)
    message = str(err.value)
    assert all(name in message for name in ("vae.safetensors", "transformer.safetensors", "text.safetensors"))
    assert "tools/train_testbed.py" in message


def test_an_export_of_other_shapes_is_refused(tmp_path, export):
    folder, _ = export
    for f in folder.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    card = json.loads((tmp_path / CARD_FILE).read_text())
    card["config"]["depth"] = 6
    (tmp_path / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(CheckpointMismatchError, match=r"depth=6, the testbed's is 4"):
        load_trained_testbed(tmp_path)
    (tmp_path / CARD_FILE).write_text("{not json")
    with pytest.raises(CheckpointMismatchError, match="cannot be read"):
        load_trained_testbed(tmp_path)


def test_release_weights_refuse_shape_changes(export):
    folder, _ = export
    with pytest.raises(ValueError, match="use weights=random"):
        moss_models.load(TRAINED_NAME, checkpoints=str(folder), arch={"depth": 2})
    # weights=random is the random testbed of the same shapes
    rnd = moss_models.load(TRAINED_NAME, weights="random", seed=3)
    assert torch.equal(
        rnd(PROMPTS[:1], seed=0).result.images,
        random_testbed(seed=3)(PROMPTS[:1], seed=0).result.images,
    )


def test_the_testbed_is_the_default_model():
    assert DEFAULT_MODEL == TRAINED_NAME
    entry = model_entry(DEFAULT_MODEL)
    assert entry.default_weights == "release" and entry.release_paths is export_files


# ---------------------------------------------------------------------------------------------- shipped weights

shipped = pytest.mark.skipif(not SHIPPED, reason="the trained testbed weights are not in this checkout")
# the held-out evaluation set of prompt seed 0 (50 per task), as benchmarks/testbed.sh scores it
N_PROMPTS = 250
# the shipped weights' measured scores on these prompts are 0.78 at moss=off and 0.736 with k2 (model card): the
# floor leaves room for a CPU's different float paths (one image moves the overall score by 0.004)
SHIPPED_FLOOR = 0.72


def shapes_geneval(model, method: str) -> dict:
    prompts = evaluation_prompts(N_PROMPTS, 0)
    detector = ShapeDetector()
    rows = []
    for start in range(0, len(prompts), 25):
        batch = prompts[start : start + 25]
        out = model([p.prompt for p in batch], method=method, seed=start)  # seed start + i
        for p, image in zip(batch, out.result.images.numpy(), strict=True):  # (H, W, 3) uint8 RGB
            ok, _ = score_image(detector.detect(image), p.scene_dict)
            rows.append({"tag": p.tag, "correct": ok})
    return summarize(rows)


@pytest.fixture(scope="module")
def shipped_scores():
    model = moss_models.load()  # the default: the shipped testbed, offline
    assert model.name == TRAINED_NAME and model.default_resolution == 128
    return {method: shapes_geneval(model, method) for method in ("off", "k2")}


@shipped
def test_the_shipped_testbed_reaches_the_issue_16_bar(shipped_scores):
    # issue 16's acceptance: at least 0.6 on held-out prompts at moss=off, and k2 within 0.05 of it; and a
    # regression guard at the shipped weights' measured score (model card): a loader, sampler or method change
    # that degrades the pictures fails here
    full, k2 = shipped_scores["off"], shipped_scores["k2"]
    assert full["images"] == k2["images"] == N_PROMPTS
    assert full["overall"] >= max(0.6, SHIPPED_FLOOR), full
    assert abs(k2["overall"] - full["overall"]) <= 0.05, (full, k2)
