"""The compiled per-channel gradient statistics against the plain-PyTorch reference."""
import pytest
import torch

from mmdaq.quantization.distribution import gradient_statistics, gradient_statistics_reference
from mmdaq.quantization.histogram_clip import objective_curve_from_histograms
from mmdaq.testing import mixed_channel_grad

pytestmark = pytest.mark.needs_ext


@pytest.mark.parametrize('shape, dim', [((4, 5, 7, 7), 1), ((3, 6, 2, 5, 5), 1), ((64, 5), 1),
                                        ((5, 9), 0), ((2, 4, 1, 1), 1)])
@pytest.mark.parametrize('num_bins', [0, 1, 16, 1024])
def test_kernel_matches_reference(shape, dim, num_bins):
    g = mixed_channel_grad(shape, 0).movedim(1, dim).contiguous()
    got = torch.ops.mmdaq.grad_channel_stats(g, dim, num_bins, 0.0, 127, True)
    got = got[:3] + got[4:]
    want = gradient_statistics_reference(g, dim, num_bins)
    assert got[5].dtype == torch.int64 and torch.equal(got[5], want.zero_count)
    m = g.numel() // g.shape[dim]
    assert want.zero_count[2] == m  # the all-zero channel
    assert torch.equal(got[0], want.abs_max)  # a max is exact
    torch.testing.assert_close(got[1], want.sigma, rtol=1e-6, atol=0)
    torch.testing.assert_close(got[2], want.frac_above_sigma, rtol=0, atol=1.01 / m)
    assert torch.equal(got[3], want.hist_count)  # same float32 binning: the same bins
    torch.testing.assert_close(got[4], want.hist_sum, rtol=1e-12, atol=1e-12)


def test_non_finite_channels_and_non_contiguous_input():
    g = mixed_channel_grad((4, 5, 6, 6), 1)
    g[0, 0, 0, 0] = float('nan')
    g[1, 3, 2, 2] = float('inf')
    g[0, 0, 1, :3] = 0.0  # exact zeros next to the NaN are still counted
    abs_max, sigma, frac, ratio, count, _, zeros = torch.ops.mmdaq.grad_channel_stats(
        g, 1, 8, 3.0, 127, True)
    assert torch.equal(zeros, (g == 0).sum((0, 2, 3)))
    assert zeros[0] >= 3 and zeros[2] == 4 * 36
    assert torch.isnan(ratio[[0, 3]]).all() and ratio[2] == 1.0
    assert torch.isnan(abs_max[0]) and torch.isinf(abs_max[3])
    assert torch.isnan(sigma[[0, 3]]).all() and torch.isnan(frac[[0, 3]]).all()
    assert torch.isfinite(abs_max[[1, 2, 4]]).all() and count[2, 0] == 4 * 36
    view = mixed_channel_grad((6, 5, 4, 4), 2).transpose(0, 2)  # a non-contiguous view
    got = gradient_statistics(view, 1, 16)
    want = gradient_statistics_reference(view, 1, 16)
    assert torch.equal(got.abs_max, want.abs_max) and torch.equal(got.hist_count, want.hist_count)
    assert torch.equal(got.zero_count, want.zero_count)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(RuntimeError, match='g must be float32'):
        torch.ops.mmdaq.grad_channel_stats(torch.zeros(2, 3, dtype=torch.float64), 1, 4, 3.0,
                                           127, True)
    with pytest.raises(RuntimeError, match='dim must be in'):
        torch.ops.mmdaq.grad_channel_stats(torch.zeros(2, 3), 2, 4, 3.0, 127, True)
    with pytest.raises(RuntimeError, match='num_bins must be >= 0'):
        torch.ops.mmdaq.grad_channel_stats(torch.zeros(2, 3), 1, -1, 3.0, 127, True)
    with pytest.raises(RuntimeError, match='alpha must be a finite number'):
        torch.ops.mmdaq.grad_channel_stats(torch.zeros(2, 3), 1, 4, -1.0, 127, True)


