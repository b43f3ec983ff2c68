"""GenEval: the official rules on fake models with known outputs, the summary, the metadata, and the real
transformers code path (Mask2Former + CLIP) on tiny random models saved to local folders."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from moss_eval.quality.base import EvalInput, EvalResult, MissingWeightsError, check_weights
from moss_eval.quality.geneval import (
    COCO_CLASSES,
    COLORS,
    TASKS,
    Detections,
    GenEvalEvaluator,
    Thresholds,
    class_index_map,
    load_metadata,
    relative_position,
    score_image,
    select_objects,
    summarize_scores,
)
from moss_eval.records import ImageRecord, RunDirectory

DATA = Path(__file__).parents[2] / "packages/moss-eval/src/moss_eval/quality/geneval/data"
PROMPTS = load_metadata()
BY_TEXT = {p.original_prompt: p for p in PROMPTS}
SIZE = (60, 80)  # H, W of the fake images
SCALE = (32, 64)  # the tiny detector's input size (the official 800 px would take seconds on CPU)

# Pure colours the fake classifier names; GenEval's crop background is #999 = (153, 153, 153).
PALETTE = {
    "red": (255, 0, 0),
    "blue": (0, 0, 255),
    "pink": (255, 105, 180),
    "purple": (128, 0, 128),
    "black": (0, 0, 0),
    "green": (0, 160, 0),
}


# ------------------------------------------------------------------------------------------------ fakes


def detections(objects: dict[str, list[tuple[tuple[int, int, int, int], float]]], size=SIZE) -> Detections:
    """Per-class boxes with scores; each mask is the box's rectangle."""
    boxes = [np.zeros((0, 5), np.float32) for _ in COCO_CLASSES]
    masks = [np.zeros((0, *size), bool) for _ in COCO_CLASSES]
    for name, objs in objects.items():
        c = COCO_CLASSES.index(name)
        boxes[c] = np.array([[*box, score] for box, score in objs], np.float32)
        m = np.zeros((len(objs), *size), bool)
        for i, ((x0, y0, x1, y1), _) in enumerate(objs):
            m[i, y0:y1, x0:x1] = True
        masks[c] = m
    return Detections(boxes=boxes, masks=masks)


def painted(regions: list[tuple[tuple[int, int, int, int], str]], size=SIZE) -> Image.Image:
    """A white image with coloured rectangles (x0, y0, x1, y1)."""
    arr = np.full((*size, 3), 255, np.uint8)
    for (x0, y0, x1, y1), color in regions:
        arr[y0:y1, x0:x1] = PALETTE[color]
    return Image.fromarray(arr)


class FakeColors:
    """Names a crop's colour: the palette colour nearest to the mean of its non-background (#999) pixels."""

    def __init__(self):
        self.calls: list[tuple[int, str, tuple[str, ...]]] = []

    def classify(self, crops, classname, colors):
        self.calls.append((len(crops), classname, tuple(colors)))
        out = []
        for crop in crops:
            px = np.asarray(crop.convert("RGB")).reshape(-1, 3).astype(float)
            px = px[np.any(px != 153, axis=1)]
            mean = px.mean(axis=0)
            out.append(min(PALETTE, key=lambda c: np.sum((np.array(PALETTE[c]) - mean) ** 2)))
        return out


class FakeDetector:
    """Returns prepared detections per image, keyed by the image's top-left pixel value (set by the test)."""

    def __init__(self, by_marker: dict[int, Detections]):
        self.by_marker = by_marker

    def detect(self, images):
        return [self.by_marker[int(np.asarray(im)[0, 0, 0])] for im in images]


def score(prompt_text, objects, image=None, classifier=None):
    meta = BY_TEXT[prompt_text].metadata
    return score_image(image or painted([]), detections(objects), meta, classifier or FakeColors())


# ------------------------------------------------------------------------------------------------ metadata


