#!/usr/bin/env bash
# Create .venv at the repository root and install the pinned mmdaq stack into it.
#
# Idempotent: every step checks whether it is already done. The long step is
# building mmcv 2.1.0 with its C++ ops (about 12 minutes on 2 cores); the wheel
# is cached outside the repository, keyed by Python/torch/mmcv version, so a
# second install (or a fresh clone) takes well under a minute.
#
# Environment:
#   PYTHON        interpreter for the venv (default: python3.11)
#   VENV          venv path (default: <repo>/.venv)
#   MMDAQ_CACHE   cache root (default: ~/.cache/mmdaq); wheels go to $MMDAQ_CACHE/wheels
#   MAX_JOBS      parallel compile jobs for mmcv and mmdaq._ext (default: nproc)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3.11}"
VENV="${VENV:-$ROOT/.venv}"
CACHE="${MMDAQ_CACHE:-$HOME/.cache/mmdaq}"
MMCV_VERSION=2.1.0
TORCH_VERSION=2.13.0
TRITON_VERSION=3.9.0
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"

say() { printf '[install %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# 1. The virtual environment. If the base interpreter already has a CUDA build of
#    torch (GPU machines), the venv sees it (system site packages) and keeps it.
base_has_cuda_torch() {
  "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.version.cuda else 1)' 2>/dev/null
}
if [ ! -x "$VENV/bin/python" ]; then
  if base_has_cuda_torch; then
    say "creating $VENV with system site packages (keeps the CUDA torch of $PYTHON)"
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    say "creating $VENV with $("$PYTHON" --version)"
    "$PYTHON" -m venv "$VENV"
  fi
else
  say "using existing $VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
# pip warns about every empty local index directory of this machine: keep the output readable.
pipq() { "${PIP[@]}" "$@" 2> >(grep -v "^WARNING: Location" >&2); }

# 2. torch: never replace a CUDA build; otherwise pin the CPU wheel that lies on disk.
if "$PY" -c 'import torch, sys; sys.exit(0 if torch.version.cuda else 1)' 2>/dev/null; then
  say "keeping CUDA torch $("$PY" -c 'import torch; print(torch.__version__)')"
elif "$PY" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null; then
  say "torch $TORCH_VERSION already installed"
else
  say "installing torch==$TORCH_VERSION (CPU wheel)"
  pipq install -q "torch==$TORCH_VERSION"
fi
# 3. Build requirements (mmcv's setup.py needs them installed, without build isolation), and
#    OpenCV: mmcv's wheel requires opencv-python (with GUI libraries) unless a headless OpenCV is
#    installed when it is built. Its pin is the one in requirements/runtime.txt.
say "installing build requirements"
OPENCV_REQ="$(grep -E '^opencv-python-headless' "$ROOT/requirements/runtime.txt")"
pipq install -q -r "$ROOT/requirements/build.txt" "$OPENCV_REQ"

TORCH_TAG="$("$PY" -c 'import torch; print(torch.__version__.replace("+", "_"))')"
PY_TAG="$("$PY" -c 'import sys; print(f"py{sys.version_info[0]}{sys.version_info[1]}")')"

# 4. mmcv with ops: from the wheel cache, or built from the sdist (long).
WHEEL_DIR="$CACHE/wheels/mmcv-$MMCV_VERSION-$PY_TAG-torch$TORCH_TAG"
if "$PY" -c "import mmcv, mmcv.ops, sys; sys.exit(0 if mmcv.__version__ == '$MMCV_VERSION' else 1)" 2>/dev/null; then
  say "mmcv $MMCV_VERSION with ops already installed"
else
  if ! ls "$WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1; then
    say "building mmcv $MMCV_VERSION with ops from source: this takes about 12 minutes on 2 cores"
    say "(built once; the wheel is cached in $WHEEL_DIR)"
    mkdir -p "$WHEEL_DIR" "$CACHE/src"
    [ -f "$CACHE/src/mmcv-$MMCV_VERSION.tar.gz" ] || \
      pipq download -q --no-deps --no-binary :all: "mmcv==$MMCV_VERSION" -d "$CACHE/src"
    LOG="$CACHE/mmcv-build.log"
    tmp="$(mktemp -d)"
    # ninja prints "[i/n] ..." per compiled file: show that as progress, keep the rest in the log.
    set +e
    MMCV_WITH_OPS=1 FORCE_CUDA="${FORCE_CUDA:-0}" "${PIP[@]}" wheel -v --no-deps --no-build-isolation \
      "$CACHE/src/mmcv-$MMCV_VERSION.tar.gz" -w "$tmp" 2>&1 | tee "$LOG" | \
      awk '/^ *\[[0-9]+\/[0-9]+\]/ { match($0, /\[[0-9]+\/[0-9]+\]/); \
           printf "[install] mmcv build %s\n", substr($0, RSTART, RLENGTH); fflush() }'
    status=${PIPESTATUS[0]}
    set -e
    if [ "$status" -ne 0 ]; then
      say "mmcv build FAILED (exit $status); last lines of $LOG:"; tail -n 30 "$LOG"; exit "$status"
    fi
    mv "$tmp"/mmcv-*.whl "$WHEEL_DIR"/ && rmdir "$tmp"
  else
    say "using cached mmcv wheel from $WHEEL_DIR"
  fi
  pipq install -q --no-deps "$WHEEL_DIR"/mmcv-*.whl
fi

# 5. The rest of the stack, test tools, and mmdaq itself (editable, builds mmdaq._ext).
say "installing mmengine, mmdet, mmaction2 and test requirements"
pipq install -q -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/tests.txt" \
  "mmcv==$MMCV_VERSION" "torch==$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')"
# Triton: CUDA builds of torch bring the one they were built with (never replaced); with the CPU
# build it runs mmdaq's Triton kernels in its interpreter, as the tests do (TRITON_INTERPRET=1).
if ! "$PY" -c 'import triton' 2>/dev/null; then
  say "installing triton (the Triton kernels' tests run in its interpreter on CPU)"
  pipq install -q "triton==$TRITON_VERSION"
fi
# Checked from / so that the checkout itself (the current directory) does not count as installed.
if [ "$(cd / && "$PY" -c 'import mmdaq, os; print(os.path.dirname(os.path.dirname(mmdaq.__file__)))' 2>/dev/null)" != "$ROOT" ]; then
  say "installing mmdaq (editable)"
  MMDAQ_SKIP_EXT=1 pipq install -q --no-deps --no-build-isolation -e "$ROOT"
fi
# Compiled in place (incremental with ninja: only changed csrc/ files are rebuilt).
say "building the mmdaq._ext kernels from csrc/"
EXT_LOG="$CACHE/mmdaq-ext-build.log"
mkdir -p "$CACHE"
if ! (cd "$ROOT" && "$PY" setup.py build_ext --inplace >"$EXT_LOG" 2>&1); then
  say "mmdaq._ext FAILED to build; last lines of $EXT_LOG:"; tail -n 30 "$EXT_LOG"; exit 1
fi

# 6. Check the result (from /, i.e. the installed package, not the checkout).
(cd / && "$PY" - <<'PYEOF'
import torch, mmcv, mmengine, mmdet, mmaction, mmdaq
import mmcv.ops, mmdet.models, mmaction.models  # noqa: F401
from mmdaq.kernels import extension_status
print(f'[install] ok: torch {torch.__version__}, mmengine {mmengine.__version__}, '
      f'mmcv {mmcv.__version__}, mmdet {mmdet.__version__}, mmaction2 {mmaction.__version__}, '
      f'mmdaq {mmdaq.__version__} ({extension_status()})')
PYEOF
)
