"""The procedural shapes dataset and Shapes-GenEval: scenes, rendering, captions, detector, rules, evaluator."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image, ImageFilter

from moss_eval.quality.base import EvalInput
from moss_eval.quality.shapes import (
    COLORS,
    PALETTE,
    SHAPES,
    TASKS,
    Background,
    DetectedShape,
    Scene,
    ShapeDetector,
    ShapeObject,
    ShapesDataset,
    ShapesGenEvalEvaluator,
    caption,
    collate_shapes,
    evaluation_prompts,
    groups,
    render,
    sample_scene,
    scene_from_dict,
    scene_to_dict,
    score_image,
    summarize,
    validate_on_dataset,
    vocabulary,
)
from moss_eval.quality.shapes.scene import CANONICAL_JITTER, MARGIN
from moss_eval.records import ImageRecord, RunDirectory

CONF = Path(__file__).resolve().parents[2] / "conf"
FLAT = Background("flat", ((120, 120, 118),))


def scenes(n: int, seed: int = 3) -> list[Scene]:
    return [sample_scene(np.random.default_rng([seed, i])) for i in range(n)]


# ------------------------------------------------------------------------------------------------ scenes


def test_sampling_is_seeded_and_scenes_are_valid():
    a, b = scenes(150), scenes(150)
    assert a == b and scenes(5, seed=4) != a[:5]
    kinds = set()
    for s in a:
        gs = groups(s)
        assert 1 <= len(gs) <= 3 and all(1 <= g.count <= 3 for g in gs) and len(s.objects) <= 6
        assert len({(g.shape, g.color) for g in gs}) == len(gs)
        for i, o in enumerate(s.objects):
            assert o.shape in SHAPES and o.color in COLORS
            assert o.cx - o.size / 2 >= 0 and o.cx + o.size / 2 <= 1 and 0 <= o.cy - o.size / 2 <= 1 - o.size
            for p in s.objects[i + 1 :]:  # boxes never overlap
                sep = (o.size + p.size) / 2
                assert abs(o.cx - p.cx) >= sep or abs(o.cy - p.cy) >= sep
        if s.relation is not None:  # a stated relation holds for every pair of the two groups
            ia, rel, ib = s.relation
            for o in gs[ia].objects:
                for p in gs[ib].objects:
                    d = {
                        "left of": p.cx - o.cx,
                        "right of": o.cx - p.cx,
                        "above": p.cy - o.cy,
                        "below": o.cy - p.cy,
                    }
                    assert d[rel] > (o.size + p.size) / 2
        kinds.add(s.background.kind)
        assert scene_from_dict(scene_to_dict(s)) == s
    assert kinds == {"flat", "stripes", "checkers", "noise"}
    assert sum(s.relation is not None for s in a) > 10


def test_captions_follow_the_templates_and_use_the_closed_vocabulary():
    two_left = Scene(
        (ShapeObject("circle", "red", 0.1, 0.5, 0.1), ShapeObject("circle", "red", 0.2, 0.2, 0.1),
         ShapeObject("square", "blue", 0.8, 0.5, 0.2)),
        dataclasses.replace(FLAT, kind="stripes", colors=((90, 90, 90), (200, 200, 200))),
        (0, "left of", 1),
    )  # fmt: skip
    assert caption(two_left) == "two red circles left of a blue square on a striped background"
    star = Scene((ShapeObject("star", "green", 0.5, 0.5, 0.3),), dataclasses.replace(FLAT, kind="checkers"))
    assert caption(star) == "a green star on a checkered background"
    orange = Scene((ShapeObject("diamond", "orange", 0.5, 0.5, 0.3),), FLAT)
    assert caption(orange) == "an orange diamond on a plain background"
    vocab = vocabulary()
    assert vocab == vocabulary() and len(vocab) == len(set(vocab))
    for s in scenes(200):
        assert set(caption(s).split()) <= set(vocab)


def test_render_keeps_palette_colours_pure_and_is_fast():
    s = Scene(
        (ShapeObject("square", "purple", 0.5, 0.5, 0.5),),
        Background("noise", ((110, 105, 100),), 2, amplitude=30),
    )
    img = render(s, 64)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert (img[20:44, 20:44] == PALETTE["purple"]).all()  # inside: exactly the colour
    assert not (img[:12] == PALETTE["purple"]).all(-1).any()  # outside: the noisy background
    assert np.array_equal(render(s, 64), img)  # the noise is the scene's own
    batch = scenes(100)
    t0 = time.perf_counter()
    for s in batch:
        render(s, 128)
    per_image = (time.perf_counter() - t0) / len(batch)
    assert per_image < 0.005, f"render takes {per_image * 1e3:.2f} ms per 128 px image"


def test_dataset_items_are_deterministic_tensors_and_collate():
    ds = ShapesDataset(seed=5, size=32, length=10)
    assert len(ds) == 10
    x, text, scene = ds[7]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    y, text2, scene2 = ShapesDataset(seed=5, size=32, length=99)[7]
    assert torch.equal(x, y) and text == text2 and scene == scene2
    assert text == caption(scene_from_dict(scene))
    assert (
        ShapesDataset(seed=6, size=32, length=10)[7][1] != text
        or ShapesDataset(seed=6, size=32, length=10)[7][2] != scene
    )
    images, texts, scenes_ = collate_shapes([ds[0], ds[1], ds[2]])
    assert images.shape == (3, 3, 32, 32) and len(texts) == len(scenes_) == 3
    with pytest.raises(ValueError, match=r"ShapesDataset size=4: expected an int >= 8"):
        ShapesDataset(seed=0, size=4, length=1)


def test_ordered_layout_puts_unrelated_objects_in_caption_order_and_changes_nothing_else():
    random_, ordered = ShapesDataset(3, 64, layout="random"), ShapesDataset(3, 64, layout="ordered")
    seen = 0
    for i in range(60):
        a, b = random_.scene(i), ordered.scene(i)
        assert caption(a) == caption(b) and a.background == b.background  # only the placement differs
        assert [(o.shape, o.color) for o in a.objects] == [(o.shape, o.color) for o in b.objects]
        if b.relation is None and 2 <= len(b.objects) <= 3:
            seen += 1
            xs = [o.cx for o in b.objects]
            assert xs == sorted(xs)  # caption order, left to right, each in its own strip
            strip = (1 - 2 * MARGIN) / len(xs)
            for k, o in enumerate(b.objects):
                assert (
                    MARGIN + k * strip - 1e-3 <= o.cx - o.size / 2
                    and o.cx + o.size / 2 <= MARGIN + (k + 1) * strip + 1e-3
                )
        else:
            assert a == b
    assert seen >= 10
    assert ShapesDataset(3, 64)[5][2] == random_[5][2]  # random is the default
    with pytest.raises(
        ValueError, match=r"layout='grid': expected one of \('random', 'ordered', 'canonical'\)"
    ):
        ShapesDataset(0, 64, layout="grid")


def test_relation_rate_changes_only_whether_two_groups_state_a_relation():
    usual, related, never = (
        ShapesDataset(4, 64, layout="canonical", relation_rate=r) for r in (0.5, 1.0, 0.0)
    )
    assert ShapesDataset(4, 64, layout="canonical").scene(7) == usual.scene(7)  # 0.5 is the default
    n_two = n_rel = 0
    for i in range(200):
        a, b, c = usual.scene(i), related.scene(i), never.scene(i)
        assert a.background == b.background == c.background  # the same draws at any rate
        assert [(o.shape, o.color) for o in a.objects] == [(o.shape, o.color) for o in b.objects]
        assert [(o.shape, o.color) for o in a.objects] == [(o.shape, o.color) for o in c.objects]
        assert c.relation is None
        if len(groups(b)) == 2:
            n_two += 1
            assert b.relation is not None  # rate 1: every two-group scene states one
        else:
            assert a == b == c  # one or three groups never state a relation: nothing else changes
        n_rel += a.relation is not None
    assert n_two > 40 and 0.3 * n_two < n_rel < 0.7 * n_two
    for bad in (-0.1, 1.5, True, "0.5"):
        with pytest.raises(ValueError, match=r"relation_rate=.*: expected a probability in \[0, 1\]"):
            ShapesDataset(0, 64, relation_rate=bad)


def test_canonical_layout_puts_every_object_in_a_slot_its_caption_fixes():
    random_, canonical = ShapesDataset(5, 64), ShapesDataset(5, 64, layout="canonical")
    kinds = set()
    for i in range(300):
        a, b = random_.scene(i), canonical.scene(i)
        assert caption(a) == caption(b) and a.background == b.background  # only the placement differs
        assert [(o.shape, o.color) for o in a.objects] == [(o.shape, o.color) for o in b.objects]
        objs = b.objects
        for o in objs:  # inside the border, MARGIN apart from each other
            assert (
                min(o.cx, o.cy) - o.size / 2 >= MARGIN - 1e-6
                and max(o.cx, o.cy) + o.size / 2 <= 1 - MARGIN + 1e-6
            )
        for x in range(len(objs)):
            for y in range(x):
                p, q = objs[x], objs[y]
                gap = (p.size + q.size) / 2 + MARGIN - 1e-3
                assert abs(p.cx - q.cx) >= gap or abs(p.cy - q.cy) >= gap
        n = len(objs)
        if b.relation is None and n <= 3:  # a row in caption order, through the middle
            kinds.add(n)
            slots = [MARGIN + (k + 0.5) * (1 - 2 * MARGIN) / n for k in range(n)]
            assert all(abs(o.cx - s) <= CANONICAL_JITTER + 1e-4 for o, s in zip(objs, slots, strict=True))
            assert all(abs(o.cy - 0.5) <= CANONICAL_JITTER + 1e-4 for o in objs)
        elif b.relation is not None and n == 2:  # the stated relation, each in the middle of its half
            kinds.add("relation")
            first, rel, second = b.relation
            p, q = objs[first], objs[second]
            axis = "cx" if rel in ("left of", "right of") else "cy"
            sign = 1 if rel in ("left of", "above") else -1
            assert sign * (getattr(q, axis) - getattr(p, axis)) > 0.4
    assert kinds == {1, 2, 3, "relation"}
    # the same scene twice: only sizes and jitter vary, so the coarse layout is the caption's
    task_scenes = [sample_scene(np.random.default_rng([9, i]), "two_object", "canonical") for i in range(20)]
    assert max(abs(s.objects[0].cx - 0.27) for s in task_scenes) <= CANONICAL_JITTER + 1e-4


def test_evaluation_prompts_cover_the_tasks_and_are_prefix_stable():
    prompts = evaluation_prompts(20, seed=1)
    assert [p.tag for p in prompts[:5]] == list(TASKS)
    assert evaluation_prompts(7, seed=1) == prompts[:7] and evaluation_prompts(7, seed=2) != prompts[:7]
    for p in prompts:
        s = scene_from_dict(p.scene_dict)
        gs = groups(s)
        assert p.prompt == caption(s)
        counts = [g.count for g in gs]
        if p.tag == "single_object":
            assert counts == [1]
        elif p.tag == "counting":
            assert len(gs) == 1 and counts[0] in (2, 3)
        elif p.tag == "colors":
            assert counts == [1, 1] and gs[0].shape == gs[1].shape and gs[0].color != gs[1].color
        else:
            assert counts == [1, 1] and gs[0].shape != gs[1].shape
            assert (s.relation is not None) == (p.tag == "position")
    with pytest.raises(ValueError, match="n=0"):
        evaluation_prompts(0)


# ------------------------------------------------------------------------------------------------ detector + rules


def test_validation_on_dataset_images_scores_at_least_095():
    result = validate_on_dataset(n_images=100, seed=0)
    assert result["images"] == 100
    assert result["overall"] >= 0.95, result["failures"]
    assert all(result[t] >= 0.9 for t in TASKS), result


def test_detector_finds_every_shape_and_survives_blur():
    objs = tuple(
        ShapeObject(shape, color, 0.15 + 0.35 * (i % 3), 0.15 + 0.35 * (i // 3), 0.2)
        for i, (shape, color) in enumerate(zip(SHAPES, COLORS, strict=False))
    )
    s = Scene(objs, Background("stripes", ((80, 84, 90), (190, 185, 180)), 6, "diagonal"))
    img = render(s, 128)
    for image in (img, np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(1.0)))):
        found = sorted((d.shape, d.color) for d in ShapeDetector().detect(image))
        assert found == sorted((o.shape, o.color) for o in objs)
    for d in ShapeDetector().detect(img):
        o = next(o for o in objs if o.shape == d.shape)
        assert abs(d.cx - o.cx) < 0.02 and abs(d.cy - o.cy) < 0.02 and abs(d.size - o.size) < 0.03
    assert ShapeDetector().detect(render(Scene((), FLAT))) == []


def det(shape, color, cx, cy):
    return DetectedShape(shape, color, cx, cy, 0.2, 0.9)


def test_rules_check_counts_colours_extras_and_positions():
    s = Scene((ShapeObject("circle", "red", 0.2, 0.5, 0.2), ShapeObject("square", "blue", 0.8, 0.5, 0.2)), FLAT,
              (0, "left of", 1))  # fmt: skip
    gt = scene_to_dict(s)
    good = [det("circle", "red", 0.2, 0.5), det("square", "blue", 0.7, 0.2)]
    assert score_image(good, gt) == (True, "")
    ok, why = score_image([det("circle", "red", 0.8, 0.5), det("square", "blue", 0.2, 0.5)], gt)
    assert not ok and why.startswith("expected red circle left of blue square")
    ok, why = score_image([det("circle", "green", 0.2, 0.5), det("square", "blue", 0.8, 0.5)], gt)
    assert not ok and why == "expected 1 red circle, found 0; unexpected 1 green circle"
    extra = [*good, det("unknown", "yellow", 0.5, 0.9)]
    assert score_image(extra, gt) == (False, "unexpected 1 yellow unknown")
    assert score_image(extra, gt, allow_extra=True) == (True, "")
    three = scene_to_dict(
        Scene(tuple(ShapeObject("star", "orange", 0.2 + 0.3 * i, 0.5, 0.2) for i in range(3)), FLAT)
    )
    ok, why = score_image([det("star", "orange", 0.2, 0.5)] * 2, three)
    assert not ok and why == "expected 3 orange star, found 2"
    summary = summarize([{"tag": "counting", "correct": True}, {"tag": "counting", "correct": False},
                         {"tag": "colors", "correct": True}])  # fmt: skip
    assert summary["overall"] == pytest.approx(0.75) and list(summary["tasks"]) == ["counting", "colors"]


# ------------------------------------------------------------------------------------------------ evaluator


def make_run(tmp_path, prompts, images, n, seed, drop_tag=False) -> EvalInput:
    run = RunDirectory(tmp_path / "run")
    for k, (p, image) in enumerate(zip(prompts, images, strict=True)):
        rid = f"shapes-{p.index:04d}-0"
        run.write_image(rid, image)
        tag = (
            None
            if drop_tag
            else {"name": "shapes", "prompt_index": p.index, "sample": 0, "n": n, "seed": seed}
        )
        run.write_record(
            ImageRecord(
                id=rid, index=k, prompt=p.prompt, seed=k, run_name="shapes-test", model="tiny", moss="off",
                attn="sa", image=f"images/{rid}.png", resolution=64, latency_s={}, tokens_processed=None,
                forward_passes=None, kv_cache_bytes=None, extra={} if tag is None else {"benchmark": tag},
            )
        )  # fmt: skip
    return EvalInput(run_dir=run.path, records=[r.to_dict() for r in run.read_records()])


def test_evaluator_scores_a_run_per_task(tmp_path):
    prompts = evaluation_prompts(12, seed=4)[:10]
    images = [render(scene_from_dict(p.scene_dict), 96) for p in prompts]
    images[2] = render(Scene((), FLAT), 96)  # a counting prompt whose image is empty
    inputs = make_run(tmp_path, prompts, images, 12, 4)
    ev = instantiate(OmegaConf.load(CONF / "eval" / "shapes.yaml"))
    assert isinstance(ev, ShapesGenEvalEvaluator) and ev.weight_files() == []
    result = ev.evaluate(inputs)
    assert result.name == "shapes"
    assert result.scores["counting"] == 0.5 and result.scores["colors"] == 1.0
    assert result.scores["overall"] == pytest.approx(0.9)
    bad = result.per_image["shapes-0002-0"]
    assert not bad["correct"] and bad["reason"].startswith("expected ") and bad["tag"] == "counting"
    assert [row["task"] for row in result.tables["tasks"]] == list(TASKS)
    assert result.info["prompt_set"] == {"n": 12, "seed": 4} and result.info["complete"] is False
    assert result.write(inputs.run_dir).is_file()
    with pytest.raises(ValueError, match=r"prompt set seed=4, but eval.shapes.seed=5"):
        ShapesGenEvalEvaluator(seed=5).items(inputs)
    with pytest.raises(ValueError, match="generate the run with data=shapes"):
        ev.items(make_run(tmp_path / "b", prompts[:1], images[:1], 12, 4, drop_tag=True))
    swapped = [dict(r, prompt=prompts[1].prompt) if r["id"] == "shapes-0000-0" else r for r in inputs.records]
    with pytest.raises(ValueError, match=r"record shapes-0000-0 \(prompt 0\) has prompt"):
        ev.items(EvalInput(inputs.run_dir, swapped))


def test_data_config_builds_the_tagged_prompt_set():
    from moss_run.data import PromptDataset
    from moss_run.errors import UserError

    cfg = OmegaConf.load(CONF / "data" / "shapes.yaml")
    cfg.seed, cfg.n, cfg.limit, cfg.samples_per_prompt = 100, 10, 3, 2
    ds = instantiate(cfg)
    assert len(ds) == 6
    item = ds[5]
    assert item["id"] == "shapes-0002-1" and item["seed"] == 100 + 2 * 2 + 1
    assert item["benchmark"] == {"name": "shapes", "prompt_index": 2, "sample": 1, "n": 10, "seed": 0}
    assert item["prompt"] == evaluation_prompts(10, 0)[2].prompt
    with pytest.raises(UserError, match=r"data.n=0 is not allowed"):
        PromptDataset.shapes(n=0)