def test_metadata_is_the_official_file():
    assert len(PROMPTS) == 553
    # Tag counts of the official prompts/evaluation_metadata.jsonl (djghosh13/geneval af4902f).
    assert Counter(p.tag for p in PROMPTS) == {
        "single_object": 80, "two_object": 99, "counting": 80, "colors": 94, "position": 100, "color_attr": 100,
    }  # fmt: skip
    lines = (DATA / "evaluation_metadata.jsonl").read_text().splitlines()
    assert [p.metadata for p in PROMPTS] == [json.loads(line) for line in lines]
    assert [p.index for p in PROMPTS] == list(range(553))
    assert all(p.prompt == p.original_prompt == p.metadata["prompt"] and not p.rewritten for p in PROMPTS)
    digest = hashlib.sha256((DATA / "evaluation_metadata.jsonl").read_bytes()).hexdigest()
    assert digest in (DATA / "README.md").read_text()
    assert tuple(dict.fromkeys(p.tag for p in PROMPTS)) == TASKS
    used = {r["class"] for p in PROMPTS for r in p.metadata["include"]}
    assert used <= set(COCO_CLASSES) and len(COCO_CLASSES) == 80
    assert {r["color"] for p in PROMPTS for r in p.metadata["include"] if "color" in r} <= set(COLORS)


def test_rewrite_file_maps_prompts_and_names_a_missing_one(tmp_path):
    rewrites = {p.original_prompt: f"an elaborate scene: {p.original_prompt}" for p in PROMPTS}
    rewrites["some unrelated key"] = "ignored"
    good = tmp_path / "prompt_rewrite_cache.json"
    good.write_text(json.dumps(rewrites))
    loaded = load_metadata(good)
    assert [p.prompt for p in loaded] == [f"an elaborate scene: {p.original_prompt}" for p in PROMPTS]
    assert [p.original_prompt for p in loaded] == [p.original_prompt for p in PROMPTS]
    assert all(p.metadata["prompt"] == p.original_prompt and p.rewritten for p in loaded)

    del rewrites["a photo of two clocks"]
    bad = tmp_path / "partial.json"
    bad.write_text(json.dumps(rewrites))
    with pytest.raises(
        ValueError, match=r"partial\.json: no rewrite for the GenEval prompt 'a photo of two clocks'"
    ):
        load_metadata(bad)
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        load_metadata(tmp_path / "list.json")
    with pytest.raises(FileNotFoundError, match=r"rewrite_file=.*nope\.json"):
        load_metadata(tmp_path / "nope.json")


# ------------------------------------------------------------------------------------------------ rules


def test_single_and_two_object():
    assert score("a photo of a bench", {"bench": [((5, 5, 30, 30), 0.31)]}).correct
    # Strictly above 0.3: a detection at exactly the threshold does not count.
    below = score("a photo of a bench", {"bench": [((5, 5, 30, 30), 0.3)], "cat": [((40, 5, 60, 30), 0.99)]})
    assert not below.correct and below.reason == "expected bench>=1, found 0"
    assert below.details == {"cat": [[40.0, 5.0, 60.0, 30.0, pytest.approx(0.99)]]}
    two = "a photo of a bench and a sports ball"
    assert score(two, {"bench": [((0, 0, 20, 20), 0.8)], "sports ball": [((30, 0, 40, 10), 0.5)]}).correct
    missing = score(two, {"bench": [((0, 0, 20, 20), 0.8)]})
    assert not missing.correct and missing.reason == "expected sports ball>=1, found 0"


def test_counting_uses_the_counting_threshold_and_the_exclude_clause():
    two_clocks = "a photo of two clocks"
    clock = ((0, 0, 10, 10), 0.95)
    assert score(two_clocks, {"clock": [clock, clock]}).correct
    off_by_one_up = score(two_clocks, {"clock": [clock, clock, clock]})
    assert not off_by_one_up.correct and off_by_one_up.reason == "expected clock<3, found 3"
    off_by_one_down = score(two_clocks, {"clock": [clock]})
    assert off_by_one_down.reason == "expected clock>=2, found 1"
    # 0.5 passes the detection threshold but not the counting one (0.9).
    weak = score(two_clocks, {"clock": [clock, ((20, 0, 30, 10), 0.5)]})
    assert weak.reason == "expected clock>=2, found 1"


