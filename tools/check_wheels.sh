#!/usr/bin/env bash
# Build every workspace member's wheel and install each one ALONE into a fresh venv, outside the workspace.
#
# `uv lock` does not enforce version ranges between workspace members, and `uv run` always sees every member
# installed editable, so neither notices a member that only works beside its siblings. This script is what keeps
# "install one subpackage" true: each wheel must install with only its declared dependencies (siblings come from
# the freshly built wheels in dist/, third-party packages from the index) and import cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."

dist="${DIST_DIR:-dist}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

rm -rf "$dist"
uv build --all-packages --no-sources --wheel --out-dir "$dist" -q

status=0
for pyproject in packages/*/pyproject.toml; do
  name="$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["name"])' "$pyproject")"
  module="${name//-/_}"
  wheel="$(ls "$dist"/"${module}"-*.whl)"
  venv="$work/$name"
  uv venv -q "$venv"
  echo "== $name: installing $(basename "$wheel") into an empty venv"
  if ! uv pip install -q --python "$venv/bin/python" --find-links "$dist" "$wheel"; then
    echo "FAIL: $name does not install on its own" >&2
    status=1
    continue
  fi
  if ! "$venv/bin/python" - "$name" "$module" <<'PY'
import importlib
import importlib.metadata as md
import sys

name, module = sys.argv[1], sys.argv[2]
mod = importlib.import_module(module)
missing = [n for n in getattr(mod, "__all__", []) if not hasattr(mod, n)]
assert not missing, f"{module}.__all__ names missing attributes: {missing}"
requires = md.requires(name) or []
core = sorted(r for r in requires if "extra ==" not in r)
print(f"   imported {module} {getattr(mod, '__version__', '?')} from {mod.__file__}")
print(f"   requires: {core}")
# every other workspace member it pulls in must come from dist/, i.e. have been declared
siblings = [d.metadata["Name"] for d in md.distributions() if d.metadata["Name"].startswith("moss-")]
print(f"   moss packages installed: {sorted(siblings)}")
if module == "moss_models":  # the trained testbed ships as package data: the default model must load offline
    from moss_models.testbed import export_files

    files = export_files(None)
    print(f"   testbed weights: {sum(p.stat().st_size for p in files.values()) / 2**20:.1f} MiB in the wheel")
PY
  then
    echo "FAIL: $name does not import in a clean venv" >&2
    status=1
  fi
done
exit $status
