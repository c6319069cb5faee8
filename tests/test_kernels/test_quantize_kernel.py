import pytest
import torch

from mmdaq.kernels import quantize_int8, quantize_int8_reference
from mmdaq.testing import DEVICES


@pytest.mark.needs_ext
@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('shape, dim', [((7, ), 0), ((4, 5, 6), 1), ((3, 2, 5, 5), -1),
                                        ((2, 3), 0), ((1, 1, 1), 2)])
@pytest.mark.parametrize('per_channel', [False, True])
def test_kernel_matches_reference_bitexact(device, shape, dim, per_channel):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=g) * 10).to(device)
    x.view(-1)[0] = float('nan')
    if x.numel() > 2:
        x.view(-1)[1] = float('inf')
        x.view(-1)[2] = 2.5  # exact half step: round half to even on both paths
    n = shape[dim] if per_channel else 1
    scale = (torch.rand(n, generator=g) + 0.01).to(device)
    if per_channel:
        scale[0] = 0.0  # an all-zero channel has scale 0
    scale = scale if per_channel else scale.reshape(())
    got = quantize_int8(x, scale, dim)
    want = quantize_int8_reference(x, scale, dim)
    assert got.dtype == torch.int8 and got.shape == x.shape
    assert torch.equal(got, want)
    assert int(got.abs().max()) <= 127


@pytest.mark.needs_ext
def test_kernel_rejects_bad_scale_length():
    with pytest.raises(RuntimeError, match='scale must have 1 or x.size'):
        quantize_int8(torch.randn(4, 3), torch.ones(2), 1)


def test_missing_extension_error_says_how_to_build(monkeypatch):
    from mmdaq.kernels import extension
    monkeypatch.setattr(extension, '_module', None)
    monkeypatch.setattr(extension, '_tried', True)
    monkeypatch.setattr(extension, '_error', ImportError('No module named mmdaq._ext'))
    with pytest.raises(extension.ExtensionNotBuiltError, match='make install'):
        quantize_int8(torch.randn(3), torch.ones(()), 0)
    assert 'not available' in extension.extension_status()


@pytest.mark.needs_ext
@pytest.mark.parametrize('dim', [None, 0, 1, -1])
def test_quantize_uses_kernel_with_identical_codes(monkeypatch, dim):
    import sys

    from mmdaq.kernels import extension
    quantize_mod = sys.modules['mmdaq.quantization.quantize']
    x = torch.randn(4, 6, 5, generator=torch.Generator().manual_seed(0)) * 3
    x[1] = 0.0
    x[2, 0, 0] = float('nan')
    clip = None if dim is None else torch.rand(x.shape[dim]) * 2
    fast = quantize_mod.quantize(x, clip=clip, dim=dim)
    for op in ('quantize_int8', 'quantize_per_tensor_int8'):
        monkeypatch.setitem(extension._COMPILED_OPS, (op, 'cpu'), False)
    slow = quantize_mod.quantize(x, clip=clip, dim=dim)
    assert torch.equal(fast[0], slow[0])
    torch.testing.assert_close(fast[1], slow[1], equal_nan=True)


@pytest.mark.needs_ext
@pytest.mark.parametrize('per_channel', [False, True])
def test_stochastic_kernel_equals_reference_on_its_philox_stream(per_channel):
    from mmdaq.kernels import philox_uniform, quantize_int8_stochastic
    x = torch.randn(3, 5, 7, 11) * 4
    x[0, 0, 0, :4] = torch.tensor([float('nan'), float('inf'), -float('inf'), 1e30])
    scale = torch.rand(5) * 0.1 + 0.01 if per_channel else torch.tensor([0.05])
    codes = quantize_int8_stochastic(x, scale, 1, seed=123, offset=7)
    u = philox_uniform(x, 123, 7)
    assert torch.equal(codes, quantize_int8_reference(x, scale, 1, u=u))
    assert codes[0, 0, 0, :3].tolist() == [0, 0, 0] and codes[0, 0, 0, 3] == 127