def test_colors_checks_the_masked_crop():
    pink_car = "a photo of a pink car"
    box = (10, 10, 40, 30)
    fake = FakeColors()
    ok = score(pink_car, {"car": [(box, 0.9)]}, painted([(box, "pink")]), fake)
    assert ok.correct and ok.reason == ""
    assert fake.calls == [(1, "car", COLORS)]
    # The crop is the mask pasted on #999, so red outside the car's mask does not leak in.
    around = painted([((0, 0, 80, 60), "red"), (box, "pink")])
    assert score(pink_car, {"car": [(box, 0.9)]}, around).correct
    wrong = score(pink_car, {"car": [(box, 0.9)]}, painted([(box, "red")]))
    assert not wrong.correct and wrong.reason == "expected pink car>=1, found 0 pink; and 1 red"


def test_color_attr_and_only_the_most_confident_objects_are_coloured():
    prompt = "a photo of a purple wine glass and a black apple"
    glass, apple, apple2 = (0, 0, 20, 30), (40, 0, 60, 30), (40, 30, 60, 60)
    image = painted([(glass, "purple"), (apple, "black"), (apple2, "green")])
    fake = FakeColors()
    both = score(prompt, {"wine glass": [(glass, 0.8)], "apple": [(apple, 0.9), (apple2, 0.5)]}, image, fake)
    assert both.correct
    assert fake.calls == [(1, "wine glass", COLORS), (1, "apple", COLORS)]  # count=1: only the top apple
    # The green apple is now the most confident one.
    swapped = score(prompt, {"wine glass": [(glass, 0.8)], "apple": [(apple, 0.4), (apple2, 0.6)]}, image)
    assert not swapped.correct and swapped.reason == "expected black apple>=1, found 0 black; and 1 green"


def test_position():
    prompt = "a photo of a dog right of a teddy bear"
    bear, right, left = (0, 20, 20, 40), (50, 20, 70, 40), (0, 0, 20, 20)
    assert score(prompt, {"teddy bear": [(bear, 0.9)], "dog": [(right, 0.9)]}).correct
    wrong = score(prompt, {"teddy bear": [(bear, 0.9)], "dog": [(left, 0.9)]})
    assert not wrong.correct and wrong.reason == "expected dog right of target, found above target"
    no_target = score(prompt, {"dog": [(right, 0.9)]})
    assert no_target.reason == "expected teddy bear>=1, found 0\nno target for dog to be right of"


def test_relative_position_by_hand():
    # Offset (60, 0); shrunk by 0.1 × (20 + 20) = 4 → (56, 0); 56 / 60 > 0.5 → right of.
    assert relative_position([60, 0, 80, 20], [0, 0, 20, 20]) == {"right of"}
    # Offset (30, 30), shrunk by 2 each → (28, 28) / 42.4 = 0.66 each → right of and below (y grows down).
    assert relative_position([30, 30, 40, 40], [0, 0, 10, 10]) == {"right of", "below"}
    # Offset (3, 0) is less than the shrink (4): no relation at all.
    assert relative_position([3, 0, 23, 20], [0, 0, 20, 20]) == set()
    # Offset (10, 40): dx = (10 - 2) / 41.2 = 0.19, dy = (40 - 2) / 41.2 = 0.92 → only above (A is higher).
    assert relative_position([10, 0, 20, 10], [0, 40, 10, 50]) == {"above"}


def test_select_objects_caps_sorts_and_optional_nms():
    objs = [((i, 0, i + 10, 10), 0.31 + 0.01 * i) for i in range(20)]
    kept = select_objects(detections({"cup": objs}), "single_object")["cup"]
    assert len(kept) == 16
    assert [round(float(b[4]), 2) for b, _ in kept] == [round(0.31 + 0.01 * i, 2) for i in range(19, 3, -1)]
    assert kept[0][1].shape == SIZE and kept[0][1].sum() == 100
    overlapping = detections({"cup": [((0, 0, 10, 10), 0.9), ((1, 0, 11, 10), 0.8), ((30, 0, 40, 10), 0.7)]})
    assert len(select_objects(overlapping, "single_object")["cup"]) == 3  # official default: no NMS
    nms = select_objects(overlapping, "single_object", Thresholds(max_overlap=0.5))["cup"]
    assert [float(b[4]) for b, _ in nms] == [pytest.approx(0.9), pytest.approx(0.7)]


