#!/usr/bin/env bash
# GPU validation in one call: build the CUDA extension, run the kernel tests (CPU and CUDA),
# benchmark layers and training iterations against FP32 (TF32 off) and BF16 autocast, and
# profile one DAQ layer. Needs only torch (+ torchvision for the end-to-end stand-ins), pytest
# and nvcc: no OpenMMLab install. Every stage runs even if an earlier one failed; logs and
# JSON go to OUT_DIR.
#
#   bash tools/benchmarks/gpu_validate.sh OUT_DIR     (SKIP_E2E=1, SKIP_PROFILE=1: fewer stages)
set -u
OUT=${1:-work_dirs/gpu_validate}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
stage() { echo "== $1 ($(date +%T))" | tee -a "$OUT/summary.txt"; }

stage env
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  $PY -c "import sys, torch; print(sys.version.split()[0], torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"
  nvcc --version | tail -1; nproc; } 2>&1 | tee -a "$OUT/summary.txt"

stage build
t0=$(date +%s)
FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16} \
  $PY setup.py build_ext --inplace > "$OUT/build.log" 2>&1
echo "build rc=$? in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/summary.txt"
grep -E "error|ptxas info" "$OUT/build.log" | head -20
$PY -c "import mmdaq.kernels as k; print(k.extension_status())" 2>&1 | tee -a "$OUT/summary.txt"

stage "error paths"
timeout 60 $PY tools/benchmarks/check_error_paths.py 2>&1 | tee -a "$OUT/summary.txt"

stage tests
TRITON_TESTS="tests/test_ops/test_triton_conv.py tests/test_ops/test_triton_conv_op.py
  tests/test_ops/test_triton_conv_kernels.py tests/test_ops/test_triton_quantize.py
  tests/test_ops/test_triton_grad_stats.py tests/test_ops/test_fused_layer.py"
# one tile per Triton GEMM here: autotuning would compile and time every tile for each shape
MMDAQ_TRITON_AUTOTUNE=0 timeout 150 $PY -m pytest -q -p no:cacheprovider \
  tests/test_ops/test_cuda_kernels.py $TRITON_TESTS tests/test_ops/test_cuda_step.py \
  tests/test_ops/test_int8_conv_op.py > "$OUT/pytest_cuda.log" 2>&1
echo "pytest (CUDA kernels) rc=$?" | tee -a "$OUT/summary.txt"
grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/pytest_cuda.log" | tail -12 | tee -a "$OUT/summary.txt"

stage layers
timeout 120 $PY tools/benchmarks/bench_layers.py --reps 10 --warmup 3 --channels-last \
  --json "$OUT/bench_layers_cuda.json" > "$OUT/bench_layers.log" 2>&1
echo "bench_layers rc=$?" | tee -a "$OUT/summary.txt"
tail -4 "$OUT/bench_layers.log" | tee -a "$OUT/summary.txt"

if [ -n "${COMPARE_NO_TRITON:-}" ]; then  # the same layers without the Triton conv kernel
stage "layers (MMDAQ_TRITON=0)"
MMDAQ_TRITON=0 timeout 120 $PY tools/benchmarks/bench_layers.py --reps 10 --warmup 3 \
  --json "$OUT/bench_layers_cuda_no_triton.json" > "$OUT/bench_layers_no_triton.log" 2>&1
tail -3 "$OUT/bench_layers_no_triton.log" | tee -a "$OUT/summary.txt"
fi

if [ -z "${SKIP_E2E:-}" ]; then
stage e2e
timeout 100 $PY tools/benchmarks/bench_layers.py --e2e tv_faster_rcnn tv_tsn_r50 tv_r3d_18 \
  --e2e-reps 5 --json "$OUT/bench_e2e_cuda.json" > "$OUT/bench_e2e.log" 2>&1
echo "bench_e2e rc=$?" | tee -a "$OUT/summary.txt"
tail -4 "$OUT/bench_e2e.log" | tee -a "$OUT/summary.txt"
fi

if [ -z "${SKIP_PROFILE:-}" ]; then
stage profile
{ timeout 30 $PY tools/benchmarks/profile_daq_layer.py --rows 25
  timeout 30 $PY tools/benchmarks/profile_daq_layer.py --channels 256 --out-channels 64 \
    --kernel 1 --rows 25; } > "$OUT/profile.log" 2>&1
echo "profile rc=$?" | tee -a "$OUT/summary.txt"
fi

stage "tests (CPU ops on this machine)"
timeout 100 $PY -m pytest -q -p no:cacheprovider --continue-on-collection-errors \
  tests/test_ops tests/test_quantization tests/test_analysis/test_benchmark.py \
  --deselect tests/test_ops/test_cuda_kernels.py --deselect tests/test_ops/test_cuda_step.py \
  $(for t in $TRITON_TESTS; do printf -- '--deselect %s ' "$t"; done) \
  ${PYTEST_DESELECT:-} > "$OUT/pytest.log" 2>&1
echo "pytest rc=$?" | tee -a "$OUT/summary.txt"
grep -E "^(FAILED|ERROR)|passed|failed|Fatal|test_.*\.py\", line" "$OUT/pytest.log" | tail -12 \
  | tee -a "$OUT/summary.txt"

stage "roofline vs this run"  # the model's predictions beside what was just measured
timeout 90 $PY tools/benchmarks/roofline.py --batch 64 --devices h100 h200 \
  --measured "$OUT/bench_layers_cuda.json" --json "$OUT/roofline.json" > "$OUT/roofline.log" 2>&1
echo "roofline rc=$?" | tee -a "$OUT/summary.txt"
grep -E "^medians|^predicted" "$OUT/roofline.log" | tee -a "$OUT/summary.txt"
stage done