@pytest.mark.needs_ext
def test_philox_stream_is_uniform_reproducible_and_thread_independent():
    from mmdaq.kernels import philox_uniform, quantize_int8_stochastic
    like = torch.empty(100003)
    u = philox_uniform(like, 5, 0)
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean().item() - 0.5) < 0.005
    assert torch.equal(u, philox_uniform(like, 5, 0))
    assert not torch.equal(u, philox_uniform(like, 6, 0))
    # offset counts blocks of 4: the stream shifted by 4 elements
    assert torch.equal(philox_uniform(like, 5, 1)[:-4], u[4:])
    x = torch.randn(64, 1000)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = quantize_int8_stochastic(x, torch.tensor([0.01]), 0, 9, 3)
        torch.set_num_threads(2)
        two = quantize_int8_stochastic(x, torch.tensor([0.01]), 0, 9, 3)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


@pytest.mark.needs_ext
def test_stochastic_codes_are_unbiased_and_within_one_step():
    from mmdaq.kernels import quantize_int8_stochastic
    x = torch.full((200000, ), 0.3)  # 0.3 / 0.07 = 4.29 steps
    scale = torch.tensor([0.07])
    codes = quantize_int8_stochastic(x, scale, 0, 1, 0).float()
    v = 0.3 / 0.07
    assert set(codes.unique().tolist()) == {4.0, 5.0}
    assert abs(codes.mean().item() - v) < 0.01


@pytest.mark.needs_ext
@pytest.mark.parametrize('device', DEVICES)
def test_clip_to_scale_kernel_equals_reference(device):
    from mmdaq.kernels import clip_to_scale_reference
    big = torch.finfo(torch.float32).max
    clip = torch.tensor([1.0, 0.0, -1.0, float('nan'), float('inf'), big, 3e-39, 2.5, 7.0],
                        device=device)
    data_max = torch.tensor([2.0, 0.0, 1.0, 1.0, 1.0, big, 1.0, float('nan'), float('inf')],
                            device=device)
    for qmax in (127, 7, 1):
        got = torch.ops.mmdaq.clip_to_scale(clip, data_max, qmax)
        want = clip_to_scale_reference(clip, data_max, qmax)
        assert torch.equal(got.isnan(), want.isnan())
        assert torch.equal(got.nan_to_num(), want.nan_to_num())
    got = torch.ops.mmdaq.clip_to_scale(clip[0], data_max[0], 127)  # per-tensor: 0-d
    assert got.shape == () and got.item() == pytest.approx(1 / 127)
    with pytest.raises(RuntimeError, match='one shape and device'):
        torch.ops.mmdaq.clip_to_scale(clip, data_max[:2], 127)


@pytest.mark.needs_ext
@pytest.mark.parametrize('shape, dim', [((7, ), 0), ((4, 5, 6), 1), ((3, 2, 5, 5), -1),
                                        ((2, 37), 1), ((1, 1, 1), 2)])
@pytest.mark.parametrize('tensor_step', [0.05, 0.0, float('nan')])
def test_pair_kernel_is_both_quantizations_bitexact(shape, dim, tensor_step):
    from mmdaq.kernels import quantize_int8_pair
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g) * 10
    x.view(-1)[0] = float('nan')
    if x.numel() > 3:
        x.view(-1)[1] = float('-inf')
        x.view(-1)[2] = 2.5
        x.view(-1)[3] = -1e30  # saturates in both copies
    scale = torch.rand(shape[dim], generator=g) + 0.01
    scale[0] = 0.0
    if scale.numel() > 1:
        scale[1] = float('nan')
    tensor_scale = torch.tensor(tensor_step)
    got = quantize_int8_pair(x, scale, dim, tensor_scale)
    want = quantize_int8_reference(x, scale, dim), quantize_int8_reference(x, tensor_scale)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert torch.equal(got[0], quantize_int8(x, scale, dim))
    assert torch.equal(got[1], quantize_int8(x, tensor_scale, 0))


