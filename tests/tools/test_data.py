"""Prompt sets: inline lists, .txt and .jsonl files, and the errors a malformed file gets."""

import pytest

from moss_run.data import PromptDataset
from moss_run.errors import UserError


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_txt_file(tmp_path):
    ds = PromptDataset.from_file(_write(tmp_path, "p.txt", "a cat\n\n  a dog  \n"), seed=5)
    assert [(it.id, it.prompt, it.seed) for it in ds.items] == [("00000", "a cat", 5), ("00001", "a dog", 6)]


def test_jsonl_file_with_seeds_ids_and_aspect_ratio(tmp_path):
    text = '{"prompt": "a cat", "seed": 42, "id": "cat-1"}\n{"prompt": "a dog", "aspect_ratio": 0.5}\n'
    ds = PromptDataset.from_file(_write(tmp_path, "p.jsonl", text), seed=0)
    assert [(it.id, it.seed, it.aspect_ratio) for it in ds.items] == [("cat-1", 42, None), ("00001", 1, 0.5)]
    assert [it.id for it in ds.subset({"00001"}).items] == ["00001"]


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("p.txt", "\n\n", r"p.txt holds no prompts"),
        ("p.jsonl", "", r"p.jsonl holds no prompts"),
        ("p.jsonl", '{"prompt": "ok"}\n{"prompt": "bad",}\n', r"p.jsonl line 2: not valid JSON"),
        ("p.jsonl", '{"prompt": "ok"}\n["a list"]\n', r"p.jsonl line 2: each line must be a JSON object"),
        ("p.jsonl", '{"text": "x"}\n', r"p.jsonl line 1: unknown field\(s\) \['text'\]"),
        ("p.jsonl", '{"prompt": ""}\n', r"p.jsonl line 1: \"prompt\" must be a non-empty string"),
        ("p.jsonl", '{"prompt": "a", "seed": -1}\n', r"line 1: \"seed\" must be a non-negative integer"),
        ("p.jsonl", '{"prompt": "a", "id": "../x"}\n', r"line 1: \"id\" '../x' must be"),
        (
            "p.jsonl",
            '{"prompt": "a", "id": "x"}\n{"prompt": "b", "id": "x"}\n',
            r"line 2: duplicate id 'x' \(first used on line 1\)",
        ),
        (
            "p.jsonl",
            '{"prompt": "a", "aspect_ratio": 0}\n',
            r"line 1: \"aspect_ratio\" must be a positive number",
        ),
        ("p.csv", "a,b\n", r"must end in .txt .* or .jsonl, not '.csv'"),
    ],
)
def test_malformed_files_name_the_file_and_line(tmp_path, name, text, match):
    with pytest.raises(UserError, match=match):
        PromptDataset.from_file(_write(tmp_path, name, text))


def test_missing_file_and_bad_lists(tmp_path):
    with pytest.raises(UserError, match=r"prompt file .*nope.txt does not exist \(data.path\)"):
        PromptDataset.from_file(tmp_path / "nope.txt")
    with pytest.raises(UserError, match=r"data.prompts must be a non-empty list"):
        PromptDataset.from_list([])
    with pytest.raises(UserError, match=r"data.prompts\[1\] must be a non-empty string"):
        PromptDataset.from_list(["a", "  "])


def test_a_latin1_file_names_line_and_offset_in_a_short_message(tmp_path):
    lines = [f"prompt number {i}, plain ascii" for i in range(500)]
    lines[337] = "un café au lait sur une table en bois"  # é is one byte (0xe9) in Latin-1, not UTF-8
    path = tmp_path / "p.txt"
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    offset = len(("\n".join(lines[:337]) + "\nun caf").encode("latin-1"))
    with pytest.raises(UserError) as err:
        PromptDataset.from_file(path)
    message = str(err.value)
    assert f"prompt file {path} (data.path) is not UTF-8 text: line 338, byte offset {offset}" in message
    assert "0xe9" in message and r"caf\xe9 au" in message and "iconv -f latin1 -t utf-8" in message
    assert len(message) < 400 + len(str(path)) and "prompt number 336" not in message
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no UnicodeDecodeError dump


def test_jsonl_not_utf8_and_line_ends(tmp_path):
    bad = tmp_path / "p.jsonl"
    bad.write_bytes(b'{"prompt": "ok"}\r\n{"prompt": "na\xefve"}\r\n')
    with pytest.raises(UserError, match=r"p.jsonl \(data.path\) is not UTF-8 text: line 2, byte offset 32 "):
        PromptDataset.from_file(bad)
    # a UTF-8 byte-order mark is not part of the first prompt; U+2028 inside a JSON string is not a line end
    good = tmp_path / "q.jsonl"
    good.write_bytes(b"\xef\xbb\xbf" + '{"prompt": "a\u2028b"}\r\n{"prompt": "c"}\n'.encode())
    assert [it.prompt for it in PromptDataset.from_file(good).items] == ["a\u2028b", "c"]
    txt = tmp_path / "p.txt"
    txt.write_bytes(b"\xef\xbb\xbfa fox\rna\xc3\xafve owl\r\n")
    assert [it.prompt for it in PromptDataset.from_file(txt).items] == ["a fox", "na\u00efve owl"]


def test_imagenet_classes_by_id_and_name():
    data = PromptDataset.imagenet_classes([207, "volcano", "Cardigan", "cardigan", " 1 "], seed=3)
    assert [it.label for it in data.items] == [207, 980, 264, 474, 1]
    assert [it.prompt for it in data.items][:2] == ["golden retriever", "volcano"]
    assert [it.seed for it in data.items] == [3, 4, 5, 6, 7] and data[0]["label"] == 207
    assert data.items[0].condition == 207


@pytest.mark.parametrize(
    ("classes", "match"),
    [
        ([], "non-empty list"),
        ([1000], r"data.classes\[0\]=1000: class id 1000 is outside"),
        (["CARDIGAN"], "264, 474"),
    ],
)
def test_imagenet_classes_refuse_bad_labels(classes, match):
    with pytest.raises(UserError, match=match):
        PromptDataset.imagenet_classes(classes)
