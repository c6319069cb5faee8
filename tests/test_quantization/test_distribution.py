"""Tests of mmdaq.quantization.distribution: channel-major layout, statistics, classification."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdaq.quantization import channel_major, channel_statistics, classify_channels
from mmdaq.testing import DEVICES, laplace, spike_and_slab

P_GAUSSIAN = math.erfc(1 / math.sqrt(2))  # P(|g| > sigma) = 0.3173
P_LAPLACE = math.exp(-math.sqrt(2))  # 0.2431
P_UNIFORM = 1 - 1 / math.sqrt(3)  # 0.4226


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _student_t3(shape, gen):
    chi2 = torch.randn(*shape, 3, generator=gen).square().sum(-1)
    return torch.randn(shape, generator=gen) / (chi2 / 3).sqrt()


@pytest.mark.parametrize('dim', [0, 1, 2, 3, -1])
def test_channel_major_rows_are_flattened_slices(dim):
    x = torch.randn(2, 3, 4, 5, generator=_gen(0))
    g_cm = channel_major(x, dim)
    assert g_cm.shape == (x.shape[dim], x.numel() // x.shape[dim])
    for c in range(x.shape[dim]):
        assert torch.equal(g_cm[c], x.select(dim, c).flatten())


def test_channel_major_edge_shapes():
    x = torch.randn(6, 4)
    assert channel_major(x, 0).data_ptr() == x.data_ptr()  # a view when already channel-major
    assert channel_major(torch.arange(3.0), 0).shape == (3, 1)
    assert channel_major(torch.empty(2, 0, 3), 1).shape == (0, 6)
    assert channel_major(torch.empty(2, 4, 0), 1).shape == (4, 0)
    with pytest.raises(ValueError,
                       match='x must be a tensor with at least one dimension, '
                       'but got 0-d tensor'):
        channel_major(torch.tensor(1.0), 0)


@pytest.mark.parametrize('device', DEVICES)
def test_statistics_match_a_float64_reference(device):
    g = (torch.randn(5, 300, generator=_gen(1)) *
         torch.tensor([[1e-20], [1e-3], [1], [1e3], [1e20]])).to(device)
    stats = channel_statistics(g)
    g64 = g.double()
    sigma = g64.square().mean(1).sqrt()
    torch.testing.assert_close(stats.abs_max, g.abs().amax(1), rtol=0, atol=0)
    torch.testing.assert_close(stats.sigma.double(), sigma, rtol=1e-5, atol=0)
    frac = (g64.abs() > sigma[:, None]).double().mean(1)
    torch.testing.assert_close(stats.frac_above_sigma.double(), frac, rtol=0, atol=1.5 / 300)


@pytest.mark.parametrize('sampler, expected', [
    (lambda shape, gen: torch.randn(shape, generator=gen), P_GAUSSIAN),
    (laplace, P_LAPLACE),
    (lambda shape, gen: 2 * torch.rand(shape, generator=gen) - 1, P_UNIFORM),
])
def test_known_exceedance_fractions(sampler, expected):
    stats = channel_statistics(sampler((4, 2**18), _gen(2)))
    # binomial std of the fraction: sqrt(p (1 - p) / 2**18) < 0.001
    torch.testing.assert_close(stats.frac_above_sigma,
                               torch.full((4, ), expected),
                               rtol=0,
                               atol=0.004)


def test_classification_of_bell_shaped_and_inverted_t_channels():
    shape = (8, 2**16)
    assert classify_channels(torch.randn(shape, generator=_gen(3))).all()
    for sampler in (laplace, spike_and_slab, _student_t3):
        assert not classify_channels(sampler(shape, _gen(4))).any(), sampler
    mixed = torch.stack([torch.randn(2**16, generator=_gen(5)), laplace(2**16, _gen(6))])
    assert classify_channels(mixed).tolist() == [True, False]
    assert classify_channels(mixed, threshold=0.2).tolist() == [True, True]


@settings(max_examples=30, deadline=None, derandomize=True)
@given(exponent=st.integers(min_value=-100, max_value=100), seed=st.integers(0, 2**16))
def test_statistics_are_scale_free_even_for_huge_values(exponent, seed):
    g = torch.randn(3, 64, generator=_gen(seed))
    scaled = channel_statistics(g * 2.0**exponent)  # power-of-two scaling is exact
    base = channel_statistics(g)
    assert torch.isfinite(scaled.sigma).all()
    assert torch.equal(scaled.frac_above_sigma, base.frac_above_sigma)
    torch.testing.assert_close(scaled.sigma, base.sigma * 2.0**exponent, rtol=1e-6, atol=0)


def test_zero_empty_and_non_finite_channels():
    g = torch.randn(4, 16, generator=_gen(7))
    g[0] = 0
    g[2, 3] = float('nan')
    g[3, 5] = float('inf')
    stats = channel_statistics(g)
    assert stats.abs_max[0] == 0 and stats.sigma[0] == 0 and stats.frac_above_sigma[0] == 0
    assert torch.isnan(stats.abs_max[2]) and torch.isinf(stats.abs_max[3])
    assert torch.isnan(stats.sigma[2:]).all() and torch.isnan(stats.frac_above_sigma[2:]).all()
    assert torch.equal(channel_statistics(g[1:2]).sigma, stats.sigma[1:2])  # rows independent
    assert classify_channels(g)[[0, 2, 3]].tolist() == [False, False, False]
    empty = channel_statistics(torch.empty(3, 0))
    assert all(torch.equal(t, torch.zeros(3)) for t in empty)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    g = torch.randn(2, 128, generator=_gen(8)).to(dtype)
    stats = channel_statistics(g)
    ref = channel_statistics(g.float())
    assert all(torch.equal(a, b) for a, b in zip(stats, ref))
    assert stats.sigma.dtype == torch.float32


def test_argument_errors():
    with pytest.raises(ValueError,
                       match=r'g_cm must be a 2-d channel-major tensor \[C, M\], '
                       r'but got shape \[2, 3, 4\]'):
        channel_statistics(torch.zeros(2, 3, 4))
    with pytest.raises(TypeError, match='g_cm must be a float32, float16 or bfloat16 tensor'):
        channel_statistics(torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r'threshold must be a number in \[0, 1\], but got 1.5'):
        classify_channels(torch.zeros(2, 3), threshold=1.5)
