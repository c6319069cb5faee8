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