def test_fake_gives_shapes_for_tracing():
    from torch._subclasses.fake_tensor import FakeTensorMode

    from mmdaq.kernels import grad_channel_stats
    with FakeTensorMode():
        out = grad_channel_stats(torch.empty(2, 5, 3, 3), 1, 16)
        lean = grad_channel_stats(torch.empty(2, 5, 3, 3), 1, 16, return_hist=False)
    assert [tuple(t.shape) for t in out] == [(5, )] * 4 + [(5, 16), (5, 16), (5, )]
    assert out[4].dtype == torch.float64 and tuple(lean[4].shape) == (5, 0)
    assert out[6].dtype == torch.int64 and tuple(lean[6].shape) == (5, )


# The kernel's bin weights use exp as a table times a polynomial of degree 6 where alpha / bins
# <= 1/64 (here alpha <= 3 on 256 bins), of degree 12 where <= 1/8, else std::exp (alpha 3 and 8
# on 16 bins): all must match the reference.
@pytest.mark.parametrize('alpha', [0.0, 1.0, 3.0, 8.0])
@pytest.mark.parametrize('num_bins', [16, 256])
def test_kernel_clip_is_the_reference_objective_argmin(alpha, num_bins):
    g = mixed_channel_grad((16, 24, 9, 9), 3)
    g[:, 5] *= 1e-20  # tiny and huge channels: the search works on x = |g| / abs-max
    g[:, 6] *= 1e20
    g[:, 7:12] *= torch.rand(g[:, 7:12].shape, generator=torch.Generator().manual_seed(4)) > 0.8
    _, _, _, ratio, count, total, zeros = torch.ops.mmdaq.grad_channel_stats(
        g, 1, num_bins, alpha, 127, True)
    live = torch.arange(24) != 2  # channel 2 is all zero: clip 0 whatever the ratio
    ratio, count, total, zeros = ratio[live], count[live], total[live], zeros[live]
    _, energy = objective_curve_from_histograms(count, total, alpha, num_bits=8, zero_count=zeros)
    idx = (ratio.double() * num_bins).round().long() - 1  # the kernel's candidate
    chosen = energy.gather(1, idx[:, None]).squeeze(1)
    best = energy.min(dim=1).values
    # The kernel's choice is the reference's minimum (to summation-order rounding) ...
    torch.testing.assert_close(chosen, best, rtol=1e-9, atol=1e-15)
    # ... and usually the very same candidate (ties break to the larger clip in both).
    ref_idx = num_bins - 1 - energy.flip(1).argmin(dim=1)
    assert (idx == ref_idx).float().mean() >= 0.9


@pytest.mark.parametrize('num_bins', [0, 128])
def test_channel_whose_reciprocal_abs_max_overflows(num_bins):
    # Seen in early Faster R-CNN training: a channel of denormal gradients, whose 1 / abs-max is
    # inf in float32 (x = |g| * inf gave bins out of range and crashed the kernel).
    g = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    g[:, 1] *= 1e-40  # abs-max about 3e-40 (denormal): 1 / 3e-40 overflows
    g[:5, 1] = 0.0
    assert torch.isinf(1.0 / g[:, 1].abs().max())
    got = torch.ops.mmdaq.grad_channel_stats(g, 1, num_bins, 3.0, 127, True)
    want = gradient_statistics_reference(g, 1, num_bins)
    assert torch.equal(got[0], want.abs_max)
    assert torch.isfinite(got[1]).all() and torch.isfinite(got[2]).all()
    torch.testing.assert_close(got[2], want.frac_above_sigma, rtol=0, atol=1.01 / 64)
    assert torch.isfinite(got[3]).all() and (got[3] > 0).all() and (got[3] <= 1).all()
    assert torch.equal(got[4], want.hist_count)
    torch.testing.assert_close(got[5], want.hist_sum, rtol=1e-12, atol=1e-12)
    if num_bins:
        assert got[4][1].sum() == 64 and got[5][1].max() <= 64
