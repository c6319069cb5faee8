"""The CUDA kernels against the CPU kernels and the plain-PyTorch references.

Skipped without a GPU or when mmdaq._ext was built without CUDA (``FORCE_CUDA=1`` builds it).
"""
import copy

import pytest
import torch
from torch import nn

from mmdaq.cnn import convert_model
from mmdaq.kernels import compiled_op_available, int32_to_channels_first_reference
from mmdaq.quantization.histogram_clip import objective_curve_from_histograms
from mmdaq.testing import mixed_channel_grad

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU'),
    pytest.mark.skipif(not (torch.cuda.is_available()
                            and compiled_op_available('grad_channel_stats', 'cuda')),
                       reason='mmdaq._ext built without CUDA kernels'),
]


@pytest.mark.parametrize('shape, dim', [((4, 5, 7, 7), 1), ((3, 6, 2, 5, 5), 1), ((64, 5), 1),
                                        ((5, 9), 0), ((2, 4, 1, 1), 1), ((16, 40, 28, 28), 1)])
@pytest.mark.parametrize('num_bins', [0, 1, 16, 1024, 4096])
def test_channel_stats_cuda_matches_cpu(shape, dim, num_bins):
    g = mixed_channel_grad(shape, 0).movedim(1, dim).contiguous()
    g[0].view(-1)[0] *= 1e20  # one huge value: the histogram works on |g| / abs-max
    alpha = 3.0
    want = torch.ops.mmdaq.grad_channel_stats(g, dim, num_bins, alpha, 127, True)
    got = torch.ops.mmdaq.grad_channel_stats(g.cuda(), dim, num_bins, alpha, 127, True)
    got = [t.cpu() for t in got]
    assert torch.equal(got[0], want[0])  # abs-max is exact
    torch.testing.assert_close(got[1], want[1], rtol=1e-6, atol=0)
    m = g.numel() // g.shape[dim]
    torch.testing.assert_close(got[2], want[2], rtol=0, atol=1.01 / m)
    assert torch.equal(got[4], want[4])  # the same float32 binning: the same bins
    torch.testing.assert_close(got[5], want[5], rtol=1e-9, atol=1e-12)
    assert got[6].dtype == torch.int64 and torch.equal(got[6], want[6])  # exact zeros
    if num_bins == 0:
        assert torch.equal(got[3], torch.ones_like(got[3]))
        return
    # The clip: the CPU kernel's objective minimum, up to summation-order rounding.
    live = want[0] > 0
    _, energy = objective_curve_from_histograms(want[4][live], want[5][live], alpha, num_bits=8,
                                                zero_count=want[6][live])
    idx = (got[3][live].double() * num_bins).round().long() - 1
    chosen = energy.gather(1, idx[:, None]).squeeze(1)
    torch.testing.assert_close(chosen, energy.min(dim=1).values, rtol=1e-9, atol=1e-15)


def test_channel_stats_cuda_on_a_channel_whose_reciprocal_abs_max_overflows():
    g = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    g[:, 1] *= 1e-40  # denormal abs-max: 1 / abs-max is inf in float32
    g[:5, 1] = 0.0
    want = torch.ops.mmdaq.grad_channel_stats(g, 1, 128, 3.0, 127, True)
    got = [t.cpu() for t in torch.ops.mmdaq.grad_channel_stats(g.cuda(), 1, 128, 3.0, 127, True)]
    assert torch.equal(got[0], want[0]) and torch.equal(got[4], want[4])
    assert got[4][1].sum() == 64 and torch.isfinite(got[3]).all()
    torch.testing.assert_close(got[5], want[5], rtol=1e-9, atol=1e-12)


def test_channel_stats_cuda_non_finite_and_bin_limit():
    g = mixed_channel_grad((4, 5, 6, 6), 1)
    g[0, 0, 0, 0] = float('nan')
    g[1, 3, 2, 2] = float('inf')
    g[0, 0, 1, :3] = 0.0  # exact zeros next to the NaN are still counted
    abs_max, sigma, frac, ratio, count, _, zeros = [
        t.cpu() for t in torch.ops.mmdaq.grad_channel_stats(g.cuda(), 1, 8, 3.0, 127, True)]
    assert torch.equal(zeros, (g == 0).sum((0, 2, 3))) and zeros[2] == 4 * 36
    assert torch.isnan(ratio[[0, 3]]).all() and ratio[2] == 1.0
    assert torch.isnan(abs_max[0]) and torch.isinf(abs_max[3])
    assert torch.isnan(sigma[[0, 3]]).all() and torch.isnan(frac[[0, 3]]).all()
    assert count[2, 0] == 4 * 36
    with pytest.raises(RuntimeError, match='num_bins must be in'):
        torch.ops.mmdaq.grad_channel_stats(g.cuda(), 1, 5000, 3.0, 127, True)