@pytest.mark.needs_ext
def test_pair_kernel_rejects_a_per_channel_tensor_scale():
    from mmdaq.kernels import quantize_int8_pair
    with pytest.raises(RuntimeError, match='tensor_scale must be one float32'):
        quantize_int8_pair(torch.randn(4, 3), torch.ones(3), 1, torch.ones(3))


@pytest.mark.needs_ext
def test_per_channel_and_tensor_copies_without_the_pair_kernel_are_the_same(monkeypatch):
    import sys

    from mmdaq.kernels import extension
    quantize_mod = sys.modules['mmdaq.quantization.quantize']
    x = torch.randn(4, 6, 5, generator=torch.Generator().manual_seed(0)) * 3
    x[:, 2] = 0.0
    x[2, 4, 0] = float('inf')
    data_max = x.abs().amax(dim=(0, 2))
    clip = data_max * 0.5
    fast = quantize_mod.quantize_per_channel_and_tensor(x, clip, 1, data_max=data_max,
                                                        tensor_max=data_max.amax())
    monkeypatch.setitem(extension._COMPILED_OPS, ('quantize_int8_pair', 'cpu'), False)
    slow = quantize_mod.quantize_per_channel_and_tensor(x, clip, 1, data_max=data_max,
                                                        tensor_max=data_max.amax())
    for a, b in zip(fast, slow):
        assert torch.equal(a[0], b[0])
        torch.testing.assert_close(a[1], b[1], rtol=0, atol=0, equal_nan=True)


@pytest.mark.needs_ext
@pytest.mark.parametrize('case', ['laplace', 'large', 'nan', 'inf', 'zeros', 'signed_zeros',
                                  'strided', 'tiny', 'empty'])
def test_per_tensor_kernel_is_abs_max_step_and_codes(case):
    """quantize_per_tensor_int8 equals the eager abs-max, clip_to_scale and codes (NaN and Inf
    give a NaN step and zero codes, all zeros a zero step), for any size (the abs-max reduction
    split over threads) and layout."""
    from mmdaq.kernels import clip_to_scale_reference, quantize_per_tensor_int8
    from mmdaq.quantization.quantize import abs_max
    gen = torch.Generator().manual_seed(0)
    x = torch.distributions.Laplace(0.0, 2.0).sample((3, 7, 11))
    if case == 'large':
        x = torch.randn(5, 300, 129, generator=gen) * 1e3
        x[4, 299, 128] = -2e4  # the largest value in the last thread's share
    elif case == 'nan':
        x[2, 6, 10] = float('nan')
    elif case == 'inf':
        x[0, 0, 0] = float('-inf')
    elif case == 'zeros':
        x = torch.zeros(4, 5)
    elif case == 'signed_zeros':
        x = torch.zeros(4, 5)
        x[::2] = -0.0
    elif case == 'strided':
        x = torch.randn(6, 8, 10, generator=gen).permute(2, 0, 1)[:, ::2]
    elif case == 'tiny':
        x = torch.randn(3, generator=gen) * 1e-38  # subnormal steps
    elif case == 'empty':
        x = torch.zeros(0, 5)
    codes, step = quantize_per_tensor_int8(x)
    m = abs_max(x)
    want_step = clip_to_scale_reference(m, m, 127)
    assert step.shape == () and step.dtype == torch.float32
    torch.testing.assert_close(step, want_step, rtol=0, atol=0, equal_nan=True)
    assert codes.dtype == torch.int8 and torch.equal(codes, quantize_int8_reference(x, want_step))


@pytest.mark.needs_ext
def test_per_tensor_kernel_opcheck_and_bad_input():
    from mmdaq.kernels import quantize_per_tensor_int8
    x = torch.randn(4, 5)
    torch.library.opcheck(torch.ops.mmdaq.quantize_per_tensor_int8.default, (x, ))
    with pytest.raises(RuntimeError, match='x must be a float32 tensor with at least one dim'):
        quantize_per_tensor_int8(x.double())
    with pytest.raises(RuntimeError, match='x must be a float32 tensor with at least one dim'):
        quantize_per_tensor_int8(torch.tensor(1.0))
