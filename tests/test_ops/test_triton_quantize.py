"""The fused Triton quantization of X and W against ``quantize``, bit for bit.

On CUDA where Triton is installed; without a GPU, in Triton's interpreter on CPU tensors
(``TRITON_INTERPRET=1``, set for this module before triton is imported) when triton is
installed; skipped otherwise.
"""
import importlib
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')
pytest.importorskip('triton')

from mmdaq.analysis.op_trace import OpTrace  # noqa: E402
from mmdaq.ops import triton_quantize  # noqa: E402
from mmdaq.ops.triton_launch import count_launches  # noqa: E402
from mmdaq.quantization.quantize import quantize  # noqa: E402

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'
INTERPRETED = os.environ.get('TRITON_INTERPRET') == '1'
FLOAT_MAX = torch.finfo(torch.float32).max


@pytest.fixture(scope='module', autouse=True)
def fresh_module():
    importlib.reload(triton_quantize)  # pick up TRITON_INTERPRET if triton was imported before


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of 16 elements and few programs, so that tiny tensors take many tiles per program
    and many partial maxima (the loops of both kernels)."""
    monkeypatch.setattr(triton_quantize, '_BLOCK', 16)
    monkeypatch.setattr(triton_quantize, '_MAX_PARTIALS', 3)
    monkeypatch.setattr(triton_quantize, '_MAX_CODE_PROGRAMS', 2)


def _assert_same(got, want):
    """Codes equal and steps bit-identical (NaN included) but for the sign of a zero step (the
    reference's may be -0.0, ours is +0.0); the step a float32 tensor on the codes' device."""
    codes, scale = got
    want_codes, want_scale = want
    assert codes.dtype == torch.int8 and codes.shape == want_codes.shape
    assert scale.dtype == torch.float32 and scale.shape == want_scale.shape
    assert scale.device == codes.device and codes.device.type == DEVICE
    assert torch.equal(codes.cpu(), want_codes)
    scale = scale.cpu()
    same_bits = scale.view(torch.int32) == want_scale.view(torch.int32)
    assert (same_bits | ((scale == 0) & (want_scale == 0))).all()
    assert not (scale.view(torch.int32) == torch.tensor(-0.0).view(torch.int32)).any()


def _per_tensor(x, num_bits=8):
    got = triton_quantize.quantize_per_tensor_triton(x.to(DEVICE), num_bits=num_bits)
    _assert_same(got, quantize(x, num_bits=num_bits))
    return got


def _torch_compute_ops(trace):
    """PyTorch ops other than allocations (and the interpreter's copies to and from the host):
    the quantization itself runs no PyTorch kernel."""
    allowed = {'aten.empty', 'aten.new_empty'}
    if INTERPRETED:
        allowed |= {'aten.set_', 'aten.copy_'}
    return [r.name for r in trace.records if '.'.join(r.name.split('.')[:2]) not in allowed]


def _randn(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


SHAPES = [(), (0, ), (1, ), (7, ), (3, 5), (2, 0, 3), (1037, ), (2, 3, 5, 7), (0, 3, 4, 4),
          (2, 3, 2, 3, 4), (1, 1, 1, 1, 1, 1)]


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('num_bits', [8, 6, 4])
def test_per_tensor_equals_reference(shape, num_bits):
    _per_tensor(_randn(*shape) * 3, num_bits)


@pytest.mark.parametrize('make', [
    lambda: _randn(2, 5, 3, 4).contiguous(memory_format=torch.channels_last),
    lambda: _randn(2, 5, 3, 3, 4).contiguous(memory_format=torch.channels_last_3d),
    lambda: _randn(2, 6, 5, 4)[:, ::2, 1:],                    # sliced: no dims merge
    lambda: _randn(3, 40, 6, 5).permute(0, 2, 1, 3),           # permuted NCHW
    lambda: _randn(7, 9).t(),                                  # transposed 2-D
    lambda: _randn(4, 1, 3).expand(4, 5, 3),                   # stride 0 (overlapping)
    lambda: _randn(2, 2, 3, 2, 3, 2).permute(5, 3, 1, 4, 2, 0),  # 6 dims: copied first
    lambda: _randn(2, 1, 5, 5)[:, :, ::2],                     # one channel, sliced
], ids=['channels_last', 'channels_last_3d', 'sliced', 'permuted', 'transposed', 'expanded',
        'six_dims', 'one_channel'])
def test_any_layout_equals_reference(make):
    _per_tensor(make())


@pytest.mark.parametrize('shape', [(37, ), (2, 3, 5, 7), (2, 9, 3, 3, 2)])
@pytest.mark.parametrize('channels_last', [False, True])
def test_many_tiles_per_program_equal_reference(small_tiles, shape, channels_last):
    x = _randn(*shape)
    if channels_last and x.dim() in (4, 5):
        x = x.contiguous(memory_format=torch.channels_last if x.dim() == 4 else
                         torch.channels_last_3d)
    _per_tensor(x)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_inputs_equal_reference(dtype):
    _per_tensor((_randn(3, 4, 5, 2) * 10).to(dtype))
    _per_tensor(_randn(33).to(dtype), num_bits=4)


def test_codes_layout():
    q4, _ = triton_quantize.quantize_per_tensor_triton(_randn(2, 3, 4, 5).to(DEVICE))
    q5, _ = triton_quantize.quantize_per_tensor_triton(_randn(2, 3, 2, 4, 5).to(DEVICE))
    q3, _ = triton_quantize.quantize_per_tensor_triton(_randn(3, 4, 5).permute(2, 0, 1).to(DEVICE))
    assert q4.is_contiguous(memory_format=torch.channels_last)
    assert q5.is_contiguous(memory_format=torch.channels_last_3d)
    assert q3.is_contiguous()


@pytest.mark.parametrize('values', [
    [0.0] * 6,                                     # all zero: step 0, codes 0
    [0.0, -0.0],
    [63.5] + [0.25 + 0.5 * k for k in range(-127, 126)],  # step 0.5, x / step = k + 0.5: ties
    [1e30, -3e29, 7.0, 1e-30],                     # large magnitudes
    [FLOAT_MAX, -FLOAT_MAX, 1e38, 1.0],            # step nudged: Q * step stays finite
    [1e-44, -3e-45, 0.0],                          # subnormal clip: step underflows to 0
    [1.0, float('nan'), 2.0],                      # NaN: NaN step, codes 0
    [1.0, float('inf'), -2.0],
    [float('-inf')],
])
@pytest.mark.parametrize('num_bits', [8, 2])
@pytest.mark.filterwarnings('ignore:overflow encountered:RuntimeWarning')  # interpreter's numpy
def test_edge_values_equal_reference(values, num_bits):
    _per_tensor(torch.tensor(values), num_bits)


def test_ties_round_half_to_even():
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, 63.5])  # step 63.5 / 127 = 0.5
    codes, scale = _per_tensor(x)
    assert scale.item() == 0.5
    assert codes.cpu().tolist() == [1, 3, 5, -1, -3, 127]


def test_two_launches_and_no_host_sync():
    x = _randn(2, 3, 4, 5).to(DEVICE)
    with OpTrace() as trace, count_launches() as names:
        codes, scale = triton_quantize.quantize_per_tensor_triton(x)
    assert names == ['_abs_max_kernel', '_codes_kernel']
    assert trace.syncs() == [] and _torch_compute_ops(trace) == []
    assert isinstance(scale, torch.Tensor) and scale.dim() == 0 and scale.device == x.device
    with count_launches() as names:
        triton_quantize.quantize_per_tensor_triton(torch.empty(0, device=DEVICE))
    assert len(names) == 2


@pytest.mark.parametrize('shape', [(4, 3, 3, 3), (5, 7), (6, ), (3, 0), (0, 3), (2, 1037),
                                   (3, 2, 3, 2, 2)])
@pytest.mark.parametrize('num_bits', [8, 4])
def test_per_channel_weight_equals_reference(shape, num_bits):
    w = _randn(*shape, seed=1) * 0.1
    got = triton_quantize.quantize_weight_triton(w.to(DEVICE), num_bits, per_channel=True)
    _assert_same(got, quantize(w, dim=0, num_bits=num_bits))
    assert got[0].is_contiguous()


@pytest.mark.parametrize('make', [
    lambda w: w.contiguous(memory_format=torch.channels_last),
    lambda w: w[:, :, ::2],
    lambda w: w.half(),
], ids=['channels_last', 'sliced', 'float16'])
def test_per_channel_weight_any_layout(make):
    w = make(_randn(5, 4, 3, 3, seed=2))
    got = triton_quantize.quantize_weight_triton(w.to(DEVICE), per_channel=True)
    _assert_same(got, quantize(w, dim=0))


@pytest.mark.filterwarnings('ignore:overflow encountered:RuntimeWarning')
def test_per_channel_edge_rows():
    w = _randn(6, 5, seed=3)
    w[1] = 0.0                    # step 0, codes 0
    w[2, 3] = float('nan')        # NaN step, codes 0 in that row only
    w[3, 0] = float('-inf')
    w[4] = torch.tensor([FLOAT_MAX, -1e38, 1.0, 0.0, 3.0])
    w[5] = torch.tensor([0.25, 0.75, 1.25, -2.25, 63.5])  # ties
    got = triton_quantize.quantize_weight_triton(w.to(DEVICE), per_channel=True)
    _assert_same(got, quantize(w, dim=0))


def test_per_channel_long_rows(small_tiles):
    w = _randn(3, 4, 5, seed=4)  # rows of 20 elements in blocks of 16
    got = triton_quantize.quantize_weight_triton(w.to(DEVICE), per_channel=True)
    _assert_same(got, quantize(w, dim=0))


def test_per_tensor_weight_equals_reference():
    w = _randn(8, 3, 3, 3, seed=5).contiguous(memory_format=torch.channels_last)
    codes, scale = triton_quantize.quantize_weight_triton(w.to(DEVICE), num_bits=6)
    _assert_same((codes, scale), quantize(w, num_bits=6))
    assert codes.is_contiguous()


def test_weight_launch_counts():
    w = _randn(4, 3, 3, 3).to(DEVICE)
    with OpTrace() as trace, count_launches() as names:
        triton_quantize.quantize_weight_triton(w, per_channel=True)
    assert names == ['_per_channel_kernel']
    assert trace.syncs() == [] and _torch_compute_ops(trace) == []
    with count_launches() as names:
        triton_quantize.quantize_weight_triton(w)
    assert names == ['_abs_max_kernel', '_codes_kernel']
    with count_launches() as names:
        codes, scale = triton_quantize.quantize_weight_triton(
            torch.empty(0, 3, device=DEVICE), per_channel=True)
    assert names == [] and codes.shape == (0, 3) and scale.shape == (0, )


def test_invalid_arguments():
    with pytest.raises(TypeError, match='float32, float16 or bfloat16'):
        triton_quantize.quantize_per_tensor_triton(torch.zeros(3, dtype=torch.float64))
    with pytest.raises(TypeError, match='float32, float16 or bfloat16'):
        triton_quantize.quantize_weight_triton(torch.zeros(3, dtype=torch.int8), per_channel=True)
    with pytest.raises(ValueError, match='num_bits'):
        triton_quantize.quantize_per_tensor_triton(torch.zeros(3), num_bits=9)
    with pytest.raises(ValueError, match='at least one dim'):
        triton_quantize.quantize_weight_triton(torch.zeros(()), per_channel=True)


def test_weight_codes_in_a_memory_order():
    w = _randn(6, 4, 3, 3, seed=9).to(DEVICE)
    order = (2, 3, 1, 0)  # [KH, KW, C, C_out]: the forward GEMM's order
    codes, scale = triton_quantize.quantize_weight_triton(w, num_bits=7, memory_order=order)
    _assert_same((codes, scale), quantize(w.cpu(), num_bits=7))
    assert codes.shape == w.shape and codes.permute(order).is_contiguous()
    with pytest.raises(ValueError, match='memory_order must be a permutation'):
        triton_quantize.quantize_weight_triton(w, memory_order=(0, 1, 2))
    with pytest.raises(ValueError, match='per tensor only'):
        triton_quantize.quantize_weight_triton(w, per_channel=True, memory_order=order)
