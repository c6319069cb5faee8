"""Tests of mmdaq.quantization.quantize: codes, scales, rounding, zero and non-finite policy."""
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mmdaq.quantization import abs_max, dequantize, fake_quantize, max_code, quantize
from mmdaq.testing import DEVICES

FLOAT32_MAX = torch.finfo(torch.float32).max
# Slack of the error bound: float32 rounding of x / scale and q * scale (relative), and a scale
# that underflows to 0 when the clip is below 127 * 2**-149 (absolute).
REL_SLACK = 2e-5
ABS_SLACK = 2.0**-140

finite_floats = st.floats(width=32, allow_nan=False, allow_infinity=False)


def _gen(seed: int, device: str = 'cpu') -> torch.Generator:
    return torch.Generator(device).manual_seed(seed)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(values=st.lists(finite_floats, min_size=1, max_size=48))
def test_nearest_invariants_per_tensor(values):
    x = torch.tensor(values, dtype=torch.float32)
    q, scale = quantize(x)
    assert q.dtype == torch.int8 and q.shape == x.shape
    assert scale.dtype == torch.float32 and scale.shape == ()
    assert int(q.abs().max()) <= 127
    assert torch.isfinite(scale) and scale >= 0
    assert (scale == 0) == bool((x == 0).all())
    x_hat = dequantize(q, scale)
    assert torch.isfinite(x_hat).all()  # also at the float32 maximum
    err = (x.double() - x_hat.double()).abs()
    assert (err <= float(scale) * (0.5 + REL_SLACK) + ABS_SLACK).all()
    q2, scale2 = quantize(x_hat)  # re-quantizing the dequantized values is the identity
    assert torch.equal(q2, q)
    torch.testing.assert_close(scale2, scale, rtol=4e-7, atol=0)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(values=st.lists(finite_floats, min_size=6, max_size=6),
       ratio=st.floats(min_value=0.01, max_value=1.0))
def test_clip_saturates_and_bounds_error_inside(values, ratio):
    x = torch.tensor(values, dtype=torch.float32)
    clip = float(abs_max(x)) * ratio
    q, scale = quantize(x, clip=clip)
    assume(float(scale) > 0)  # a zero clip (or one whose scale underflows) zeroes all codes
    x_hat = dequantize(q, scale)
    inside = x.abs() <= clip
    err = (x.double() - x_hat.double()).abs()
    assert (err[inside] <= float(scale) * (0.5 + REL_SLACK) + ABS_SLACK).all()
    beyond = x.abs() >= clip * (1 + 1e-6)
    assert torch.equal(q[beyond].abs(), torch.full_like(q[beyond], 127))
    assert torch.equal(q[beyond].sign(), x[beyond].sign().to(torch.int8))


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('dim', [0, 1, 2, -1, -3])
def test_per_channel_equals_per_tensor_on_each_slice(device, dim):
    x = torch.randn(3, 4, 5, generator=_gen(0)).to(device)
    x = x * torch.logspace(-20, 20, 5, device=device)  # channels of very different size
    x.select(dim, 1).zero_()  # one all-zero channel
    q, scale = quantize(x, dim=dim)
    assert scale.shape == (x.shape[dim], )
    for c in range(x.shape[dim]):
        q_c, scale_c = quantize(x.select(dim, c))
        assert torch.equal(q.select(dim, c), q_c)
        assert torch.equal(scale[c], scale_c)
    assert torch.equal(dequantize(q, scale, dim).select(dim, 1), torch.zeros_like(x.select(dim, 1)))


def test_per_channel_with_explicit_clips_and_1d_input():
    x = torch.tensor([[1.0, -4.0, 0.5], [8.0, 2.0, -0.25]])  # channels along dim 1
    clip = torch.tensor([2.0, 1.0, 0.5])
    q, scale = quantize(x, clip=clip, dim=1)
    torch.testing.assert_close(scale, clip / 127)
    assert q.tolist() == [[64, -127, 127], [127, 127, -64]]
    q1, scale1 = quantize(torch.tensor([3.0, -0.0, -2.0]), dim=0)  # every element a channel
    assert q1.tolist() == [127, 0, -127] and torch.equal(scale1, torch.tensor([3.0, 0, 2.0]) / 127)


