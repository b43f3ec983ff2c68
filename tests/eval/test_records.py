"""moss_eval.records: the ImageRecord format, RunDirectory writes (atomic, 0644) and reads, finalize()."""

import dataclasses
import json
import os
import stat

import numpy as np
import pytest

from moss_eval import ImageRecord, RunDirectory, atomic_write_bytes, atomic_write_text
from moss_eval.records import REQUIRED_FIELDS, RUN_FIELDS, RecordFormatError, summarize_records
from moss_eval.sweep import load_run

# Exactly what tools/moss_run/module.py builds for one image, in its key order.
RECORD = {
    "id": "00001",
    "index": 1,
    "prompt": "a red fox",
    "seed": 7,
    "run_name": "tiny-k2-cssa",
    "model": "tiny",
    "moss": "k2",
    "attn": "cssa",
    "dispatch": "variance",
    "image": "images/00001.png",
    "resolution": 32,
    "aspect_ratio": 1.0,
    "batch_size": 2,
    "latency_s": {"text": 0.01, "draft": 0.2, "decode": 0.1, "backbone": 0.21, "total": 0.31},
    "tokens_processed": 40,
    "tokens_per_pass": [1, 4, 16],
    "forward_passes": 3,
    "kv_cache_bytes": 2**28,
    "peak_memory_bytes": None,
    "flops": 123456,
    "fallbacks": [],
    "rank": 0,
}


def make_record(index: int, **changes) -> ImageRecord:
    d = dict(RECORD, id=f"{index:05d}", index=index, image=f"images/{index:05d}.png", **changes)
    return ImageRecord.from_dict(d)


def pixels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_round_trip_keeps_the_json_object_and_its_key_order():
    rec = ImageRecord.from_dict(RECORD)
    assert rec.id == "00001" and rec.latency_s["backbone"] == 0.21 and rec.extra == {}
    assert rec.to_dict() == RECORD and list(rec.to_dict()) == list(RECORD)
    assert json.loads(rec.to_json()) == RECORD and "\n" not in rec.to_json()
    assert ImageRecord.from_dict(rec.to_dict()) == rec


def test_extra_keys_are_kept_flat():
    d = {**RECORD, "method": "moss", "truncated": True, "nested": {"a": [1, 2]}}
    rec = ImageRecord.from_dict(d)
    assert rec.extra == {"method": "moss", "truncated": True, "nested": {"a": [1, 2]}}
    assert rec.to_dict() == d and list(rec.to_dict())[-3:] == ["method", "truncated", "nested"]
    assert "extra" not in rec.to_dict()
    d["nested"]["a"].append(3)  # from_dict copies: the record does not alias its input
    assert rec.extra["nested"] == {"a": [1, 2]}
    with pytest.raises(ValueError, match="seed"):
        dataclasses.replace(rec, extra={"seed": 1})


def test_optional_keys_default():
    d = {k: RECORD[k] for k in REQUIRED_FIELDS}
    rec = ImageRecord.from_dict(d)
    assert rec.id is None and rec.dispatch is None and rec.rank is None
    assert rec.tokens_per_pass == [] and rec.fallbacks == []
    assert {k: v for k, v in rec.to_dict().items() if k in d} == d
    assert set(RUN_FIELDS) <= set(rec.to_dict())


@pytest.mark.parametrize("key", ["prompt", "latency_s", "kv_cache_bytes"])
def test_missing_required_key_names_key_and_source(key):
    d = {k: v for k, v in RECORD.items() if k != key}
    with pytest.raises(ValueError, match=rf"^runs/x/records.jsonl:3: record lacks {key}$"):
        ImageRecord.from_dict(d, source="runs/x/records.jsonl:3")
    with pytest.raises(RecordFormatError, match=rf"^record lacks {key}$"):
        ImageRecord.from_dict(d)


def test_malformed_records_are_rejected():
    with pytest.raises(RecordFormatError, match=r"f\.json: a record must be a JSON object, got list"):
        ImageRecord.from_dict([1, 2], source="f.json")
    with pytest.raises(RecordFormatError, match="latency_s must be an object"):
        ImageRecord.from_dict({**RECORD, "latency_s": 0.3}, source="f.json")


def test_layout(tmp_path):
    run = RunDirectory(tmp_path / "run")
    assert run.images_dir == tmp_path / "run" / "images"
    assert run.records_dir == tmp_path / "run" / "records"
    assert run.records_jsonl == tmp_path / "run" / "records.jsonl"
    assert run.summary_json == tmp_path / "run" / "summary.json"
    assert run.config_yaml == tmp_path / "run" / "config.yaml"
    assert run.image_path("00003") == run.images_dir / "00003.png"
    assert run.record_path("00003") == run.records_dir / "00003.json"
    assert run.completed_ids() == set() and run.read_records() == []
    assert not run.path.exists()  # nothing is created until something is written


def test_completed_ids_need_both_files(tmp_path):
    run = RunDirectory(tmp_path)
    for i in range(3):
        rec = make_record(i)
        run.write_image(rec.id, pixels(i))
        run.write_record(rec)
    run.write_image("00003", pixels(3))  # image without a record: killed before the record
    atomic_write_text(run.record_path("00004"), make_record(4).to_json())  # record without its image
    run.image_path("00001").unlink()
    assert run.completed_ids() == {"00000", "00002"}


