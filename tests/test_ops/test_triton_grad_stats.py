"""The Triton G_Y pass of the DAQ backward against ``DAQScheme.quantize_grads``.

On CUDA where Triton is installed; without a GPU, in Triton's interpreter on CPU tensors
(``TRITON_INTERPRET=1``, set for this module before triton is imported). Tolerance policy of the
compiled ``grad_channel_stats`` tests (tests/test_kernels/test_channel_stats.py): abs-max, zero
counts and histogram counts exact; sigma to 1e-6; ``P(|g| > sigma)`` to one value; histogram
sums to 1e-12. A clip may differ from the reference's only where the two candidates' objectives
tie to summation-order rounding (or ``P(|g| > sigma)`` is within one value of the threshold);
everything that follows from an equal clip (scales, codes) is bit-exact.
"""
import importlib
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')
pytest.importorskip('triton')

from mmdaq.ops import triton_grad_stats, triton_grad_stats_kernels  # noqa: E402
from mmdaq.ops.triton_launch import count_launches  # noqa: E402
from mmdaq.quantization.distribution import gradient_statistics_reference  # noqa: E402
from mmdaq.quantization.histogram_clip import objective_curve_from_histograms  # noqa: E402
from mmdaq.quantization.quantize import abs_max  # noqa: E402
from mmdaq.quantization.schemes import DAQScheme  # noqa: E402
from mmdaq.testing import mixed_channel_grad  # noqa: E402

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'


@pytest.fixture(scope='module', autouse=True)
def fresh_module():
    # Pick up TRITON_INTERPRET if triton was imported before.
    importlib.reload(triton_grad_stats_kernels)
    importlib.reload(triton_grad_stats)


def _grad(shape, seed, memory_format=torch.contiguous_format, every=97, factor=12.0):
    """mixed_channel_grad (Laplace, spike-and-slab, all-zero, ReLU-like channels) with outliers
    (one value in ``every`` times ``factor``) in channel 0: a long tail."""
    g = mixed_channel_grad(shape, seed)
    tail = g.select(1, 0).clone().reshape(-1)  # [N * prod(S)]
    tail[::every] *= factor
    g.select(1, 0).copy_(tail.view(g.select(1, 0).shape))
    return g.contiguous(memory_format=memory_format)


def _values(g):
    return g.numel() // g.shape[1]


def _reduce_dims(g):
    return [d for d in range(g.dim()) if d != 1]