def test_summary_is_per_image_then_mean_of_tasks():
    results = [
        *({"tag": "single_object", "prompt_index": 0, "correct": True} for _ in range(3)),
        {"tag": "single_object", "prompt_index": 1, "correct": False},
        {"tag": "counting", "prompt_index": 2, "correct": True},
        {"tag": "counting", "prompt_index": 2, "correct": True},
        {"tag": "position", "prompt_index": 3, "correct": True},
        {"tag": "position", "prompt_index": 3, "correct": False},
        {"tag": "position", "prompt_index": 3, "correct": False},
    ]
    s = summarize_scores(results)
    # single_object: 3 of 4 images (a per-prompt mean would give 0.5); counting 2/2; position 1/3.
    assert s["tasks"]["single_object"] == {"score": 0.75, "correct": 3, "images": 4}
    assert s["tasks"]["counting"]["score"] == 1.0
    assert s["tasks"]["position"]["score"] == pytest.approx(1 / 3)
    assert list(s["tasks"]) == ["single_object", "counting", "position"]
    assert s["overall"] == pytest.approx((0.75 + 1.0 + 1 / 3) / 3)
    assert s["correct_images"] == pytest.approx(6 / 9)
    assert s["correct_prompts"] == 0.75 and s["prompts"] == 4 and s["images"] == 9
    assert summarize_scores([])["overall"] is None


# ------------------------------------------------------------------------------------------------ evaluator


def make_run(tmp_path, entries, rewrite=None) -> EvalInput:
    """A run directory with one small PNG per (prompt text, sample, image); records tagged like data=geneval."""
    run = RunDirectory(tmp_path / "run")
    for n, (text, sample, image) in enumerate(entries):
        p = BY_TEXT[text]
        rid = f"{p.index:05d}_{sample}"
        run.write_image(rid, np.asarray(image))
        rec = ImageRecord(
            id=rid, index=n, prompt=(rewrite or {}).get(text, text), seed=sample, run_name="geneval-test",
            model="tiny", moss="off", attn="sa", image=f"images/{rid}.png", resolution=SIZE[0], latency_s={},
            tokens_processed=None, forward_passes=None, kv_cache_bytes=None,
            extra={"benchmark": {"name": "geneval", "prompt_index": p.index, "sample": sample}},
        )  # fmt: skip
        run.write_record(rec)
    return EvalInput(run_dir=run.path, records=[r.to_dict() for r in run.read_records()], batch_size=2)


def marked(marker: int, regions=()) -> Image.Image:
    arr = np.asarray(painted(list(regions))).copy()
    arr[0, 0] = (marker, 255, 255)
    return Image.fromarray(arr)


def test_score_run_with_fakes_and_official_layout(tmp_path):
    car = (10, 10, 40, 30)
    inputs = make_run(
        tmp_path,
        [
            ("a photo of a pink car", 0, marked(1, [(car, "pink")])),
            ("a photo of a pink car", 1, marked(2, [(car, "red")])),
            ("a photo of two clocks", 0, marked(3)),
        ],
    )
    fake = FakeDetector(
        {
            1: detections({"car": [(car, 0.9)]}),
            2: detections({"car": [(car, 0.9)]}),
            3: detections({"clock": [((0, 0, 10, 10), 0.95), ((20, 0, 30, 10), 0.92)]}),
        }
    )
    ev = GenEvalEvaluator(detector="unused", clip="unused")
    result = ev.score_run(inputs, fake, FakeColors())
    assert {k: v["correct"] for k, v in result.per_image.items()} == {
        f"{BY_TEXT['a photo of a pink car'].index:05d}_0": True,
        f"{BY_TEXT['a photo of a pink car'].index:05d}_1": False,
        f"{BY_TEXT['a photo of two clocks'].index:05d}_0": True,
    }
    assert result.scores["colors"] == 0.5 and result.scores["counting"] == 1.0
    assert result.scores["overall"] == 0.75 and result.scores["position"] is None
    assert result.info["prompt_variant"] == "original" and result.info["complete"] is False
    layout = inputs.run_dir / "eval" / "geneval_official"
    pink = BY_TEXT["a photo of a pink car"]
    assert json.loads((layout / f"{pink.index:05d}" / "metadata.jsonl").read_text()) == pink.metadata
    assert os.path.samefile(
        layout / f"{pink.index:05d}/samples/0001.png", inputs.run_dir / f"images/{pink.index:05d}_1.png"
    )
    # A rerun on fewer images removes the stale sample and prompt folder.
    ev.score_run(EvalInput(inputs.run_dir, inputs.records[:1], batch_size=2), fake, FakeColors())
    assert sorted(p.name for p in layout.iterdir()) == [f"{pink.index:05d}"]
    assert [p.name for p in (layout / f"{pink.index:05d}/samples").iterdir()] == ["0000.png"]


