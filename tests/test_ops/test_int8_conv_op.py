"""The INT8 layer's custom ops pass torch.library.opcheck (schema, autograd, fake, AOT)."""
import pytest
import torch

from mmdaq.ops.geometry import LINEAR_GEOMETRY, ConvGeometry
from mmdaq.quantization.schemes import build_scheme
from mmdaq.testing import needs_cuda

CASES = [  # (x shape, weight shape, geometry, bias)
    ((2, 4, 6, 6), (6, 4, 3, 3), ConvGeometry((3, 3), (1, 1), (1, 1), (1, 1), 1), True),
    ((2, 4, 7, 7), (6, 2, 3, 3), ConvGeometry((3, 3), (2, 2), (1, 1), (1, 1), 2), False),
    ((5, 4), (3, 4), LINEAR_GEOMETRY, True),
]


@pytest.mark.parametrize('device', ['cpu', pytest.param('cuda', marks=needs_cuda)])
@pytest.mark.parametrize('x_shape, w_shape, geo, with_bias', CASES)
def test_int8_conv_ops_pass_opcheck(x_shape, w_shape, geo, with_bias, device):
    """On CUDA the first case takes the fused chain (its saved codes in their own layouts)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(x_shape, generator=gen).to(device).requires_grad_()
    w = torch.randn(w_shape, generator=gen).to(device).requires_grad_()
    b = torch.randn(w_shape[0], generator=gen).to(device).requires_grad_() if with_bias else None
    scheme = build_scheme('per_tensor')  # stateless and deterministic: every run the same
    args = (x, w, b, scheme.op_handle, *geo.op_args(), 0)
    torch.library.opcheck(torch.ops.mmdaq.int8_conv.default, args)
    with torch.no_grad():  # the saved tensors, as the backward gets them
        y, *saved = torch.ops.mmdaq.int8_conv(*args)
    grad_y = torch.randn(y.shape, generator=gen).to(device)
    for needs in [(True, True, with_bias), (False, True, False), (True, False, False)]:
        torch.library.opcheck(torch.ops.mmdaq.int8_conv_backward.default,
                              (grad_y, *saved, w.detach(), *args[3:], *needs))


@pytest.mark.needs_ext
def test_a_cpu_daq_conv_dispatches_one_kernel_op_per_job():
    """DAQ conv forward + backward on CPU after warm-up, with the integer GEMMs of a VNNI CPU:
    the kernel ops the CPU passes dispatch (the proxy of launches), each job one op, and no
    zero tensors made for the gradients of the saved codes and scales."""
    from mmdaq.analysis.op_trace import OpTrace
    from mmdaq.cnn import DAQConv2d
    from mmdaq.ops.int8_matmul import int8_matmul_backend
    conv = DAQConv2d(16, 16, 3, padding=1, method='daq')
    x = torch.randn(2, 16, 6, 6, requires_grad=True)
    grad = torch.randn(2, 16, 6, 6)
    with int8_matmul_backend('int_mm'):
        for _ in range(2):
            conv(x).backward(grad)
        with OpTrace() as trace:
            conv(x).backward(grad)
    assert trace.syncs() == []
    assert trace.counts() == {
        'aten._int_mm': 3,  # forward, input gradient (a stride-1 conv of G_Y), weight gradient
        'mmdaq.int8_im2col': 3,
        'aten.mul.Tensor': 4,  # scale products on [] / [C] tensors
        'mmdaq.int32_to_channels_first': 2,  # Y and G_X epilogues
        'mmdaq.int8_channels_last': 1,  # W's codes as the forward operand
        'mmdaq.int8_transposed_weight': 1,  # and transposed, flipped, as the G_X operand
        'mmdaq.quantize_per_tensor_int8': 2,  # X, W
        'mmdaq.daq_grad_codes': 1,  # G_Y: statistics, clip, both copies, bias gradient
        'mmdaq.int32_to_weight': 1,  # G_W scaled into the weight layout
    }, trace.counts()
