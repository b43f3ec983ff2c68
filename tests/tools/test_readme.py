"""Every Python code block of the READMEs runs as written (a fresh namespace per file, blocks in order)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
READMES = [ROOT / "README.md", *sorted((ROOT / "packages").glob("*/README.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks(path: Path) -> list[str]:
    return BLOCK.findall(path.read_text(encoding="utf-8"))


def test_the_readmes_have_python_examples():
    assert _blocks(ROOT / "README.md"), "the README must show the notebook API"
    assert all(_blocks(p) for p in READMES if p.parent.name in ("moss-models", "moss-dispatch", "moss-eval"))


@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(readme, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything a block writes lands here
    namespace: dict = {"__name__": "__readme__"}
    for i, block in enumerate(_blocks(readme)):
        code = compile(block, f"{readme.relative_to(ROOT)} block {i + 1}", "exec")
        exec(code, namespace)  # a failing block raises with its file and block number
    if readme == ROOT / "README.md":
        out = namespace["out"]  # the notebook example's promises
        assert len(out.images) == 2 and out.images[0].size == (256, 256)
        assert out.stats.tokens_per_pass == [1, 4, 42] and out.stats.kv_cache_bytes > 0
        assert namespace["baseline"].stats.forward_passes == 7
