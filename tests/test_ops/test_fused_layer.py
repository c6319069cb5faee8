"""The INT8 layer's passes chained from the Triton kernels against the reference passes.

On CUDA where Triton is installed; without a GPU in Triton's interpreter on CPU tensors
(``TRITON_INTERPRET=1``, set by tests/conftest.py). The compiled kernels give the reference
passes the same G_Y statistics as the Triton pass.
"""
import copy

import pytest
import torch

pytest.importorskip('triton')

from mmdaq.ops.fused_layer import fused_backward, fused_forward, fused_supported  # noqa: E402
from mmdaq.ops.geometry import ConvGeometry  # noqa: E402
from mmdaq.ops.int8_layer import int8_conv_backward_pass, int8_conv_forward_pass  # noqa: E402
from mmdaq.ops.triton_launch import count_launches  # noqa: E402
from mmdaq.quantization.schemes import build_scheme  # noqa: E402
from mmdaq.testing import mixed_channel_grad  # noqa: E402

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'


@pytest.mark.parametrize('method', ['daq', 'per_channel', 'per_tensor'])
@pytest.mark.parametrize('stride', [1, 2])
def test_fused_passes_equal_the_reference(method, stride):
    gen = torch.Generator().manual_seed(stride)
    x = torch.randn(2, 5, 9, 8, generator=gen).to(DEVICE)
    weight = torch.randn(6, 5, 3, 3, generator=gen).to(DEVICE)
    bias = torch.randn(6, generator=gen).to(DEVICE)
    geo = ConvGeometry((3, 3), (stride, stride), (1, 1), (1, 1), 1)
    scheme = build_scheme(method)
    rule = scheme.fused_grad_rule(0)
    assert rule is not None and fused_supported(x, weight, geo)
    with count_launches() as launches:
        y, x_q, s_x, w_q, s_w = fused_forward(x, weight, bias, scheme, geo)
        grad_y = mixed_channel_grad((2, 6) + tuple(y.shape[2:]), seed=stride).to(DEVICE)
        got = fused_backward(grad_y, x_q, s_x, w_q, s_w, scheme, geo, rule, True, True, True)
    # X 2, W 2, forward 1; G_Y 3, wgrad 1 (2 with a split reduction), dgrad 1
    assert len(launches) == 10 + (launches.count('weight_grad_epilogue_kernel')), launches
    assert launches.count('weight_grad_epilogue_kernel') <= 1
    ref_scheme = copy.deepcopy(build_scheme(method))
    y_ref, x_q_ref, s_x_ref = int8_conv_forward_pass(x, weight, bias, ref_scheme, geo)
    assert torch.equal(x_q, x_q_ref) and torch.equal(s_x, s_x_ref)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    ref = int8_conv_backward_pass(grad_y, x_q_ref, s_x_ref, weight, ref_scheme, geo, 0, True,
                                  True, True)
    torch.testing.assert_close(got[0], ref[0], rtol=0, atol=0)  # G_X
    torch.testing.assert_close(got[1], ref[1], rtol=0, atol=0)  # G_W
    torch.testing.assert_close(got[2], ref[2], rtol=1e-5, atol=1e-6)  # float64 vs float32 sum


def test_unfusable_options_have_no_rule():
    assert build_scheme('daq', grad_rounding='stochastic').fused_grad_rule() is None
    assert build_scheme('daq', forward='fp32').fused_grad_rule() is None
    assert build_scheme('daq', clip_interval=2).fused_grad_rule() is None
    assert build_scheme('ui8').fused_grad_rule() is None
    assert build_scheme('daq', long_tail_rule='ema').fused_grad_rule() is None
