"""oneDNN's int8 convolution path: bit-exact against the GEMM path; the per-shape choice."""
import copy
import time

import pytest
import torch
import torch.nn.functional as F

from mmdaq.kernels import is_extension_available
from mmdaq.ops import conv_autotune
from mmdaq.ops.geometry import ConvGeometry
from mmdaq.ops.int8_conv_op import int8_conv
from mmdaq.ops.int8_layer import scaled_int8_conv
from mmdaq.ops.int8_matmul import MAX_CHUNK_K
from mmdaq.ops.onednn_conv import int8_conv_onednn, onednn_conv_available, onednn_conv_supported
from mmdaq.quantization.schemes import build_scheme

needs_onednn = pytest.mark.skipif(
    not (is_extension_available() and onednn_conv_available()),
    reason='no exact oneDNN int8 convolution on this CPU (needs VNNI or AMX) or no mmdaq._ext')

GEOMETRIES = [  # (nd, c_in, c_out, k, stride, padding, dilation, groups, batch, size)
    (2, 64, 32, 3, 1, 1, 1, 1, 2, 9),
    (2, 17, 13, 1, 1, 0, 1, 1, 3, 7),  # channels not multiples of 4/8/16
    (2, 16, 24, 3, 2, 1, 1, 1, 1, 10),  # strided, batch 1
    (2, 3, 8, 7, 2, 3, 1, 1, 2, 15),  # the stem's 7x7
    (2, 16, 8, 3, 1, 2, 2, 4, 2, 11),  # dilated, grouped
    (2, 8, 8, 3, 1, 1, 1, 8, 2, 6),  # depthwise
    (2, 6, 5, 3, 1, 0, 1, 1, 2, 5),  # no padding
    (1, 5, 7, 3, 1, 1, 1, 1, 2, 13),
    (3, 4, 6, 3, 1, 1, 1, 1, 2, 5),
    (3, 8, 6, 3, 2, 1, 1, 2, 1, 6),
]


@pytest.fixture
def cpu_conv(monkeypatch):
    """Set MMDAQ_CPU_CONV for one test and start from no measured choices."""
    conv_autotune.reset_autotune()

    def select(mode: str) -> None:
        monkeypatch.setenv('MMDAQ_CPU_CONV', mode)

    yield select
    conv_autotune.reset_autotune()


def _codes(shape, gen, extreme=False):
    if extreme:
        return torch.full(shape, 127, dtype=torch.int8)
    return torch.randint(-127, 128, shape, generator=gen, dtype=torch.int8)


