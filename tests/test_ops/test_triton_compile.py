"""The quantization and G_Y kernels compile for a Hopper GPU (sm_90) without one, every
constexpr variant the launchers use: the interpreter, which runs them in the other tests, does
not check what the compiler rejects (pointer types, bool stores, float64 atomics)."""
import pytest

from mmdaq.testing import run_without_triton_interpreter

triton = pytest.importorskip('triton')


def compile_all() -> None:
    from mmdaq.ops import triton_grad_stats_kernels as stats
    from mmdaq.ops import triton_quantize as quant
    from mmdaq.testing import compile_triton_for_sm90
    g = dict(g_ptr='*fp32', part_ptr='*fp64', cnt_ptr='*i32', sum_ptr='*fp64', above_ptr='*i32',
             counter_ptr='*i32', stats_ptr='*fp32', keep_ptr='*fp64', q_w_ptr='*i8',
             q_x_ptr='*i8', prev_ptr='*fp32', ratio_ptr='*fp32', gauss_ptr='*i1',
             alpha='fp64', threshold='fp32', lam='fp32')
    x = dict(x_ptr='*fp32', part_ptr='*fp32', codes_ptr='*i8', step_ptr='*fp32', w_ptr='*fp32')
    builds = [(stats._grad_partials_kernel, g,
               dict(CHANNELS_INNER=inner, BLOCK_C=32 if inner else 1, BLOCK_J=32))
              for inner in (True, False)]
    builds += [(stats._grad_histogram_kernel, g,
                dict(Q=127, CHANNELS_INNER=True, SPLITS_P2=4, BLOCK_C=32, BLOCK_J=32, BLOCK_B=32,
                     KEEP_STATS=keep)) for keep in (True, False)]
    builds += [(stats._grad_codes_kernel, g,
                dict(Q=127, CHANNELS_INNER=inner, KEEP_STATE=keep, HAS_HISTORY=keep,
                     BLOCK_C=32, BLOCK_J=64)) for inner in (True, False) for keep in (True, False)]
    builds += [(quant._abs_max_kernel, x, dict(BLOCK_J=32, BLOCK_C=64)),
               (quant._codes_kernel, x, dict(QMAX=127, PARTIALS=64, BLOCK_J=32, BLOCK_C=64)),
               (quant._per_channel_kernel, x, dict(QMAX=127, BLOCK=1024))]
    for kernel, types, constexprs in builds:
        assert compile_triton_for_sm90(kernel, types, constexprs).asm['cubin'], kernel


@pytest.mark.skipif('nvidia' not in triton.backends.backends, reason="needs Triton's CUDA backend")
def test_kernels_compile_for_hopper():
    run_without_triton_interpreter(__file__)


if __name__ == '__main__':
    compile_all()