def test_records_are_checked(tmp_path):
    inputs = make_run(tmp_path, [("a photo of a bench", 0, painted([]))])
    ev = GenEvalEvaluator(detector="unused", clip="unused")
    assert [i.prompt.index for i in ev.items(inputs)] == [0]
    untagged = [{k: v for k, v in r.items() if k != "benchmark"} for r in inputs.records]
    with pytest.raises(ValueError, match=r"run geneval-test .* not GenEval images .*data=geneval"):
        ev.items(EvalInput(inputs.run_dir, untagged))
    with pytest.raises(ValueError, match="are both prompt 0 sample 0"):
        ev.items(EvalInput(inputs.run_dir, inputs.records * 2))
    out_of_range = [{**inputs.records[0], "benchmark": {"name": "geneval", "prompt_index": 553, "sample": 0}}]
    with pytest.raises(ValueError, match="prompt_index=553"):
        ev.items(EvalInput(inputs.run_dir, out_of_range))
    rewrites = tmp_path / "rw.json"
    rewrites.write_text(json.dumps({p.original_prompt: "long " + p.original_prompt for p in PROMPTS}))
    with pytest.raises(
        ValueError, match=r"the run used the original prompts: unset eval\.geneval\.rewrite_file"
    ):
        GenEvalEvaluator(detector="unused", clip="unused", rewrite_file=str(rewrites)).items(inputs)
    renamed = [{**inputs.records[0], "prompt": "long a photo of a bench"}]
    with pytest.raises(ValueError, match=r"set eval\.geneval\.rewrite_file"):
        ev.items(EvalInput(inputs.run_dir, renamed))
    rewritten = GenEvalEvaluator(detector="unused", clip="unused", rewrite_file=str(rewrites))
    assert rewritten.items(EvalInput(inputs.run_dir, renamed))[0].prompt.prompt == "long a photo of a bench"


def test_missing_folders_are_reported(tmp_path):
    ev = GenEvalEvaluator(
        detector=str(tmp_path / "m2f"), clip=str(tmp_path / "clip"), rewrite_file=str(tmp_path / "rw.json")
    )
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "config.json").write_text("{}")
    with pytest.raises(MissingWeightsError) as err:
        check_weights([ev])
    msg = str(err.value)
    assert "eval.geneval.detector" in msg and str(tmp_path / "m2f" / "preprocessor_config.json") in msg
    assert "eval.geneval.clip" in msg and "tokenizer_config.json" in msg
    assert str(tmp_path / "clip" / "config.json") not in msg
    assert "eval.geneval.rewrite_file" in msg


def test_class_index_map():
    coco = [c for c in COCO_CLASSES]
    coco[64], coco[65], coco[66] = "mouse", "remote", "keyboard"  # COCO's names for GenEval's renamed three
    assert class_index_map(dict(enumerate(coco))) == list(range(80))
    assert class_index_map(dict(enumerate(reversed(coco)))) == list(range(79, -1, -1))
    with pytest.raises(ValueError, match=r"labels not among them: \['wall'\]"):
        class_index_map(dict(enumerate([*coco[:79], "wall"])))
    with pytest.raises(ValueError, match="must be the 80 COCO thing classes"):
        class_index_map(dict(enumerate([*coco, "wall"])))