@pytest.mark.parametrize('device', DEVICES)
def test_stochastic_rounding_is_unbiased_and_within_one_step(device):
    num_draws = 4096
    x = torch.linspace(-1.0, 1.0, 67, device=device)[None].expand(num_draws, -1)  # [draws, 67]
    q, scale = quantize(x, clip=1.0, rounding='stochastic', generator=_gen(1, device))
    x_hat = dequantize(q, scale)
    assert ((x - x_hat).abs() < scale).all()
    # per element, the rounding error is bounded by one step, so its std is <= scale / 2
    tol = 6 * float(scale) * 0.5 / num_draws**0.5
    assert float((x_hat.mean(0) - x[0]).abs().max()) < tol
    q_nearest, _ = quantize(x[0], clip=1.0)
    assert float((q.float().mean(0) - q_nearest.float()).abs().max()) < 0.55  # not trivially 0


def test_stochastic_rounding_is_reproducible_with_a_seeded_generator():
    x = torch.randn(1000, generator=_gen(2))
    q_a, _ = quantize(x, rounding='stochastic', generator=_gen(3))
    q_b, _ = quantize(x, rounding='stochastic', generator=_gen(3))
    q_c, _ = quantize(x, rounding='stochastic', generator=_gen(4))
    assert torch.equal(q_a, q_b) and not torch.equal(q_a, q_c)


def test_stochastic_rounding_never_leaves_the_code_range():
    # floor(127 + u) in float32 rounds to 128 for u >= 1 - 2**-18; 2**21 draws hit that ~8 times
    x = torch.tensor([1.0, -1.0]).repeat(2**20)
    q, _ = quantize(x, clip=1.0, rounding='stochastic', generator=_gen(5))
    assert torch.equal(q, torch.tensor([127, -127], dtype=torch.int8).repeat(2**20))


@pytest.mark.parametrize('device', DEVICES)
def test_zero_and_empty_inputs_give_zero_scales(device):
    q, scale = quantize(torch.zeros(4, 3, device=device))
    assert float(scale) == 0 and not q.any()
    assert torch.equal(dequantize(q, scale), torch.zeros(4, 3, device=device))
    q, scale = quantize(torch.randn(5, device=device), clip=0.0)  # a zero clip zeroes the codes
    assert float(scale) == 0 and not q.any()
    for shape, dim, scale_shape in [((0, ), None, ()), ((3, 0), 0, (3, )), ((0, 2), 1, (2, ))]:
        q, scale = quantize(torch.empty(shape, device=device), dim=dim)
        assert q.shape == shape and scale.shape == scale_shape and not scale.any()


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('bad', [float('nan'), float('inf'), -float('inf')])
def test_non_finite_values_give_nan_scales_per_tensor_and_per_channel(device, bad):
    x = torch.randn(3, 4, generator=_gen(6)).to(device)
    x[1, 2] = bad
    q, scale = quantize(x)
    assert torch.isnan(scale) and not q.any()
    assert torch.isnan(dequantize(q, scale)).all()
    q, scale = quantize(x, clip=1.0)  # a finite clip does not hide it either
    assert torch.isnan(scale)
    q, scale = quantize(x, dim=0)
    assert torch.isnan(scale[1]) and not q[1].any()
    assert torch.isnan(dequantize(q, scale, dim=0)[1]).all()
    for c in (0, 2):  # other channels are untouched
        q_c, scale_c = quantize(x[c])
        assert torch.equal(q[c], q_c) and torch.equal(scale[c], scale_c)


@pytest.mark.parametrize('clip', [float('nan'), float('inf'), -1.0])
def test_invalid_clip_values_give_nan_scales(clip):
    q, scale = quantize(torch.randn(8, generator=_gen(7)), clip=clip)
    assert torch.isnan(scale) and not q.any()
    q, scale = quantize(torch.ones(2, 3), clip=torch.tensor([1.0, clip, 2.0]), dim=1)
    assert torch.isnan(scale[1]) and torch.isfinite(scale[[0, 2]]).all()