def test_write_image_is_a_png_of_the_array(tmp_path):
    from PIL import Image

    run = RunDirectory(tmp_path)
    path = run.write_image("00000", pixels(0))
    assert path == run.image_path("00000")
    with Image.open(path) as img:
        assert img.format == "PNG" and img.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(img), pixels(0))


def test_read_records_sorted_by_index_then_id(tmp_path):
    run = RunDirectory(tmp_path)
    for i in (10, 2, 7):
        run.write_record(make_record(i))
    assert [r.index for r in run.read_records()] == [2, 7, 10]
    assert run.read_records()[0] == make_record(2)


def test_written_files_are_0644_and_no_tmp_is_left(tmp_path):
    run = RunDirectory(tmp_path / "run")
    rec = make_record(0)
    run.write_image(rec.id, pixels(0))
    run.write_record(rec)
    run.write_config("seed: 0\n")
    run.finalize({"run_name": "tiny-k2-cssa"})
    atomic_write_bytes(tmp_path / "run" / "blob.bin", b"\x00\x01")
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert len(files) == 6
    expected = 0o644 & ~umask()
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == expected, p
    assert not [p for p in (tmp_path / "run").rglob("*") if p.name.endswith(".tmp")]
    assert run.config_yaml.read_text() == "seed: 0\n"


def test_mode_follows_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        atomic_write_text(tmp_path / "private.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "private.txt").stat().st_mode) == 0o600


def test_failed_write_leaves_the_old_file_and_no_tmp(tmp_path):
    path = tmp_path / "a.json"
    atomic_write_text(path, "old")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_finalize_rebuilds_jsonl_and_summary(tmp_path):
    run = RunDirectory(tmp_path)
    recs = [
        make_record(1, latency_s={"backbone": 1.0, "total": 1.5}, tokens_processed=10, fallbacks=["b"]),
        make_record(0, latency_s={"backbone": 3.0, "total": 3.5, "decode": 0.5}, tokens_processed=30),
        make_record(2, latency_s={"backbone": 2.0, "total": 2.5}, tokens_processed=20, fallbacks=["a", "b"]),
    ]
    for rec in recs:
        run.write_record(rec)
    info = {"run_name": "tiny-k2-cssa", "model": "tiny", "moss": "k2", "attn": "cssa", "dispatch": "variance"}
    summary = run.finalize(info)
    assert summary == {
        **info,
        "num_images": 3,
        "latency_s": {
            "backbone": {"mean": 2.0, "median": 2.0, "min": 1.0, "max": 3.0},
            "decode": {"mean": 0.5, "median": 0.5, "min": 0.5, "max": 0.5},
            "total": {"mean": 2.5, "median": 2.5, "min": 1.5, "max": 3.5},
        },
        "tokens_processed": {"mean": 20.0, "median": 20.0, "min": 10.0, "max": 30.0},
        "forward_passes": {"mean": 3.0, "median": 3.0, "min": 3.0, "max": 3.0},
        "kv_cache_bytes": {"mean": 2.0**28, "median": 2.0**28, "min": 2.0**28, "max": 2.0**28},
        "peak_memory_bytes": None,
        "flops": {"mean": 123456.0, "median": 123456.0, "min": 123456.0, "max": 123456.0},
        "fallbacks": ["a", "b"],
    }
    assert list(summary)[: len(info)] == list(info)
    assert json.loads(run.summary_json.read_text()) == summary
    assert run.summary_json.read_text().endswith("}\n")
    lines = run.records_jsonl.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [r.to_dict() for r in sorted(recs, key=lambda r: r.index)]
    assert run.finalize(info) == summary  # idempotent
    assert summarize_records([r.to_dict() for r in recs], info) == summary  # dicts are accepted too


def test_record_written_by_run_directory_reads_identically_in_the_sweep(tmp_path):
    run = RunDirectory(tmp_path / "run")
    recs = [make_record(1, method="moss"), make_record(0)]
    for rec in recs:
        run.write_image(rec.id, pixels(rec.index))
        run.write_record(rec)
    unfinished = load_run(run.path)  # records/*.json only
    assert unfinished.source_note and "no records.jsonl" in unfinished.source_note
    assert unfinished.records == [recs[1].to_dict(), recs[0].to_dict()]
    assert unfinished.records[1]["method"] == "moss"
    run.finalize({"run_name": "tiny-k2-cssa"})
    finished = load_run(run.path)  # records.jsonl agrees with records/
    assert finished.source_note is None and finished.records == unfinished.records
    assert finished.image_path(finished.records[0]) == run.image_path("00000")
    (run.path / "records").rename(run.path / "gone")  # records.jsonl alone
    assert load_run(run.path).records == unfinished.records


def test_bad_record_file_names_the_file(tmp_path):
    run = RunDirectory(tmp_path)
    atomic_write_text(run.record_path("00000"), "{not json")
    with pytest.raises(RecordFormatError, match=r"00000\.json: not JSON"):
        run.read_records()
    atomic_write_text(run.records_jsonl, "\n" + json.dumps({"prompt": "x"}) + "\n")
    with pytest.raises(RecordFormatError, match=r"records\.jsonl:2: record lacks seed, run_name"):
        run.read_jsonl()


def test_write_record_needs_an_image_record_with_an_id(tmp_path):
    run = RunDirectory(tmp_path)
    with pytest.raises(TypeError, match="ImageRecord"):
        run.write_record(RECORD)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="id"):
        run.write_record(ImageRecord.from_dict({k: RECORD[k] for k in REQUIRED_FIELDS}))
