"""The Triton convolutions as custom ops: fakes (any machine, no Triton needed) and, on CUDA
with Triton, opcheck and equality with the launchers they wrap."""
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from mmdaq.ops import triton_conv
from mmdaq.ops.triton_conv_op import (triton_int8_conv2d, triton_int8_conv2d_dgrad,
                                      triton_int8_conv2d_wgrad)
from mmdaq.testing import needs_cuda

needs_triton = pytest.mark.skipif(not triton_conv.triton_available(), reason='needs Triton')


def test_cuda_kernels_and_fakes_are_registered():
    for op in ('int8_conv2d_triton', 'int8_conv2d_dgrad_triton', 'int8_conv2d_wgrad_triton'):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f'mmdaq::{op}', 'CUDA')
        assert not torch._C._dispatch_has_kernel_for_dispatch_key(f'mmdaq::{op}', 'CPU')
    with FakeTensorMode():
        x = torch.empty(2, 5, 9, 8, dtype=torch.int8, device='cuda')
        w = torch.empty(3, 5, 3, 3, dtype=torch.int8, device='cuda')
        y = triton_int8_conv2d(x, w, torch.empty(3, device='cuda'), None, (2, 2), (1, 1), (1, 1))
        g = torch.empty(2, 3, 5, 4, dtype=torch.int8, device='cuda')
        gx = triton_int8_conv2d_dgrad(g, w, torch.empty((), device='cuda'), x.shape, (2, 2),
                                      (1, 1), (1, 1))
        gw = triton_int8_conv2d_wgrad(g, x, (3, 3), torch.empty(3, device='cuda'), (2, 2),
                                      (1, 1), (1, 1))
    assert y.shape == (2, 3, 5, 4) and y.dtype == torch.float32
    assert gx.shape == (2, 5, 9, 8) and gx.dtype == torch.float32 and gx.is_contiguous()
    assert gw.shape == (3, 5, 3, 3) and gw.dtype == torch.float32 and gw.is_contiguous()


@pytest.mark.parametrize('change, match', [
    (dict(g_dtype=torch.float32), 'g_q and w_q must be int8 codes'),
    (dict(g_channels=4), 'g_q and w_q must be int8 codes'),
    (dict(input_size=(2, 6, 9, 8)), r'input_size must be \(N, C, H, W\) = \(2, 5, H, W\)'),
    (dict(input_size=(2, 5, 11, 8)), r'g_q must have the output size \(6, 4\)'),
    (dict(scale_shape=(3, )), 'scale must be one value'),
])
def test_dgrad_fake_checks_its_arguments(change, match):
    with FakeTensorMode():
        g = torch.empty(2, change.get('g_channels', 3), 5, 4, device='cuda',
                        dtype=change.get('g_dtype', torch.int8))
        w = torch.empty(3, 5, 3, 3, dtype=torch.int8, device='cuda')
        scale = torch.empty(change.get('scale_shape', ()), device='cuda')
        with pytest.raises(RuntimeError, match=match):
            triton_int8_conv2d_dgrad(g, w, scale, change.get('input_size', (2, 5, 9, 8)),
                                     (2, 2), (1, 1), (1, 1))


@needs_cuda
@needs_triton
@pytest.mark.parametrize('stride, with_bias', [(1, True), (2, False)])
def test_triton_ops_pass_opcheck_and_equal_their_launchers(stride, with_bias):
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(-127, 128, (2, 16, 9, 9), generator=gen, dtype=torch.int8).cuda()
    w = torch.randint(-127, 128, (8, 16, 3, 3), generator=gen, dtype=torch.int8).cuda()
    scale = (torch.rand(8, generator=gen) * 1e-3).cuda()
    bias = torch.randn(8, generator=gen).cuda() if with_bias else None
    conv = (x, w, scale, bias, [stride] * 2, [1, 1], [1, 1])
    torch.library.opcheck(torch.ops.mmdaq.int8_conv2d_triton.default, conv)
    y = triton_int8_conv2d(*conv)
    assert torch.equal(y, triton_conv.int8_conv2d_triton(*conv)[0])
    g = torch.randint(-127, 128, y.shape, generator=gen, dtype=torch.int8).cuda()
    dgrad = (g, w, scale[0], list(x.shape), [stride] * 2, [1, 1], [1, 1])
    torch.library.opcheck(torch.ops.mmdaq.int8_conv2d_dgrad_triton.default, dgrad)
    assert torch.equal(triton_int8_conv2d_dgrad(*dgrad),
                       triton_conv.int8_conv2d_dgrad_triton(*dgrad))
    wgrad = (g, x, [3, 3], scale, [stride] * 2, [1, 1], [1, 1], 2)
    torch.library.opcheck(torch.ops.mmdaq.int8_conv2d_wgrad_triton.default, wgrad)
    assert torch.equal(triton_int8_conv2d_wgrad(*wgrad),
                       triton_conv.int8_conv2d_wgrad_triton(*wgrad))