def _check_against_scheme(got, g, num_bits=8, threshold=0.3, alpha=3.0, num_bins=1024):
    """``got`` (GradCodes of g on DEVICE) against DAQScheme on CPU, with the policy above.
    Returns the mask of channels whose clip equals the reference's."""
    g = g.cpu()
    got = triton_grad_stats.GradCodes(*(t.cpu() for t in got))
    scheme = DAQScheme(grad_bits=num_bits, threshold=threshold, alpha=alpha)
    scheme.num_bins = num_bins
    (q_w, s_w), (q_x, s_x) = scheme.quantize_grads(g, 1, 0, True, True)
    want_clip = scheme.prev_clips[0]
    m = _values(g)
    exact = dict(rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(got.g_max, abs_max(g, 1), **exact)
    bins = triton_grad_stats.grad_num_bins(num_bins, m)
    ref = gradient_statistics_reference(g, 1, bins)
    torch.testing.assert_close(got.frac_above_sigma, ref.frac_above_sigma, rtol=0,
                               atol=1.01 / m, equal_nan=True)
    torch.testing.assert_close(got.s_x, s_x, **exact)
    assert got.s_x.dim() == 0 and got.s_x.dtype == torch.float32
    assert got.g_q_x.dtype == torch.int8 and torch.equal(got.g_q_x, q_x)
    same = (got.clip == want_clip) | (torch.isnan(got.clip) & torch.isnan(want_clip))
    _check_ties(got, ref, ~same, m, threshold, num_bits, alpha)
    torch.testing.assert_close(got.s_w[same], s_w[same], **exact)
    assert torch.equal(got.g_q_w.movedim(1, 0)[same], q_w.movedim(1, 0)[same])
    torch.testing.assert_close(got.grad_bias, g.sum(_reduce_dims(g)), rtol=1e-5, atol=1e-5,
                               equal_nan=True)
    return same


def _check_ties(got, ref, differ, m, threshold, num_bits, alpha):
    """Channels whose clip differs: the distribution test within one value of the threshold,
    or the chosen candidate's objective equal to the minimum to rounding."""
    near = (ref.frac_above_sigma - threshold).abs() <= 1.01 / m
    rest = differ & ~near
    if not rest.any():
        return
    _, energy = objective_curve_from_histograms(ref.hist_count[rest], ref.hist_sum[rest], alpha,
                                                num_bits, zero_count=ref.zero_count[rest])
    ratio = (got.clip[rest] / got.g_max[rest]).double()
    idx = (ratio * energy.shape[1]).round().long() - 1  # the candidate chosen
    chosen = energy.gather(1, idx[:, None]).squeeze(1)
    torch.testing.assert_close(chosen, energy.min(dim=1).values, rtol=1e-9, atol=1e-15)


CASES = [
    dict(shape=(5, 6, 11, 13)),                                  # NCHW, odd sizes
    dict(shape=(4, 5, 12, 12), memory_format=torch.channels_last),
    dict(shape=(900, 5)),                                        # linear layer [M, C]
    dict(shape=(60, 40)),                                        # two channel blocks
    dict(shape=(3, 4, 41)),                                      # 3-D
]


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('splits', [None, 1, 3])
def test_codes_equal_the_scheme(case, splits):
    g = _grad(case['shape'], 0, case.get('memory_format', torch.contiguous_format))
    got = triton_grad_stats.daq_grad_codes_triton(g.to(DEVICE), splits=splits)
    assert _check_against_scheme(got, g).float().mean() >= 0.75
    assert got.clip[2] == 0 and got.s_w[2] == 0  # the all-zero channel
    for codes in (got.g_q_w, got.g_q_x):
        if g.dim() == 4:
            assert codes.is_contiguous(memory_format=torch.channels_last)
        else:
            assert codes.movedim(1, -1).is_contiguous()  # [N, *S, C] in memory


@pytest.mark.parametrize('case', [dict(shape=(8192, 4)), dict(shape=(2, 4, 64, 64))])
def test_long_tailed_channel_is_clipped_at_8_bits(case):
    # One outlier far beyond a Laplace channel: at 8 bits the rounding error it saves is worth
    # clipping only past a few thousand values.
    g = _grad(case['shape'], 0, every=10**9, factor=20.0)
    got = triton_grad_stats.daq_grad_codes_triton(g.to(DEVICE), splits=3)
    _check_against_scheme(got, g)
    assert (got.clip[0] < got.g_max[0]).item()
    assert got.g_q_w[:, 0].abs().max() == 127 and got.g_q_x[:, 0].abs().max() == 127


@pytest.mark.parametrize('case', [CASES[0], CASES[2]])
@pytest.mark.parametrize('num_bits', [4, 2])
def test_low_bit_widths(case, num_bits):
    g = _grad(case['shape'], 1)
    got = triton_grad_stats.daq_grad_codes_triton(g.to(DEVICE), num_bits=num_bits, splits=2)
    _check_against_scheme(got, g, num_bits)
    q = 2**(num_bits - 1) - 1
    assert got.g_q_w.abs().max() <= q and got.g_q_x.abs().max() <= q
    assert ((got.clip / got.g_max)[:2] < 1).all()  # long-tailed, spike-and-slab


@pytest.mark.parametrize('num_bins, alpha, threshold',
                         [(16, 1.0, 0.3), (100, 0.0, 0.2), (1024, 8.0, 0.25)])
def test_other_options(num_bins, alpha, threshold):
    g = _grad((700, 5), 8)
    got = triton_grad_stats.daq_grad_codes_triton(g.to(DEVICE), num_bins=num_bins, alpha=alpha,
                                                  threshold=threshold, splits=2)
    _check_against_scheme(got, g, threshold=threshold, alpha=alpha, num_bins=num_bins)


@pytest.mark.filterwarnings('ignore:overflow encountered in cast')  # the bias gradient is inf
def test_huge_finite_values_keep_a_finite_scale():
    g = _grad((40, 4), 7)
    g[:, 1] *= torch.finfo(torch.float32).max / g[:, 1].abs().max()  # abs-max = float32 max
    got = triton_grad_stats.daq_grad_codes_triton(g.to(DEVICE))
    scheme = DAQScheme()
    (q_w, s_w), (q_x, s_x) = scheme.quantize_grads(g, 1, 0, True, True)
    assert torch.equal(got.g_max.cpu(), abs_max(g, 1)) and torch.isfinite(got.s_x * 127)
    assert torch.equal(got.s_x.cpu(), s_x) and torch.equal(got.g_q_x.cpu(), q_x)
    assert torch.equal(got.clip.cpu(), scheme.prev_clips[0])
    assert torch.equal(got.s_w.cpu(), s_w) and torch.equal(got.g_q_w.cpu(), q_w)


@pytest.mark.parametrize('splits', [1, 4])
def test_statistics_equal_the_reference(splits):
    g = _grad((6, 5, 9, 10), 2)
    got, stats = triton_grad_stats.daq_grad_codes_and_stats_triton(g.to(DEVICE), splits=splits)
    ref = gradient_statistics_reference(g, 1, triton_grad_stats.grad_num_bins(1024, _values(g)))
    assert stats.zero_count.dtype == torch.int64
    assert torch.equal(stats.zero_count.cpu(), ref.zero_count)
    assert stats.zero_count[3] > 0.6 * _values(g)  # the ReLU-like channel
    assert torch.equal(stats.hist_count.cpu(), ref.hist_count)
    torch.testing.assert_close(stats.hist_sum.cpu(), ref.hist_sum, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(stats.sigma.cpu(), ref.sigma, rtol=1e-6, atol=0)


def test_non_finite_channels():
    g = _grad((4, 6, 7, 9), 3)
    g[1, 4, 2, 3] = float('nan')
    g[2, 5, 0, 0] = float('inf')
    g[0, 4, 1, :3] = 0.0  # exact zeros next to the NaN are still counted
    got, stats = triton_grad_stats.daq_grad_codes_and_stats_triton(g.to(DEVICE), splits=2)
    assert torch.isnan(got.g_max[4]) and torch.isinf(got.g_max[5])
    assert torch.isnan(got.clip[4:]).all() and torch.isnan(got.s_w[4:]).all()
    assert torch.isnan(got.frac_above_sigma[4:]).all() and torch.isnan(got.s_x)
    assert not got.g_q_x.any() and not got.g_q_w[:, 4:].any()  # NaN scale: codes 0
    assert torch.equal(stats.zero_count.cpu(), (g == 0).sum(_reduce_dims(g)))
    _check_against_scheme(got, g)
    # The next call on finite data is not affected.
    clean = _grad((4, 6, 7, 9), 3)
    _check_against_scheme(triton_grad_stats.daq_grad_codes_triton(clean.to(DEVICE)), clean)


@pytest.mark.filterwarnings('ignore:overflow encountered in divide')  # 1 / abs-max, interpreted
def test_channel_whose_reciprocal_abs_max_overflows():
    g = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    g[:, 1] *= 1e-40  # abs-max about 3e-40 (denormal): 1 / abs-max is inf in float32
    g[:5, 1] = 0.0
    assert torch.isinf(1.0 / g[:, 1].abs().max())
    got, stats = triton_grad_stats.daq_grad_codes_and_stats_triton(g.to(DEVICE))
    ref = gradient_statistics_reference(g, 1, 64)
    assert torch.equal(stats.hist_count.cpu(), ref.hist_count)
    _check_against_scheme(got, g)


def test_three_launches_and_the_workspace_resets_itself():
    g = _grad((3, 6, 8, 8), 4).to(DEVICE)
    with count_launches() as names:
        first = triton_grad_stats.daq_grad_codes_triton(g, splits=3)
    assert len(names) <= 3, names
    second = triton_grad_stats.daq_grad_codes_triton(g, splits=3)
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    workspace = triton_grad_stats.grad_stats_workspace(g.device, 6, 192)
    assert not any(t.any() for t in workspace)  # zero again for the next call
    other = _grad((3, 6, 8, 8), 5)  # same shape, other values: the same workspace
    _check_against_scheme(triton_grad_stats.daq_grad_codes_triton(other.to(DEVICE)), other)


def test_explicit_workspace_and_half_input():
    g = _grad((200, 4), 6)
    workspace = triton_grad_stats.grad_stats_workspace(torch.device(DEVICE), 4, 200)
    got = triton_grad_stats.daq_grad_codes_triton(g.to(DEVICE), workspace=workspace)
    _check_against_scheme(got, g)
    half = triton_grad_stats.daq_grad_codes_triton(g.half().to(DEVICE))
    _check_against_scheme(half, g.half().float())
    with pytest.raises(ValueError, match='workspace must be grad_stats_workspace'):
        triton_grad_stats.daq_grad_codes_triton(g.to(DEVICE), num_bins=64, workspace=workspace)


def test_empty_gradient():
    got = triton_grad_stats.daq_grad_codes_triton(torch.zeros(0, 3, 4, 4, device=DEVICE))
    assert got.g_q_w.shape == (0, 3, 4, 4) and torch.equal(got.s_w.cpu(), torch.zeros(3))
    assert got.s_x == 0 and torch.equal(got.grad_bias.cpu(), torch.zeros(3))


def test_bad_arguments_are_clear_errors():
    g = torch.zeros(4, 3, device=DEVICE)
    with pytest.raises(TypeError, match='g must be a float32, float16 or bfloat16 tensor'):
        triton_grad_stats.daq_grad_codes_triton(g.double())
    with pytest.raises(TypeError, match='g must be a float32'):
        triton_grad_stats.daq_grad_codes_triton(g[0])
    with pytest.raises(ValueError, match='num_bins must be an int >= 1'):
        triton_grad_stats.daq_grad_codes_triton(g, num_bins=0)
    with pytest.raises(ValueError, match='splits must be an int >= 1'):
        triton_grad_stats.daq_grad_codes_triton(g, splits=0)
    with pytest.raises(ValueError, match='alpha must be a finite number'):
        triton_grad_stats.daq_grad_codes_triton(g, alpha=float('inf'))
    with pytest.raises(ValueError, match='num_bits must be an int in'):
        triton_grad_stats.daq_grad_codes_triton(g, num_bits=9)
    with pytest.raises(ValueError, match='threshold must be a number in'):
        triton_grad_stats.daq_grad_codes_triton(g, threshold=1.5)


def test_clip_state_is_checked():
    from mmdaq.quantization.schemes import FusedClipState
    g = mixed_channel_grad((2, 4, 3, 3), seed=0).to(DEVICE)
    state = FusedClipState(torch.zeros(4, device=DEVICE), torch.ones(4, device=DEVICE),
                           torch.zeros(4, dtype=torch.bool, device=DEVICE), False)
    triton_grad_stats.daq_grad_codes_triton(g, clip_state=state)  # fine
    with pytest.raises(ValueError, match='it needs a threshold'):
        triton_grad_stats.daq_grad_codes_triton(g, threshold=None, clip_state=state)
    short = state._replace(clip_ratio=torch.ones(3, device=DEVICE))
    with pytest.raises(ValueError, match=r'clip_state.clip_ratio must be a contiguous'):
        triton_grad_stats.daq_grad_codes_triton(g, clip_state=short)