def _geometry_case(nd, c_in, c_out, k, s, p, d, g, batch, size, extreme=False):
    gen = torch.Generator().manual_seed(c_in * 31 + c_out)
    x_q = _codes((batch, c_in) + (size, ) * nd, gen, extreme)
    w_q = _codes((c_out, c_in // g) + (k, ) * nd, gen, extreme)
    geo = ConvGeometry((k, ) * nd, (s, ) * nd, (p, ) * nd, (d, ) * nd, g)
    return x_q, w_q, geo


@needs_onednn
@pytest.mark.parametrize('case', GEOMETRIES)
@pytest.mark.parametrize('with_bias', [False, True])
def test_onednn_equals_gemm_path_bit_for_bit(case, with_bias, cpu_conv):
    x_q, w_q, geo = _geometry_case(*case)
    scale = torch.tensor(3.7e-5)
    bias = torch.randn(w_q.shape[0]) if with_bias else None
    cpu_conv('gemm')
    want = scaled_int8_conv(x_q, w_q, scale, bias, geo)
    got = int8_conv_onednn(x_q, w_q, scale, bias, geo)
    assert got.is_contiguous() and got.shape == want.shape
    assert torch.equal(got, want)
    # And the float64 convolution of the same codes (exact sums) through the same epilogue.
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(geo.kernel)]
    exact = conv(x_q.double(), w_q.double(), stride=geo.stride, padding=geo.padding,
                 dilation=geo.dilation, groups=geo.groups)
    ref = exact.float() * scale + (0 if bias is None else bias.reshape((-1, ) + (1, ) * len(
        geo.kernel)))
    assert torch.equal(got, ref)


@needs_onednn
def test_long_reduction_with_extreme_codes(cpu_conv):
    # Sums of 2304 * 9 products of 127 * 127 (3.3e8 > 2**24): exact in int32, rounded once to
    # float32 the same way on both paths.
    x_q, w_q, geo = _geometry_case(2, 2304, 4, 3, 1, 1, 1, 1, 1, 3, extreme=True)
    cpu_conv('gemm')
    want = scaled_int8_conv(x_q, w_q, torch.tensor(1.0), None, geo)
    got = int8_conv_onednn(x_q, w_q, torch.tensor(1.0), None, geo)
    assert torch.equal(got, want)
    assert got[0, 0, 1, 1].item() == float(2304 * 9 * 127 * 127)


@needs_onednn
def test_reductions_beyond_exact_int32_are_not_sent_to_onednn():
    geo = ConvGeometry((3, 3), (1, 1), (1, 1), (1, 1), 1)
    c_in = MAX_CHUNK_K // 9 + 1
    x_q = torch.zeros(1, c_in, 3, 3, dtype=torch.int8)
    assert not onednn_conv_supported(x_q, torch.zeros(2, c_in, 3, 3, dtype=torch.int8), geo)
    assert onednn_conv_supported(x_q[:, :c_in - 1],
                                 torch.zeros(2, c_in - 1, 3, 3, dtype=torch.int8), geo)
    assert not onednn_conv_supported(x_q, torch.zeros(2, c_in), ConvGeometry((), (), (), ()))


@needs_onednn
@pytest.mark.parametrize('method', ['daq', 'per_tensor'])
@pytest.mark.parametrize('case', [GEOMETRIES[0], GEOMETRIES[2], GEOMETRIES[4], GEOMETRIES[8]])
def test_layer_forward_and_backward_identical_on_every_kernel(method, case, cpu_conv):
    nd, c_in, c_out, k, s, p, d, g, batch, size = case
    gen = torch.Generator().manual_seed(3)
    x = torch.randn((batch, c_in) + (size, ) * nd, generator=gen)
    w = torch.randn((c_out, c_in // g) + (k, ) * nd, generator=gen) * 0.1
    b = torch.randn(c_out, generator=gen)
    geo = ConvGeometry((k, ) * nd, (s, ) * nd, (p, ) * nd, (d, ) * nd, g)
    scheme = build_scheme(method)
    results = {}
    for mode in ('gemm', 'onednn', 'auto'):
        cpu_conv(mode)
        xs, ws, bs = (t.clone().requires_grad_() for t in (x, w, b))
        fresh = copy.deepcopy(scheme)  # held: the op finds the scheme through a weak handle
        y = int8_conv(xs, ws, bs, fresh, geo)
        y.backward(torch.ones_like(y) + y.detach())
        results[mode] = (y.detach(), xs.grad, ws.grad, bs.grad)
    for mode in ('onednn', 'auto'):
        for want, got in zip(results['gemm'], results[mode]):
            assert torch.equal(got, want), mode


def test_fastest_measures_once_and_keeps_the_faster(cpu_conv):
    calls = {'slow': 0, 'quick': 0}

    def slow():
        calls['slow'] += 1
        time.sleep(0.01)
        return torch.ones(2)

    def quick():
        calls['quick'] += 1
        return torch.ones(2)

    out = conv_autotune.fastest('key', {'slow': slow, 'quick': quick})
    assert torch.equal(out, torch.ones(2))
    measured = 1 + conv_autotune.TIMED_RUNS
    assert calls == {'slow': measured, 'quick': measured}
    conv_autotune.fastest('key', {'slow': slow, 'quick': quick})
    assert calls == {'slow': measured, 'quick': measured + 1}
    chosen, timings = conv_autotune.autotune_choices()['key']
    assert chosen == 'quick' and timings['slow'] >= 0.01 > timings['quick']


def test_shape_bucket_groups_sizes_by_powers_of_two():
    assert conv_autotune.shape_bucket(1000) == conv_autotune.shape_bucket(1023)
    assert conv_autotune.shape_bucket(1023) != conv_autotune.shape_bucket(1024)
    assert conv_autotune.shape_bucket(0) == conv_autotune.shape_bucket(1)


def test_bad_mode_is_a_clear_error(cpu_conv):
    cpu_conv('fastest')
    with pytest.raises(ValueError, match='MMDAQ_CPU_CONV must be one of'):
        conv_autotune.cpu_conv_mode()
