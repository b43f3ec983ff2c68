"""DPG-Bench: shipped prompts, question-file parsing, the official rules (dependency, aggregation, ELLA #60/#61),
the evaluator on a tiny run directory with a fake VQA model, and the real transformers path on a tiny random BLIP.
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from moss_eval.quality.base import EvalInput, EvalResult, MissingWeightsError, check_weights
from moss_eval.quality.dpg import (
    IMAGES_PER_PROMPT,
    NUM_PROMPTS,
    DPGEvaluator,
    DPGQuestion,
    ImageAnswers,
    aggregate,
    apply_dependency_rule,
    build_question_graphs,
    convert_official_csv,
    is_yes,
    load_prompts,
    load_question_rows,
    normalize_answer,
    score_image,
    write_official_layout,
)
from moss_eval.quality.dpg import data as dpg_data
from moss_eval.records import ImageRecord, RunDirectory

# ----------------------------------------------------------------------------------------------- fixtures

# Two real item ids with a small hand-made question graph each, in the official CSV format.
# Prompt "0": 1 entity (root), 2 attribute (child of 1), 3 relation (child of 1).
# Prompt "1": 1 entity (root), 2 attribute (child of 1).
QUESTION_ROWS = [
    ("0", 1, "0", "entity", "whole", "entity - whole (cabbage)", "Are there cabbages?"),
    ("0", 2, "1", "attribute", "color", "attribute - color (cabbage, green)", "Are the cabbages green?"),
    (
        "0",
        3,
        "1",
        "relation",
        "spatial",
        "relation - spatial (cabbage, soil, in)",
        "Are the cabbages in soil?",
    ),
    ("1", 1, "0", "entity", "whole", "entity - whole (truck)", "Is there a truck?"),
    ("1", 2, "1", "attribute", "size", "attribute - size (truck, stout)", "Is the truck stout?"),
]
# answers[(item_id, sample)] = answers in question order; see test_hand_computed_scores for the numbers.
ANSWERS = {
    ("0", 0): ["yes", "yes", "no"],
    ("0", 1): ["no", "yes", "yes"],
    ("1", 0): ["yes", "no"],
    ("1", 1): ["yes", "yes"],
}
OVERALL = (1 / 3 + 3 / 4) / 2  # prompt "0": (2/3 + 0) / 2; prompt "1": (1/2 + 1) / 2


def write_csv(path: Path, rows) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(dpg_data.CSV_COLUMNS)
        for item, qid, dep, broad, detailed, tup, question in rows:
            w.writerow([item, f"prompt text {item}", "kw", qid, dep, broad, detailed, tup, question])
    return path


@pytest.fixture(scope="module")
def questions_csv(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("dpg_csv") / "dpg_bench.csv", QUESTION_ROWS)


@pytest.fixture(scope="module")
def graphs(questions_csv):
    return build_question_graphs(load_question_rows(questions_csv))


COLORS = {("0", 0): (200, 0, 0), ("0", 1): (0, 200, 0), ("1", 0): (0, 0, 200), ("1", 1): (200, 200, 0)}


def make_run(path: Path, side: int = 8, benchmark_name: str = "dpg") -> EvalInput:
    """A run directory as RunDirectory writes it: 2 prompts x 2 samples, each image one flat colour."""
    run = RunDirectory(path)
    for index, ((item, sample), color) in enumerate(COLORS.items()):
        rid = f"dpg-{int(item):04d}-{sample}"
        run.write_image(rid, np.full((side, side, 3), color, dtype=np.uint8))
        record = ImageRecord(
            id=rid,
            index=index,
            prompt=f"prompt text {item}",
            seed=index,
            run_name="tiny-dpg",
            model="fake",
            moss="off",
            attn="sdpa",
            image=f"images/{rid}.png",
            resolution=side,
            latency_s={"total": 0.1},
            tokens_processed=1,
            forward_passes=1,
            kv_cache_bytes=0,
            extra={"benchmark": {"name": benchmark_name, "item_id": item, "sample": sample}},
        )
        run.write_record(record)
    run.finalize({"run_name": "tiny-dpg"})
    return EvalInput(run_dir=path, records=[r.to_dict() for r in run.read_jsonl()])


class ColorVQA:
    """Answers from ANSWERS, finding the image by its colour and the question by its text."""

    def __init__(self, graphs):
        self.by_color = {COLORS[key]: key for key in COLORS}
        self.qindex = {(item, q.text): n for item, qs in graphs.items() for n, q in enumerate(qs)}
        self.calls = []

    def answer(self, images, questions):
        self.calls.append(len(questions))
        out = []
        for image, question in zip(images, questions, strict=True):
            item, sample = self.by_color[image.getpixel((0, 0))]
            out.append(ANSWERS[(item, sample)][self.qindex[(item, question)]])
        return out


# ----------------------------------------------------------------------------------------------- data


def test_shipped_prompts_match_the_official_files():
    dpg_data._warn_no_questions.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the question file is not shipped yet (README)
        prompts = load_prompts()
    assert len(prompts) == NUM_PROMPTS == 1065
    assert IMAGES_PER_PROMPT == 4
    ids = [p.item_id for p in prompts]
    assert len(set(ids)) == len(ids)
    # file counts per source in ELLA's dpg_bench/prompts/ at 3c228f1
    sources = {}
    for item in ids:
        source = dpg_data.natural_key(item)[0]
        sources[source] = sources.get(source, 0) + 1
    assert sources == {
        "": 299, "COCOval": 100, "countbench": 40, "diffusiondb": 40, "drawtext": 40, "localized": 22,
        "midjourney": 40, "partiprompts": 324, "posescript": 40, "stanford": 40, "vrd": 40, "whoops": 40,
    }  # fmt: skip
    assert ids[:3] == ["0", "1", "2"] and ids == sorted(ids, key=dpg_data.natural_key)
    assert prompts[0].prompt.startswith("An expansive field, blanketed by the soft light of morning")
    assert all(p.prompt == p.prompt.strip() and p.prompt for p in prompts)


def test_missing_question_file_warns_and_is_a_weight_file(monkeypatch):
    monkeypatch.setattr(dpg_data, "QUESTIONS_FILE", Path("/nonexistent/questions.json"))
    dpg_data._warn_no_questions.cache_clear()
    with pytest.warns(UserWarning, match="questions_csv"):
        prompts = dpg_data.load_prompts()
    assert all(p.questions == () for p in prompts)
    monkeypatch.setattr("moss_eval.quality.dpg.evaluator.packaged_questions_file", lambda: None)
    with pytest.raises(MissingWeightsError, match=r"eval\.dpg\.questions_csv"):
        check_weights([DPGEvaluator(vqa=ColorVQA({}))])


@pytest.mark.skipif(dpg_data.packaged_questions_file() is None, reason="questions.json is not shipped yet")
def test_packaged_question_graphs():  # pragma: no cover - runs once questions.json is converted in
    prompts = load_prompts()
    assert len(prompts) == NUM_PROMPTS and all(p.questions for p in prompts)
    assert not any(dpg_data.missing_parents(p.questions) for p in prompts)
    rows = load_question_rows(dpg_data.QUESTIONS_FILE)
    assert sum(len(p.questions) for p in prompts) == len(rows)
    official = load_prompts(official_bug_compatible=True)
    assert sum(len(p.questions) for p in official) == len(rows) - 1  # ELLA #61: the first data row is skipped


def test_csv_parsing_and_conversion(questions_csv, graphs, tmp_path):
    rows = load_question_rows(questions_csv)
    assert [r.proposition_id for r in rows] == [1, 2, 3, 1, 2]
    q = graphs["0"][1]
    assert q == DPGQuestion(
        id=2,
        text="Are the cabbages green?",
        category="attribute - color",
        parents=(1,),
        proposition="attribute - color (cabbage, green)",
        category_broad="attribute",
        category_detailed="color",
    )
    assert q.l1_category == "attribute"
    # the compact JSON keeps every row: same graphs, same prompts
    summary = convert_official_csv(questions_csv, tmp_path / "questions.json")
    assert summary["rows"] == 5 and summary["items"] == 2 and summary["items_without_prompt"] == []
    assert summary["csv_text_differs_from_prompt_file"] == ["0", "1"]  # the fixture's text is made up
    assert build_question_graphs(load_question_rows(tmp_path / "questions.json")) == graphs
    prompts = {p.item_id: p for p in load_prompts(tmp_path / "questions.json")}
    assert prompts["0"].questions == graphs["0"] and prompts["2"].questions == ()
    assert prompts["0"].categories == ("entity", "attribute", "relation")


def test_official_reading_of_the_question_file(tmp_path):
    # ELLA #61: iterrows() starts at the first data row, so `if i == 0: continue` drops question 1 of item "0";
    # and an item whose rows are split keeps only its last run.
    rows = QUESTION_ROWS[:2] + QUESTION_ROWS[3:4] + QUESTION_ROWS[2:3]
    parsed = load_question_rows(write_csv(tmp_path / "q.csv", rows))
    fixed = build_question_graphs(parsed)
    official = build_question_graphs(parsed, official_bug_compatible=True)
    assert [q.id for q in fixed["0"]] == [1, 2, 3] and [q.id for q in fixed["1"]] == [1]
    assert [q.id for q in official["0"]] == [3] and [q.id for q in official["1"]] == [1]
    with pytest.raises(ValueError, match="question 1 twice"):
        build_question_graphs(parsed + parsed[:1])


def test_bad_question_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dpg_bench\.csv"):
        load_question_rows(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("item_id,text\n0,x\n")
    with pytest.raises(ValueError, match="lacks the columns"):
        load_question_rows(bad)
    bad_dep = write_csv(tmp_path / "dep.csv", [("0", 1, "a", "entity", "whole", "entity - whole (x)", "x?")])
    with pytest.raises(ValueError, match="data row 0: dependency 'a'"):
        load_question_rows(bad_dep)


# ----------------------------------------------------------------------------------------------- rules


def q(qid, parents, category="entity - whole"):
    return DPGQuestion(id=qid, text=f"q{qid}?", category=category, parents=tuple(parents))


def test_yes_rule_is_exact():
    assert is_yes("yes")
    assert not any(is_yes(a) for a in ("Yes", "yes.", " yes", "no", ""))
    assert normalize_answer(" Yes, there is a cat.") == "yes"
    assert normalize_answer("NO") == "no"
    assert normalize_answer("two") == "two"


def test_dependency_rule():
    graph = [q(1, [0]), q(2, [1]), q(3, [2]), q(4, [1, 0])]
    # a failed root fails every descendant, transitively (parents come first)
    assert apply_dependency_rule(graph, {1: 0.0, 2: 1.0, 3: 1.0, 4: 1.0}) == {1: 0, 2: 0, 3: 0, 4: 0}
    # passing parents let children count; a failed child does not fail its siblings
    assert apply_dependency_rule(graph, {1: 1.0, 2: 0.0, 3: 1.0, 4: 1.0}) == {1: 1, 2: 0, 3: 0, 4: 1}
    assert apply_dependency_rule(graph, {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0}) == {1: 1, 2: 1, 3: 1, 4: 1}
    # official in-place visit in file order: a child listed before its parent sees the parent's raw answer
    reordered = [q(3, [2]), q(1, [0]), q(2, [1])]
    assert apply_dependency_rule(reordered, {1: 0.0, 2: 1.0, 3: 1.0}) == {1: 0, 2: 0, 3: 1}
    # parent 9 is missing: ignored by the fixed rule, fatal (prompt dropped) in the official one
    assert apply_dependency_rule([q(1, [0]), q(2, [9])], {1: 1.0, 2: 1.0}) == {1: 1, 2: 1}
    with pytest.raises(KeyError):
        apply_dependency_rule([q(1, [0]), q(2, [9])], {1: 1.0, 2: 1.0}, official_bug_compatible=True)


def scored(graphs, bug=False):
    images = []
    for (item, sample), answers in ANSWERS.items():
        qs = graphs[item]
        im = ImageAnswers(
            f"{item}-{sample}", item, sample, {x.id: a for x, a in zip(qs, answers, strict=True)}
        )
        images.append(score_image(qs, im, bug))
    return images


def test_hand_computed_scores(graphs):
    images = scored(graphs)
    assert [im.score for im in images] == pytest.approx([2 / 3, 0.0, 0.5, 1.0])
    s = aggregate(graphs, images)
    assert s.overall == pytest.approx(OVERALL) and s.overall == pytest.approx(13 / 24)
    assert [(r["item_id"], r["score"]) for r in s.prompts] == [("0", pytest.approx(1 / 3)), ("1", 0.75)]
    # categories pool the raw answers of all samples: entity 1,0,1,1; attribute 1,1 (color) + 0,1 (size); relation 0,1
    assert s.l1 == pytest.approx({"attribute": 0.75, "entity": 0.75, "relation": 0.5})
    assert s.l2 == pytest.approx(
        {"attribute - color": 1.0, "attribute - size": 0.5, "entity - whole": 0.75, "relation - spatial": 0.5}
    )
    assert s.counts["attribute"] == 4 and s.counts["relation - spatial"] == 2
    # after the dependency rule: image ("0", 1) has a failed root, so its children count 0
    assert s.l1_with_dependency == pytest.approx({"attribute": 0.5, "entity": 0.75, "relation": 0.0})


def test_ella_60_bug_case(graphs):
    # The official categories see only the last sample of each prompt: ("0", 1) raw [0, 1, 1], ("1", 1) raw [1, 1].
    fixed = aggregate(graphs, scored(graphs))
    official = aggregate(graphs, scored(graphs, bug=True), official_bug_compatible=True)
    assert fixed.overall == pytest.approx(official.overall)  # the overall score is not affected
    assert fixed.l1["entity"] == pytest.approx(0.75)
    assert official.l1 == pytest.approx({"attribute": 1.0, "entity": 0.5, "relation": 1.0})
    assert official.counts["entity"] == 2


def test_official_drops_a_prompt_with_a_missing_parent(graphs):
    broken = dict(graphs, **{"1": (graphs["1"][0], q(2, [7], "attribute - size"))})
    official = aggregate(broken, scored(broken, bug=True), official_bug_compatible=True)
    assert list(official.dropped) == ["1"] and official.overall == pytest.approx(1 / 3)
    fixed = aggregate(broken, scored(broken))
    assert fixed.dropped == {} and fixed.overall == pytest.approx(OVERALL)


# ----------------------------------------------------------------------------------------------- evaluator


def test_evaluator_on_a_tiny_run(tmp_path, questions_csv, graphs):
    inputs = make_run(tmp_path / "run")
    vqa = ColorVQA(graphs)
    ev = DPGEvaluator(vqa=vqa, batch_size=4, questions_csv=questions_csv)
    assert ev.name == "dpg"
    check_weights([ev])
    result = ev.evaluate(inputs)
    assert sum(vqa.calls) == 10 and max(vqa.calls) == 4  # 2 x (3 + 2) questions, 4 pairs per call
    assert result.scores == pytest.approx(
        {"overall": OVERALL, "attribute": 0.75, "entity": 0.75, "relation": 0.5}
    )
    assert {r["category"] for r in result.tables["categories"] if r["level"] == "L2"} == set(
        ["attribute - color", "attribute - size", "entity - whole", "relation - spatial"]
    )
    assert [r["item_id"] for r in result.tables["prompts"]] == ["0", "1"]
    img = result.per_image["dpg-0000-1"]
    assert img["answers"] == {"1": "no", "2": "yes", "3": "yes"} and img["correct"] == {
        "1": 0,
        "2": 0,
        "3": 0,
    }
    assert result.info["prompts"] == 2 and result.info["images_per_prompt"] == {2: 2}
    # the JSON round trip
    path = result.write(inputs.run_dir)
    assert path == inputs.run_dir / "eval" / "dpg.json"
    back = EvalResult.read(inputs.run_dir, "dpg")
    assert back.scores == result.scores and back.per_image["dpg-0001-0"]["score"] == 0.5
    # the official layout: samples 0, 1 at the top-left and top-right tiles of <item_id>.png
    layout = result.info["official_layout"]
    assert layout["pic_num"] == 2 and layout["resolution"] == 8 and layout["prompts"] == 2
    from PIL import Image

    with Image.open(Path(layout["dir"]) / "0.png") as tile:
        pixels = np.asarray(tile)
    assert pixels.shape == (16, 16, 3)
    assert tuple(pixels[0, 0]) == COLORS[("0", 0)] and tuple(pixels[0, 8]) == COLORS[("0", 1)]
    assert tuple(pixels[8, 0]) == (0, 0, 0)  # sample 2 is missing
    assert sorted(p.name for p in Path(layout["dir"]).iterdir()) == ["0.png", "1.png"]
    bug = DPGEvaluator(
        vqa=vqa, questions_csv=questions_csv, official_bug_compatible=True, write_official_layout=False
    )
    official = bug.evaluate(inputs)
    # ELLA #61 drops question 1 of item "0"; its other questions name it as parent, so the official script's
    # KeyError drops the whole prompt and only prompt "1" is left
    assert official.info["dropped_prompts"] == {"0": "question 2 depends on question 1, which is missing"}
    assert official.scores["overall"] == pytest.approx(0.75)
    assert "official_layout" not in official.info


def test_evaluator_rejects_records_of_other_benchmarks(tmp_path, questions_csv, graphs):
    inputs = make_run(tmp_path / "run", benchmark_name="geneval")
    with pytest.raises(ValueError, match=r"run 'tiny-dpg' .*benchmark="):
        DPGEvaluator(vqa=ColorVQA(graphs), questions_csv=questions_csv).evaluate(inputs)
    with pytest.raises(ValueError, match="batch_size"):
        DPGEvaluator(vqa=ColorVQA(graphs), batch_size=0)


def test_official_layout_needs_square_images(tmp_path):
    inputs = make_run(tmp_path / "run")
    Image = pytest.importorskip("PIL.Image")
    Image.new("RGB", (8, 6)).save(inputs.run_dir / "images" / "dpg-0000-0.png")
    with pytest.raises(ValueError, match="square"):
        write_official_layout(inputs)


# ----------------------------------------------------------------------------------------------- real model


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory) -> Path:
    """A random 1-layer BlipForQuestionAnswering with a 14-word WordPiece vocab, biased to answer "yes"."""
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForQuestionAnswering,
        BlipImageProcessor,
        BlipProcessor,
    )

    folder = tmp_path_factory.mktemp("blip")
    words = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "yes",
        "no",
        "are",
        "is",
        "the",
        "there",
        "a",
        "?",
        "s",
    ]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"))
    processor = BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer)
    layer = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    config = BlipConfig(
        text_config=dict(
            layer, vocab_size=len(words), max_position_embeddings=64, encoder_hidden_size=32,
            bos_token_id=2, sep_token_id=3, pad_token_id=0,
        ),
        vision_config=dict(layer, image_size=32, patch_size=16),
        projection_dim=32,
    )  # fmt: skip
    torch.manual_seed(0)
    model = BlipForQuestionAnswering(config)
    with torch.no_grad():  # a random model answers noise; make "yes" win so the numbers can be checked
        model.text_decoder.cls.predictions.decoder.bias[words.index("yes")] = 100.0
    out = folder / "vqa"
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def test_transformers_vqa_and_evaluator_on_tiny_blip(tiny_blip, tmp_path, questions_csv):
    from PIL import Image

    from moss_eval.quality.dpg import TransformersVQA

    vqa = TransformersVQA(tiny_blip, device="cpu", max_new_tokens=2)
    assert vqa.architecture == "BlipForQuestionAnswering" and vqa.describe()["dtype"] == "float32"
    answers = vqa.answer([Image.new("RGB", (40, 40), "red")] * 2, ["is there a cat?", "are the s ?"])
    assert answers == ["yes", "yes"]
    with pytest.raises(ValueError, match="pair up"):
        vqa.answer([], ["x?"])

    inputs = make_run(tmp_path / "run", side=16)
    # all 10 (image, question) pairs in one call: batching is covered by test_evaluator_on_a_tiny_run
    ev = DPGEvaluator(
        vqa=str(tiny_blip), device="cpu", batch_size=16, questions_csv=questions_csv, max_new_tokens=2
    )
    check_weights([ev])
    result = ev.evaluate(inputs)
    assert result.scores == {"overall": 1.0, "attribute": 1.0, "entity": 1.0, "relation": 1.0}
    assert all(set(v["answers"].values()) == {"yes"} for v in result.per_image.values())
    assert result.info["vqa"]["architecture"] == "BlipForQuestionAnswering"
    data = json.loads(result.write(inputs.run_dir).read_text())
    assert data["scores"]["overall"] == 1.0 and len(data["per_image"]) == 4
    assert data["info"]["official_layout"]["resolution"] == 16
    assert (inputs.run_dir / "eval" / "dpg_official" / "1.png").is_file()


def test_missing_vqa_folder_is_reported(tmp_path, questions_csv):
    ev = DPGEvaluator(vqa=tmp_path / "nope", questions_csv=questions_csv)
    with pytest.raises(MissingWeightsError, match=r"eval\.dpg\.vqa=.*nope"):
        check_weights([ev])
