"""The kernels of the Triton convolutions: their autotuning configs and pruning, and (without a
GPU) that every kernel compiles for a Hopper GPU, which the interpreter does not check."""
import importlib
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')
triton = pytest.importorskip('triton')

from mmdaq.ops import triton_conv  # noqa: E402
from mmdaq.ops import triton_conv_kernels as kernels  # noqa: E402
from mmdaq.testing import compile_triton_for_sm90, run_without_triton_interpreter  # noqa: E402


@pytest.fixture(scope='module', autouse=True)
def fresh_module():
    importlib.reload(kernels)  # the config lists follow TRITON_INTERPRET at import time
    importlib.reload(triton_conv)


def test_gpu_tiles_suit_int8_dot_and_the_splits():
    for block_m, block_n, block_k, _, _ in kernels._GEMM_TILES:
        assert block_k >= 32 and min(block_m, block_n) >= 16  # int8 tl.dot on GPUs
    widest_m = max(tile[2] for tile in kernels._WGRAD_TILES)
    for block_co, block_c, block_m, _, _ in kernels._WGRAD_TILES:
        assert block_m >= 32 and min(block_co, block_c) >= 16  # BLOCK_M is the dot's K
        assert widest_m % block_m == 0  # splits of whole steps for every config
    for tile in kernels._GEMM_TILES + kernels._WGRAD_TILES:
        assert all(triton.next_power_of_2(b) == b for b in tile[:3])


@pytest.mark.skipif(os.environ.get('TRITON_INTERPRET') != '1', reason='interpreter only')
def test_interpreter_runs_one_config_per_kernel():
    assert len(kernels.GEMM_CONFIGS) == len(kernels.WGRAD_CONFIGS) == 1
    assert kernels.WGRAD_SPLIT_UNIT == kernels.WGRAD_CONFIGS[0].kwargs['BLOCK_M']


def test_autotuning_can_be_switched_off(monkeypatch):
    monkeypatch.setenv('TRITON_INTERPRET', '0')
    monkeypatch.setenv('MMDAQ_TRITON_AUTOTUNE', '0')
    try:
        importlib.reload(kernels)
        assert [c.kwargs for c in kernels.GEMM_CONFIGS] == [
            dict(zip(('BLOCK_M', 'BLOCK_N', 'BLOCK_K'), kernels._GEMM_FIXED[:3]))]
        assert len(kernels.WGRAD_CONFIGS) == 1
        assert kernels._GEMM_FIXED in kernels._GEMM_TILES
        assert kernels._WGRAD_FIXED in kernels._WGRAD_TILES
    finally:
        monkeypatch.undo()
        importlib.reload(kernels)
        importlib.reload(triton_conv)


def test_pruning_keeps_tiles_that_fit():
    gemm = kernels._configs(('BLOCK_M', 'BLOCK_N', 'BLOCK_K'), kernels._GEMM_TILES)
    kept = kernels.prune_forward(gemm, dict(M_BUCKET=1 << 16, CO=16, C=3))  # a stem
    assert kept and all(cfg.kwargs['BLOCK_N'] == cfg.kwargs['BLOCK_K'] == 32 for cfg in kept)
    assert kernels.prune_forward(gemm, dict(M_BUCKET=1 << 16, CO=256, C=256)) == gemm
    # The input gradient swaps the roles of C and C_out; nothing fits 16 positions: smallest.
    kept = kernels.prune_dgrad(gemm, dict(M_BUCKET=16, CO=512, C=512))
    assert [cfg.kwargs for cfg in kept] == [dict(BLOCK_M=64, BLOCK_N=32, BLOCK_K=32)]
    wgrad = kernels._configs(('BLOCK_CO', 'BLOCK_C', 'BLOCK_M'), kernels._WGRAD_TILES)
    kept = kernels.prune_wgrad(wgrad, dict(M_BUCKET=1 << 12, CO=32, C=3))
    assert [cfg.kwargs for cfg in kept] == [dict(BLOCK_CO=32, BLOCK_C=32, BLOCK_M=128)]
    assert kernels.position_bucket(1) == 16 and kernels.position_bucket(1000) == 1024


def compile_for_hopper() -> None:
    """Compile every kernel variant with its widest tiles for sm_90 (no GPU needed); run in a
    process without the interpreter, whose triton.language helpers the compiler cannot use."""
    gemm, wgrad = kernels.GEMM_CONFIGS[0], kernels.WGRAD_CONFIGS[0]
    codes = dict(x_ptr='*i8', g_ptr='*i8', w_ptr='*i8', scale_ptr='*fp32', scale2_ptr='*fp32',
                 bias_ptr='*fp32', out_ptr='*fp32', part_ptr='*fp64')
    two = dict(HAS_SCALE2=True)
    builds = [
        (kernels.int8_conv2d_kernel, codes,
         dict(PER_CHANNEL=True, HAS_BIAS=True, OUT_BF16=False, **two), gemm),
        (kernels.int8_conv2d_kernel, dict(codes, out_ptr='*bf16'),
         dict(PER_CHANNEL=False, HAS_BIAS=False, OUT_BF16=True, **two), gemm),
        (kernels.int8_conv2d_dgrad_kernel, codes, dict(LONG_K=False, **two), gemm),
        (kernels.int8_conv2d_dgrad_kernel, codes, dict(LONG_K=True, HAS_SCALE2=False), gemm),
        (kernels.int8_conv2d_wgrad_kernel, codes, dict(PER_CHANNEL=True, SPLIT=False, **two),
         wgrad),
        (kernels.int8_conv2d_wgrad_kernel, dict(codes, out_ptr='*fp64'),
         dict(PER_CHANNEL=True, SPLIT=True, HAS_SCALE2=False), wgrad),
        (kernels.weight_grad_epilogue_kernel, codes, dict(PER_CHANNEL=True, BLOCK=1024, **two),
         triton.Config({}, num_warps=4, num_stages=1)),
    ]
    for kernel, types, constexprs, config in builds:
        assert compile_triton_for_sm90(kernel, types, constexprs, config=config).asm['cubin']


@pytest.mark.skipif('nvidia' not in triton.backends.backends, reason="needs Triton's CUDA backend")
def test_kernels_compile_for_hopper_with_their_widest_tiles():
    run_without_triton_interpreter(__file__)


if __name__ == '__main__':
    compile_for_hopper()
