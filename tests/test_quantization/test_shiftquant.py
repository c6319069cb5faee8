"""ShiftQuant: the power-of-two group quantizer and the 'shiftquant' scheme (notes A.7 1-4, 7-8)."""
import math

import pytest
import torch

from mmdaq.quantization import ShiftQuantScheme, quantize, shift_quantize, slice_shifts
from mmdaq.quantization.schemes import build_scheme, scheme_options


def _spread(seed, shape=(6, 32, 5), low=-5.0):
    """Slices along dim 1 with magnitudes spread over 2**low .. 1 (log-uniform)."""
    gen = torch.Generator().manual_seed(seed)
    mags = torch.pow(2.0, torch.empty(shape[1]).uniform_(low, 0.0, generator=gen))
    return torch.randn(shape, generator=gen) * mags.view((1, -1) + (1, ) * (len(shape) - 2))


@pytest.mark.parametrize('num_groups', [1, 2, 4, 8])
@pytest.mark.parametrize('num_bits', [4, 6, 8])
def test_shift_invariants_and_codes(num_groups, num_bits):
    x = _spread(num_groups + num_bits)
    x[:, 3] = 0.0  # an all-zero slice
    r = shift_quantize(x, 1, num_groups, num_bits)
    qmax = 2**(num_bits - 1) - 1
    m = x.abs().amax(dim=(0, 2))
    assert r.shifts.dtype == torch.int64
    assert int(r.shifts.min()) >= 0 and int(r.shifts.max()) <= num_groups - 1
    assert r.shifts[3] == num_groups - 1 and (r.codes[:, 3] == 0).all()
    # s_k is exactly s0 * 2**-e_k (a power-of-two fraction of the base scale).
    assert torch.equal(r.scales, r.base_scale * torch.pow(2.0, -r.shifts.float()))
    assert torch.equal(r.base_scale, m.max() / qmax)
    # No slice is clipped; each slice outside the last group uses over half the code range.
    assert (m <= r.scales * qmax * (1 + 1e-6)).all()
    inner = r.shifts < num_groups - 1
    assert (m[inner] > r.scales[inner] * qmax / 2).all()
    assert r.codes.dtype == torch.int8
    assert int(r.codes.abs().max()) == qmax  # the largest slice reaches Q; no zero point
    assert torch.isfinite(r.dequantize()).all()


def test_slice_shifts_are_exact_at_powers_of_two():
    m = torch.tensor([1.0, 0.5, 0.25, 0.2500001, 0.2499999, 2.0**-20, 0.0])
    assert slice_shifts(m, 8).tolist() == [0, 1, 2, 1, 2, 7, 7]
    assert slice_shifts(m, 2).tolist() == [0, 1, 1, 1, 1, 1, 1]


def test_zero_and_non_finite_tensors():
    r = shift_quantize(torch.zeros(3, 4), 1)
    assert r.base_scale == 0 and (r.codes == 0).all() and (r.dequantize() == 0).all()
    x = torch.randn(3, 4)
    x[1, 2] = float('inf')
    r = shift_quantize(x, 1)
    assert torch.isnan(r.base_scale) and (r.codes == 0).all()
    assert torch.isnan(r.dequantize()).all()


def test_stochastic_rounding_is_unbiased_within_one_step_and_variance_bounded():
    x = _spread(1, shape=(4, 8, 3), low=-4.0)
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([shift_quantize(x, 1, 4, 4, 'stochastic', gen).dequantize()
                         for _ in range(4000)])  # [D, *x]
    r = shift_quantize(x, 1, 4, 4)
    step = r.scales.view(1, -1, 1)  # s_k per slice
    assert ((draws - x).abs() <= step * (1 + 1e-6)).all()  # every draw within one step
    err = (draws.mean(0) - x).abs() / step
    assert err.max() < 5 * 0.5 / math.sqrt(4000)  # unbiased: the mean error shrinks as 1/sqrt(n)
    var = draws.var(0)
    assert (var <= step**2 / 4 * 1.1).all()  # Bernoulli variance p(1-p) s^2 <= s^2 / 4
    # ... and within 4x of the per-slice-optimal scale's worst case (m_k / Q)^2 / 4,
    # outside the last group.
    optimal = x.abs().amax(dim=(0, 2)).view(1, -1, 1) / 7
    inner = (r.shifts < 3).view(1, -1, 1).expand_as(var)
    assert (var[inner] <= (4 * optimal**2 / 4 * 1.1).expand_as(var)[inner]).all()


