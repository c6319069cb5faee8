"""The Triton convolutions as custom ops: fakes (any machine, no Triton needed) and, on CUDA
with Triton, opcheck and equality with the launchers they wrap."""
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from mmdaq.ops import triton_conv
from mmdaq.ops.triton_conv_op import triton_int8_conv2d, triton_int8_conv2d_wgrad
from mmdaq.testing import needs_cuda

needs_triton = pytest.mark.skipif(not triton_conv.triton_available(), reason='needs Triton')


def test_cuda_kernels_and_fakes_are_registered():
    for op in ('int8_conv2d_triton', 'int8_conv2d_wgrad_triton'):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f'mmdaq::{op}', 'CUDA')
        assert not torch._C._dispatch_has_kernel_for_dispatch_key(f'mmdaq::{op}', 'CPU')
    with FakeTensorMode():
        x = torch.empty(2, 5, 9, 8, dtype=torch.int8, device='cuda')
        w = torch.empty(3, 5, 3, 3, dtype=torch.int8, device='cuda')
        y = triton_int8_conv2d(x, w, torch.empty(3, device='cuda'), None, (2, 2), (1, 1), (1, 1))
        g = torch.empty(2, 3, 5, 4, dtype=torch.int8, device='cuda')
        gw = triton_int8_conv2d_wgrad(g, x, (3, 3), torch.empty(3, device='cuda'), (2, 2),
                                      (1, 1), (1, 1))
    assert y.shape == (2, 3, 5, 4) and y.dtype == torch.float32
    assert gw.shape == (3, 3 * 3 * 5) and gw.dtype == torch.float32


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
    wgrad = (g, x, [3, 3], scale, [stride] * 2, [1, 1], [1, 1], 2)
    torch.library.opcheck(torch.ops.mmdaq.int8_conv2d_wgrad_triton.default, wgrad)
    assert torch.equal(triton_int8_conv2d_wgrad(*wgrad),
                       triton_conv.int8_conv2d_wgrad_triton(*wgrad))
