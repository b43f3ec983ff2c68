# The Python a device-machine script runs, sourced by tools/device/*.sh from the repository root: sets PY (an
# array: the command) and prints which environment and torch it is, so a result is never quoted as the locked
# torch's when it is not.
#
# The project's locked environment when `uv sync --locked --offline` can build it (uv and its cache present, as on
# a developer's GPU machine); otherwise the machine's own torch, with the workspace on PYTHONPATH and the wheels
# of .whl/ (tools/device/fetch_wheels.sh) installed beside it (a device machine without a package index cannot
# install the locked CUDA torch).
if command -v uv >/dev/null 2>&1 && uv sync --locked --offline -q 2>/dev/null; then
  PY=(uv run --locked --offline python)
  env_note="the locked environment (uv sync --locked)"
else
  if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    # once per machine: scripts that run side by side (train_testbed_gpu.sh with TAG) must not install into the
    # same folder at once, so such a command runs `bash tools/device/env.sh` before it starts them
    if [ ! -e /tmp/site/.moss-wheels ]; then
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
          .whl/*.whl && touch /tmp/site/.moss-wheels
    fi
    export PYTHONPATH=/tmp/site
  fi
  # The workspace packages run from source: nothing to build or resolve on a machine without an index.
  export PYTHONPATH="packages/moss-dispatch/src:packages/moss-attention/src:packages/moss-models/src:packages/moss-eval/src:tools${PYTHONPATH:+:$PYTHONPATH}"
  PY=(python3)
  env_note="the machine's python3 (no offline uv environment could be built)"
fi
locked=$(awk '/^name = "torch"$/{getline; sub(/^version = "/,""); sub(/"$/,""); print; exit}' uv.lock)
echo "environment: $env_note"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi: none here"
"${PY[@]}" - "$locked" <<'PY'
import sys
import hydra, omegaconf, torch, triton
locked = sys.argv[1]
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}), "
      f"triton {triton.__version__}, hydra {hydra.__version__}, "
      f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device'}")
if torch.__version__.split("+")[0] != locked.split("+")[0]:
    print(f"NOTE: this is torch {torch.__version__}, not the locked torch {locked} of uv.lock")
PY