def test_one_group_is_per_tensor_quantization():
    x = _spread(2)
    for rounding in ('nearest', 'stochastic'):
        r = shift_quantize(x, 1, 1, 6, rounding, torch.Generator().manual_seed(3))
        q, scale = quantize(x, rounding=rounding, generator=torch.Generator().manual_seed(3),
                            num_bits=6)
        assert torch.equal(r.codes, q) and torch.equal(r.base_scale, scale)
        assert (r.shifts == 0).all()


@pytest.mark.parametrize('j', [-9, -1, 3, 12])
def test_power_of_two_equivariance(j):
    x = _spread(3)
    gen_a, gen_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = shift_quantize(x, 1, 8, 4, 'stochastic', gen_a)
    b = shift_quantize(x * 2.0**j, 1, 8, 4, 'stochastic', gen_b)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.shifts, b.shifts)
    assert torch.equal(b.base_scale, a.base_scale * 2.0**j)  # only s0 changes
    assert torch.equal(b.dequantize(), a.dequantize() * 2.0**j)


def test_grouping_beats_per_tensor_on_spread_slices():
    x = _spread(4, low=-7.0)

    def mean_slice_error(r):  # relative error per slice, averaged: small slices count too
        return ((r.dequantize() - x).norm(dim=(0, 2)) / x.norm(dim=(0, 2))).mean()

    assert mean_slice_error(shift_quantize(x, 1, 8, 4)) < \
        0.3 * mean_slice_error(shift_quantize(x, 1, 1, 4))


def test_quantizer_option_errors():
    with pytest.raises(ValueError, match='num_groups must be an int in \\[1, 16\\], but got 0'):
        shift_quantize(torch.randn(2, 2), 1, num_groups=0)
    with pytest.raises(ValueError, match='num_bits must be an int in \\[2, 8\\]'):
        shift_quantize(torch.randn(2, 2), 1, num_bits=9)
    with pytest.raises(ValueError, match="rounding must be one of"):
        shift_quantize(torch.randn(2, 2), 1, rounding='up')
    with pytest.raises(ValueError, match='dim must be None or an int'):
        shift_quantize(torch.randn(2, 2), 2)


def test_scheme_options_and_operand_slicing():
    assert set(scheme_options('shiftquant')) >= {'weight_bits', 'input_bits', 'grad_bits',
                                                 'num_groups', 'grad_rounding', 'seed'}
    scheme = build_scheme('shiftquant', seed=0, grad_bits=6)
    assert isinstance(scheme, ShiftQuantScheme) and scheme.dataflow == 'shift'
    assert scheme.grad_rounding == 'stochastic' and scheme.weight_bits == 4
    x, w, g = torch.randn(2, 3, 5, 5), torch.randn(8, 3, 3, 3), _spread(5, (2, 8, 4, 4))
    assert scheme.quantize_input(x).shifts.shape == (3, )  # per C_in
    assert scheme.quantize_weight(w).shifts.shape == (8, )  # per C_out
    for_w, for_x = scheme.quantize_grads(g, dim=1)
    assert for_w.codes.shape == (2 * 16, 8) and for_w.shifts.shape == (32, )  # per position
    assert for_x.codes.shape == g.shape and for_x.shifts.shape == (8, )  # per C_out
    assert int(for_x.codes.abs().max()) <= 31
    twin = build_scheme('shiftquant', seed=0, grad_bits=6)
    assert torch.equal(twin.quantize_grads(g, dim=1)[0].codes, for_w.codes)  # seeded
    with pytest.raises(ValueError, match='grad_bits must be an int in \\[2, 8\\], but got 1'):
        build_scheme('shiftquant', grad_bits=1)
    with pytest.raises(ValueError, match='weight_bits must be an int in \\[2, 8\\]'):
        build_scheme('shiftquant', weight_bits=4.0)
    with pytest.raises(ValueError, match='num_groups must be an int in \\[1, 16\\]'):
        build_scheme('shiftquant', num_groups=17)
    with pytest.raises(TypeError, match="unknown \\['groups'\\]"):
        build_scheme('shiftquant', groups=4)
