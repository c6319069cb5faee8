"""The input gradient of strided convolutions as one stride-1 INT8 convolution per phase."""
import pytest
import torch
import torch.nn.functional as F

from mmdaq.ops.conv_autotune import cpu_conv_kernel
from mmdaq.ops.geometry import ConvGeometry
from mmdaq.ops.int8_layer import scaled_int8_conv
from mmdaq.ops.onednn_conv import onednn_conv_available
from mmdaq.ops.phase_grad_input import phase_grad_input_supported, phase_int8_grad_input

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CASES = [  # (input shape, C_out, kernel, stride, padding, groups)
    ((2, 8, 14, 14), 6, (3, 3), (2, 2), (1, 1), 1),  # ResNet's strided 3x3
    ((1, 3, 23, 23), 5, (7, 7), (2, 2), (3, 3), 1),  # the stem, odd size, batch 1
    ((2, 4, 11, 10), 6, (3, 3), (2, 2), (0, 0), 2),  # no padding, odd sizes, groups
    ((2, 4, 13, 9), 4, (3, 3), (2, 1), (2, 1), 1),  # a stride per dim, padding past k // 2
    ((2, 4, 10, 10), 3, (2, 2), (3, 3), (0, 0), 1),  # kernel < stride: unread positions
    ((2, 6, 17), 4, (3, ), (2, ), (1, ), 1),  # 1-D
    ((1, 4, 3, 9, 9), 4, (1, 3, 3), (1, 2, 2), (0, 1, 1), 1),  # 3-D, R(2+1)D-like
]


def _modes():
    return ['gemm', 'onednn'] if onednn_conv_available() else ['gemm']


@pytest.mark.needs_ext
@pytest.mark.parametrize('mode', _modes())
@pytest.mark.parametrize('shape,c_out,kernel,stride,padding,groups', CASES)
def test_equals_the_float64_input_gradient(shape, c_out, kernel, stride, padding, groups, mode):
    gen = torch.Generator().manual_seed(0)
    nd = len(kernel)
    geo = ConvGeometry(kernel, stride, padding, (1, ) * nd, groups)
    assert phase_grad_input_supported(geo)
    w_q = torch.randint(-127, 128, (c_out, shape[1] // groups) + kernel, generator=gen,
                        dtype=torch.int8)
    x64 = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    y = CONV[nd](x64, w_q.double(), stride=stride, padding=padding, groups=groups)
    g_q = torch.randint(-127, 128, y.shape, generator=gen, dtype=torch.int8)
    y.backward(g_q.double())
    with cpu_conv_kernel(mode):
        got = phase_int8_grad_input(g_q, w_q, torch.tensor(0.5), shape, geo, scaled_int8_conv)
    assert got.dtype == torch.float32 and got.shape == shape
    assert torch.equal(got.double(), x64.grad * 0.5)  # exact integer sums, scaled once


def test_dilated_or_unstrided_convolutions_are_not_for_phases():
    assert not phase_grad_input_supported(ConvGeometry((3, 3), (2, 2), (1, 1), (2, 2), 1))
    assert not phase_grad_input_supported(ConvGeometry((3, 3), (1, 1), (1, 1), (1, 1), 1))
    assert not phase_grad_input_supported(ConvGeometry((), (), (), (), 1))  # Linear
