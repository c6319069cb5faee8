#!/usr/bin/env bash
# Compile-check csrc/cuda/*.cu with nvcc, using the flags setup.py/torch's CUDAExtension use.
# Compilation only: nothing is linked, loaded or run, so no GPU is needed (and none is checked).
#
# Getting nvcc without a CUDA toolkit (from PyPI, ~1.6 GB, of which 1.3 GB are unused .so libs):
#   python -m pip install --no-deps --target /tmp/nvcc/pkgs \
#       nvidia-cuda-nvcc==13.5.37 nvidia-nvvm==13.5.37 nvidia-cuda-crt==13.5.37 \
#       nvidia-cuda-runtime==13.5.37 nvidia-cuda-cccl nvidia-cublas nvidia-cusparse \
#       nvidia-cusolver nvidia-curand
#   NVCC=/tmp/nvcc/pkgs/nvidia/cu13/bin/nvcc tools/check_cuda_compile.sh
# (The CUDA 13 wheels put everything under nvidia/cu13/, and their nvcc.profile adds its
# include/ by itself. The nvidia-cuda-nvcc-cu12 wheels ship only ptxas, no nvcc: unusable.)
# An nvcc already installed without the cuBLAS/cuSPARSE/cuSOLVER headers that ATen/cuda needs
# (e.g. /usr/local/cuda here): pip install --no-deps --target DIR nvidia-cublas nvidia-cusparse
# nvidia-cusolver, then CUDA_INCLUDE=DIR/nvidia/cu13/include tools/check_cuda_compile.sh
#
# Environment:
#   NVCC          nvcc to use (default: nvcc on PATH)
#   CUDA_INCLUDE  extra CUDA include dirs, ':'-separated (default: <nvcc>/../include if present)
#   PYTHON        python with torch (default: .venv/bin/python if present, else python3)
#   CUDA_ARCHS    space-separated SM numbers (default: "80 90")
#   NVCC_FLAGS    extra nvcc flags, e.g. "-Xptxas -warn-spills --resource-usage"
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

NVCC=${NVCC:-$(command -v nvcc || true)}
if [[ -z "$NVCC" || ! -x "$NVCC" ]]; then
  echo "nvcc not found: put it on PATH or set NVCC (see the header of $0)" >&2
  exit 2
fi
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

# Torch's own nvcc flags and include dirs, plus Python's include dir (added by setuptools).
mapfile -t TORCH_ARGS < <("$PYTHON" - <<'EOF'
import os, sysconfig
from torch.utils import cpp_extension as ce
for flag in ce.COMMON_NVCC_FLAGS:
    print(flag)
for inc in ce.include_paths() + [sysconfig.get_paths()['include']]:
    print('-I' + inc)
# CPU-only torch wheels lack this generated header (it only matters on Windows).
if not os.path.exists(os.path.join(ce.include_paths()[0], 'c10/cuda/impl/cuda_cmake_macros.h')):
    print('-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE')
EOF
)
if [[ ${#TORCH_ARGS[@]} -eq 0 ]]; then echo "could not import torch with $PYTHON" >&2; exit 2; fi

CUDA_INCLUDE=${CUDA_INCLUDE:-$(cd "$(dirname "$NVCC")/.." && pwd)/include}
INC_ARGS=()
IFS=: read -ra dirs <<<"$CUDA_INCLUDE"
for d in "${dirs[@]}"; do
  if [[ -d "$d" ]]; then INC_ARGS+=("-I$d"); fi
done

# As setup.py: MMDAQ_WITH_CUDA, the extension name, -O3 -std=c++17, -fPIC for the host side.
FLAGS=(-c -O3 -std=c++17 --compiler-options -fPIC -DMMDAQ_WITH_CUDA
       -DTORCH_API_INCLUDE_EXTENSION_H -DTORCH_EXTENSION_NAME=_ext)
read -ra EXTRA <<<"${NVCC_FLAGS:-}"

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

"$NVCC" --version | tail -n 2
failed=0
for arch in ${CUDA_ARCHS:-80 90}; do
  for src in csrc/cuda/*.cu; do
    name=$(basename "$src" .cu)
    log="$TMP/$name.sm$arch.log"
    if "$NVCC" "$src" -o "$TMP/$name.sm$arch.o" "${FLAGS[@]}" "${TORCH_ARGS[@]}" \
        "${INC_ARGS[@]}" "-gencode=arch=compute_$arch,code=sm_$arch" "${EXTRA[@]}" >"$log" 2>&1; then
      echo "OK      sm_$arch $src"
    else
      echo "FAILED  sm_$arch $src"
      cat "$log"
      failed=1
    fi
  done
done
exit "$failed"