@pytest.mark.parametrize('out_shape', [(2, 5, 3, 7), (3, 70, 33), (1, 1, 1), (2, 33, 2, 3, 5)])
@pytest.mark.parametrize('per_channel, with_bias', [(True, True), (False, False), (True, False)])
def test_epilogue_cuda_equals_reference(out_shape, per_channel, with_bias):
    n, c = out_shape[:2]
    rows = n * int(torch.tensor(out_shape[2:]).prod())
    acc = torch.randint(-2**20, 2**20, (rows, c), dtype=torch.int32, device='cuda')
    scale = torch.rand(c if per_channel else 1, device='cuda') * 1e-3
    bias = torch.randn(c, device='cuda') if with_bias else None
    got = torch.ops.mmdaq.int32_to_channels_first(acc, scale, bias, list(out_shape))
    want = int32_to_channels_first_reference(acc.cpu(), scale.cpu(),
                                             None if bias is None else bias.cpu(), out_shape)
    assert got.is_contiguous() and torch.equal(got.cpu(), want)


@pytest.mark.parametrize('per_channel', [False, True])
def test_quantize_cuda_equals_cpu_on_large_rows(per_channel):
    x = torch.randn(3, 7, 1000) * 5
    x[0, 0, :3] = torch.tensor([float('nan'), float('inf'), 0.5])
    scale = (torch.rand(7) + 0.01) if per_channel else torch.tensor([0.03])
    got = torch.ops.mmdaq.quantize_int8(x.cuda(), scale.cuda(), 1)
    assert torch.equal(got.cpu(), torch.ops.mmdaq.quantize_int8(x, scale, 1))


@pytest.mark.parametrize('tensor_step', [0.03, 0.0, float('nan')])
def test_quantize_pair_cuda_equals_cpu(tensor_step):
    x = torch.randn(3, 7, 1000) * 5
    x[0, 0, :3] = torch.tensor([float('nan'), float('inf'), 0.5])
    scale = torch.rand(7) + 0.01
    scale[1] = 0.0
    ts = torch.tensor(tensor_step)
    got = torch.ops.mmdaq.quantize_int8_pair(x.cuda(), scale.cuda(), 1, ts.cuda())
    want = torch.ops.mmdaq.quantize_int8_pair(x, scale, 1, ts)
    assert torch.equal(got[0].cpu(), want[0]) and torch.equal(got[1].cpu(), want[1])


@pytest.mark.parametrize('conv', [
    dict(in_channels=8, out_channels=16, kernel_size=3, padding=1),
    dict(in_channels=8, out_channels=16, kernel_size=3, stride=2, padding=1),
    dict(in_channels=8, out_channels=8, kernel_size=3, padding=1, groups=4),
    dict(in_channels=8, out_channels=12, kernel_size=1),
])
def test_daq_conv_on_cuda_matches_cpu(conv):
    torch.manual_seed(0)
    base = nn.Sequential(nn.Conv2d(8, 8, 1), nn.Conv2d(**conv))
    x = torch.randn(4, 8, 10, 10)
    outs = {}
    for device in ('cpu', 'cuda'):
        model = convert_model(copy.deepcopy(base).to(device), method='daq')
        xd = x.detach().to(device).requires_grad_()
        y = model(xd)
        (y * torch.linspace(-1, 1, y.numel(), device=device).view_as(y)).sum().backward()
        outs[device] = (y.detach().cpu(), xd.grad.cpu(), model[1].weight.grad.cpu())
    cpu, cuda = outs['cpu'], outs['cuda']
    torch.testing.assert_close(cuda[0], cpu[0], rtol=1e-6, atol=1e-6)  # same codes, same ints
    torch.testing.assert_close(cuda[1], cpu[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cuda[2], cpu[2], rtol=1e-5, atol=1e-6)


def test_stochastic_quantize_and_philox_stream_same_on_cuda_and_cpu():
    x = torch.randn(5, 7, 333) * 3
    scale = torch.rand(7) * 0.05 + 0.01
    for seed, offset in ((0, 0), (2**61 + 5, 12345)):
        got = torch.ops.mmdaq.quantize_int8_stochastic(x.cuda(), scale.cuda(), 1, seed, offset)
        want = torch.ops.mmdaq.quantize_int8_stochastic(x, scale, 1, seed, offset)
        assert torch.equal(got.cpu(), want)
        assert torch.equal(torch.ops.mmdaq.philox_uniform(x.cuda(), seed, offset).cpu(),
                           torch.ops.mmdaq.philox_uniform(x, seed, offset))