# ------------------------------------------------------------------------------------------------ real models


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Tiny random Mask2Former (Swin backbone, COCO id2label) and CLIP folders in the hub layout."""
    import torch
    import transformers.models.mask2former.modeling_mask2former as m2f_module
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPTokenizer,
        Mask2FormerConfig,
        Mask2FormerImageProcessor,
        SwinConfig,
    )

    root = tmp_path_factory.mktemp("geneval_models")
    labels = list(COCO_CLASSES)
    labels[64:67] = ["mouse", "remote", "keyboard"]  # the names HF's COCO checkpoints use
    swin = SwinConfig(
        image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=2,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )  # fmt: skip
    config = Mask2FormerConfig(
        backbone_config=swin, feature_size=32, mask_feature_size=32, hidden_dim=32, encoder_feedforward_dim=32,
        dim_feedforward=32, encoder_layers=1, decoder_layers=2, num_attention_heads=2, num_queries=8,
        id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
        use_pretrained_backbone=False,
    )  # fmt: skip

    torch.manual_seed(0)
    original = m2f_module.Mask2FormerForUniversalSegmentation(config).eval()
    with torch.no_grad():  # make "car" (COCO index 2) confident, so detections pass 0.3 and CLIP runs
        original.class_predictor.weight.zero_()
        original.class_predictor.bias.zero_()
        original.class_predictor.bias[COCO_CLASSES.index("car")] = 10.0
    m2f = root / "mask2former"
    original.save_pretrained(m2f)
    Mask2FormerImageProcessor().save_pretrained(m2f)

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz-":
        vocab[ch], vocab[ch + "</w>"] = len(vocab), len(vocab) + 1
    clip_config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2),
        projection_dim=8,
    )  # fmt: skip
    clip = root / "clip"
    CLIPModel(clip_config).save_pretrained(clip)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        clip
    )
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(clip)
    return {"detector": m2f, "clip": clip, "original": original}


def test_detector_matches_the_original_model_and_postprocesses(tiny_models):
    import torch

    from moss_eval.quality.geneval.models import Mask2FormerDetector

    det = Mask2FormerDetector(tiny_models["detector"], batch_size=2, test_scale=SCALE)
    x = torch.randn(1, 3, 32, 64)
    with torch.no_grad():
        ref = tiny_models["original"](pixel_values=x)
        loaded = det.model(pixel_values=x)
    torch.testing.assert_close(loaded.class_queries_logits, ref.class_queries_logits, rtol=0, atol=0)
    torch.testing.assert_close(loaded.masks_queries_logits, ref.masks_queries_logits, rtol=0, atol=0)

    images = [marked(7, [((5, 5, 30, 30), "red")]).resize((80, 48)) for _ in range(3)]
    out = det.detect(images)
    assert len(out) == 3
    cars = out[0].boxes[COCO_CLASSES.index("car")]
    assert len(cars) >= 1 and (cars[:, 4] > 0).all() and (cars[:, 4] <= 1).all()
    for row, mask in zip(cars, out[0].masks[COCO_CLASSES.index("car")], strict=True):
        assert mask.shape == (48, 80)  # the original image, not the 800-px model input
        ys, xs = np.nonzero(mask)
        assert row[:4].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]

    # Hand-made logits: one query, "car" logit 5 (others 0, no-object 0); its mask logit +2 on a 2×2 block.
    class_logits = torch.zeros(2, 81)
    class_logits[0, COCO_CLASSES.index("car")] = 5.0
    masks = torch.full((2, 4, 4), -2.0)
    masks[0, :2, :2] = 2.0
    det.min_score = 0.3
    d = det._postprocess(class_logits, masks, torch.ones(4, 4, dtype=torch.long), (4, 4))
    expected = math.exp(5) / (math.exp(5) + 80) * (1 / (1 + math.exp(-2)))
    assert [len(b) for b in d.boxes] == [int(c == "car") for c in COCO_CLASSES]
    np.testing.assert_allclose(d.boxes[COCO_CLASSES.index("car")], [[0, 0, 2, 2, expected]], rtol=1e-5)
    assert d.masks[COCO_CLASSES.index("car")][0].sum() == 4


def test_evaluate_on_tiny_models(tiny_models, tmp_path):
    car = (10, 10, 40, 30)
    inputs = make_run(
        tmp_path,
        [
            ("a photo of a pink car", 0, painted([(car, "pink")])),
            ("a photo of a pink car", 1, painted([(car, "red")])),
            ("a photo of a dog right of a teddy bear", 0, painted([])),
            ("a photo of two clocks", 3, painted([])),
        ],
    )
    ev = GenEvalEvaluator(str(tiny_models["detector"]), str(tiny_models["clip"]), detector_scale=SCALE)
    check_weights([ev])
    result = ev.evaluate(inputs)
    path = result.write(inputs.run_dir)
    back = EvalResult.read(inputs.run_dir, "geneval")
    assert path.name == "geneval.json" and back.scores == result.scores and back.per_image == result.per_image

    ids = [r["id"] for r in inputs.records]
    assert set(result.per_image) == set(ids)
    for row in result.per_image.values():
        assert isinstance(row["correct"], bool) and row["tag"] == PROMPTS[row["prompt_index"]].tag
        assert row["correct"] == (row["reason"] == "")
    # The biased detector finds cars, so the pink-car images reached the CLIP colour check.
    for rid in ids[:2]:
        row = result.per_image[rid]
        assert "car" in row["details"] and not row["reason"].startswith("expected car>=1")
        assert row["correct"] or row["reason"].startswith("expected pink car>=1, found 0 pink; and 1 ")
    for task in TASKS:
        rows = [r["correct"] for r in result.per_image.values() if r["tag"] == task]
        assert result.scores[task] == (sum(rows) / len(rows) if rows else None)
    present = [result.scores[t] for t in TASKS if result.scores[t] is not None]
    assert result.scores["overall"] == pytest.approx(sum(present) / len(present))
    assert sum(r["images"] for r in result.tables["tasks"]) == 4
    assert [r["prompt_index"] for r in result.tables["prompts"]] == sorted({p.index for p in PROMPTS if
            p.original_prompt in ("a photo of a pink car", "a photo of two clocks",
                                  "a photo of a dog right of a teddy bear")})  # fmt: skip
    assert result.info["thresholds"]["detection"] == 0.3 and result.info["thresholds"]["counting"] == 0.9
    assert result.info["detector"]["folder"] == str(tiny_models["detector"])

    layout = inputs.run_dir / "eval" / "geneval_official"
    clocks = BY_TEXT["a photo of two clocks"]
    assert (layout / f"{clocks.index:05d}" / "metadata.jsonl").read_text() == json.dumps(clocks.metadata)
    assert os.path.samefile(
        layout / f"{clocks.index:05d}/samples/0003.png", inputs.run_dir / f"images/{clocks.index:05d}_3.png"
    )
    assert sorted(p.name for p in layout.iterdir()) == sorted(f"{i:05d}" for i in {int(k[:5]) for k in ids})


def test_clip_classifier_and_missing_weights(tiny_models, tmp_path):
    import shutil

    from moss_eval.quality.geneval.models import ClipColorClassifier

    clf = ClipColorClassifier(tiny_models["clip"])
    crops = [painted([((0, 0, 80, 60), c)]) for c in ("red", "blue", "green")]
    out = clf.classify(crops, "car", COLORS)
    assert len(out) == 3 and set(out) <= set(COLORS)
    assert clf.classify(crops, "car", COLORS) == out  # deterministic; text weights cached per class
    assert list(clf._text_weights) == [("car", COLORS)]

    no_weights = tmp_path / "clip"
    shutil.copytree(tiny_models["clip"], no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"eval.geneval.clip=.*no weights; expected one of model.safetensors"
    ):
        ClipColorClassifier(no_weights)