def test_extreme_finite_values_do_not_overflow():
    x = torch.randn(1000, generator=_gen(8)) * 1e30
    q, scale = quantize(x)
    x_hat = dequantize(q, scale)
    assert torch.isfinite(scale) and torch.isfinite(x_hat).all()
    assert ((x - x_hat).abs() <= scale * (0.5 + REL_SLACK)).all()
    edge = torch.tensor([FLOAT32_MAX, -FLOAT32_MAX, 1.0])
    q, scale = quantize(edge)  # clip / 127 * 127 would round up to inf
    assert q.tolist() == [127, -127, 0] and torch.isfinite(dequantize(q, scale)).all()
    q, scale = quantize(torch.tensor([1e30, -FLOAT32_MAX]), clip=1e-30)  # x / scale -> inf
    assert q.tolist() == [127, -127] and torch.isfinite(scale)
    q, scale = quantize(torch.tensor([1e-39, -3e-40, 0.0]))  # subnormal: 1 / scale is inf
    assert q.tolist() == [127, -38, 0] and 0 < scale < 1e-40


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_inputs_match_float32(dtype):
    x = torch.randn(4, 6, generator=_gen(9)).to(dtype)
    q, scale = quantize(x, dim=0)
    q_ref, scale_ref = quantize(x.float(), dim=0)
    assert scale.dtype == torch.float32
    assert torch.equal(q, q_ref) and torch.equal(scale, scale_ref)
    assert fake_quantize(x).dtype == torch.float32


def test_num_bits_sets_the_code_range():
    x = torch.linspace(-2, 2, 101)
    q, scale = quantize(x, num_bits=4)
    assert max_code(4) == 7 and int(q.abs().max()) == 7
    torch.testing.assert_close(scale, torch.tensor(2.0 / 7))


def test_argument_errors():
    x = torch.randn(3, 4)
    with pytest.raises(TypeError,
                       match=r'x must be a float32, float16 or bfloat16 tensor, '
                       r'but got torch.float64'):
        quantize(x.double())
    with pytest.raises(TypeError, match='x must be a float32.*but got torch.int32'):
        quantize(x.int())
    with pytest.raises(ValueError,
                       match=r"rounding must be one of \('nearest', 'stochastic'\), "
                       r"but got 'up'"):
        quantize(x, rounding='up')
    with pytest.raises(ValueError,
                       match=r'dim must be None or an int in \[-2, 2\) for a 2-d '
                       r'tensor, but got 2'):
        quantize(x, dim=2)
    with pytest.raises(ValueError,
                       match=r'clip must be a scalar or, with dim set, have shape '
                       r'\[4\], but got shape \[3\]'):
        quantize(x, clip=torch.ones(3), dim=1)
    with pytest.raises(ValueError, match=r'clip must be a scalar.*but got shape \[4\]'):
        quantize(x, clip=torch.ones(4))
    with pytest.raises(ValueError, match=r'num_bits must be an int in \[2, 8\], but got 9'):
        quantize(x, num_bits=9)
    with pytest.raises(TypeError, match='q must be an int8 tensor, but got torch.int32'):
        dequantize(x.int(), torch.tensor(1.0))
    with pytest.raises(ValueError, match=r'scale must have shape \[3\] for dim=0, but got \[\]'):
        dequantize(x.to(torch.int8), torch.tensor(1.0), dim=0)


def test_per_channel_abs_max_equals_abs_then_max():
    x = torch.randn(3, 5, 4, 4, generator=torch.Generator().manual_seed(0))
    x[:, 0] = -0.0
    x[1, 1, 2, 2] = float('nan')
    x[0, 2, 0, 0] = -float('inf')
    x[2, 3, 1, 1] = float('inf')
    x[:, 4] = -x[:, 4].abs()  # a channel whose abs-max comes from its minimum
    got = abs_max(x, dim=1)
    want = x.abs().amax(dim=(0, 2, 3))
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(got[~got.isnan()], want[~want.isnan()])
    assert got[0] == 0 and torch.isinf(got[2]) and torch.isinf(got[3]) and got[4] > 0
