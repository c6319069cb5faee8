"""The INT8 layer's passes chained from the Triton kernels against the reference passes.

On CUDA where Triton is installed; without a GPU in Triton's interpreter on CPU tensors
(``TRITON_INTERPRET=1``, set by tests/conftest.py). The compiled kernels give the reference
passes the same G_Y statistics as the Triton pass.
"""
import copy

import pytest
import torch

pytest.importorskip('triton')

from mmdaq.analysis.op_trace import OpTrace  # noqa: E402
from mmdaq.ops.fused_layer import (fused_backward, fused_backward_pass, fused_forward,  # noqa: E402
                                   fused_forward_applies, fused_forward_pass, fused_supported)
from mmdaq.ops.geometry import ConvGeometry  # noqa: E402
from mmdaq.ops.int8_layer import int8_conv_backward_pass, int8_conv_forward_pass  # noqa: E402
from mmdaq.ops.triton_launch import count_launches  # noqa: E402
from mmdaq.quantization.schemes import build_scheme  # noqa: E402
from mmdaq.testing import assert_same, mixed_channel_grad  # noqa: E402

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
    assert rule is not None and fused_supported(x, weight)
    with count_launches() as launches:
        y, x_q, s_x, w_q, s_w = fused_forward(x, weight, bias, scheme, geo)
        grad_y = mixed_channel_grad((2, 6) + tuple(y.shape[2:]), seed=stride).to(DEVICE)
        got = fused_backward(grad_y, x_q, s_x, w_q, s_w, scheme, geo, rule, True, True, True)
    # X 2, W 2, forward 1; G_Y 3, wgrad 1 (2 with a split reduction), dgrad 1
    assert len(launches) == 10 + (launches.count('weight_grad_epilogue_kernel')), launches
    assert launches.count('weight_grad_epilogue_kernel') <= 1
    ref_scheme = copy.deepcopy(build_scheme(method))
    y_ref, *saved_ref = int8_conv_forward_pass(x, weight, bias, ref_scheme, geo)
    for got_t, want_t in zip((x_q, s_x, w_q, s_w), saved_ref):
        assert torch.equal(got_t, want_t)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    ref = int8_conv_backward_pass(grad_y, *saved_ref, weight, ref_scheme, geo, 0, True, True,
                                  True)
    torch.testing.assert_close(got[0], ref[0], rtol=0, atol=0)  # G_X
    torch.testing.assert_close(got[1], ref[1], rtol=0, atol=0)  # G_W
    torch.testing.assert_close(got[2], ref[2], rtol=1e-5, atol=1e-6)  # float64 vs float32 sum


def test_unfusable_options_have_no_rule():
    assert build_scheme('daq', grad_rounding='stochastic').fused_grad_rule() is None
    assert build_scheme('daq', forward='fp32').fused_grad_rule() is None
    assert build_scheme('daq', clip_interval=2).fused_grad_rule() is None
    assert build_scheme('ui8').fused_grad_rule() is None
    assert build_scheme('daq', long_tail_rule='ema').fused_grad_rule() is None


def _torch_compute_ops(trace):
    """PyTorch ops that would launch a kernel on CUDA (not allocations, views, or the
    interpreter's copies to and from the host)."""
    free = {'aten.empty', 'aten.new_empty', 'aten.permute', 'aten.select', 'aten.slice',
            'aten.view', 'aten.as_strided', 'aten.expand', 'aten.detach', 'aten.alias',
            'aten.movedim', 'aten.reshape', 'aten._reshape_alias', 'aten.unsqueeze'}
    if DEVICE == 'cpu':
        free |= {'aten.set_', 'aten.copy_'}
    return [r.name for r in trace.records if '.'.join(r.name.split('.')[:2]) not in free]


def _scheme_state(scheme):
    state = scheme.state_dict()
    return state, scheme.last_grad_weight_scale, getattr(scheme, 'is_gaussian', None)


@pytest.mark.parametrize('method', ['daq', 'per_channel', 'per_tensor'])
def test_layer_passes_take_the_chain_and_keep_the_scheme_state(method):
    """The CUDA passes of the INT8 op: the chain, 10 launches per forward + backward, the same
    gradients and the same scheme state over iterations and call slots as the passes of
    int8_layer."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 7, 7, generator=gen).to(DEVICE)
    weight = torch.randn(5, 4, 3, 3, generator=gen).to(DEVICE)
    geo = ConvGeometry((3, 3), (2, 2), (1, 1), (1, 1), 1)
    fused, ref = build_scheme(method), build_scheme(method)
    for step, slot in enumerate([0, 1, 0]):  # two calls in one iteration, then the next
        grad_y = mixed_channel_grad((2, 5, 4, 4), seed=step).to(DEVICE)
        if step == 2:
            grad_y[:, 0] = float('nan')  # a non-finite channel keeps its clip history
        with OpTrace() as trace, count_launches() as launches:
            y, *saved = fused_forward_pass(x, weight, None, fused, geo)
            got = fused_backward_pass(grad_y, *saved, weight, fused, geo, slot, True, True, False)
        assert len(launches) == 10 + launches.count('weight_grad_epilogue_kernel'), launches
        if step == 2:  # after the first calls of a slot: nothing but the Triton kernels runs
            assert _torch_compute_ops(trace) == [] and trace.syncs() == []
        assert saved[0].is_contiguous(memory_format=torch.channels_last)
        y_ref, *saved_ref = int8_conv_forward_pass(x, weight, None, ref, geo)
        want = int8_conv_backward_pass(grad_y, *saved_ref, weight, ref, geo, slot, True, True,
                                       False)
        assert_same((y, saved, got), (y_ref, saved_ref, want))
        assert_same(_scheme_state(fused), _scheme_state(ref))


@pytest.mark.parametrize('method, options, forward_launches', [
    ('ui8', dict(seed=0), 5),  # the base quantizers: the forward is fused, UI8's backward is not
    ('daq', dict(grad_rounding='stochastic', seed=0), 5),
    ('daq', dict(clip_interval=2), 5),
    ('daq', dict(weight_scale='per_channel'), 0),
    ('daq', dict(forward='fp32'), 0),
])
def test_layer_passes_fall_back_where_the_chain_does_not_apply(method, options, forward_launches):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 6, 6, generator=gen).to(DEVICE)
    weight = torch.randn(4, 3, 3, 3, generator=gen).to(DEVICE)
    bias = torch.randn(4, generator=gen).to(DEVICE)
    geo = ConvGeometry((3, 3), (1, 1), (1, 1), (1, 1), 1)
    fused, ref = build_scheme(method, **options), build_scheme(method, **options)
    grad_y = mixed_channel_grad((2, 4, 6, 6), seed=1).to(DEVICE)
    with count_launches() as launches:
        y, *saved = fused_forward_pass(x, weight, bias, fused, geo)
    assert len(launches) == forward_launches, launches
    with count_launches() as launches:
        got = fused_backward_pass(grad_y, *saved, weight, fused, geo, 0, True, True, True)
    assert launches == [] or fused.dataflow != 'int8', launches
    y_ref, *saved_ref = int8_conv_forward_pass(x, weight, bias, ref, geo)
    want = int8_conv_backward_pass(grad_y, *saved_ref, weight, ref, geo, 0, True, True, True)
    assert_same((y, saved, got), (y_ref, saved_ref, want))


@pytest.mark.parametrize('need_b', [False, True])
def test_no_weight_gradient_leaves_the_clip_state(need_b):
    """A layer whose weight needs no gradient: the same G_X and bias gradient, and (as in the
    reference passes) no clip update."""
    x, weight = torch.randn(2, 3, 6, 6).to(DEVICE), torch.randn(4, 3, 3, 3).to(DEVICE)
    geo = ConvGeometry((3, 3), (1, 1), (1, 1), (1, 1), 1)
    fused, ref = build_scheme('daq'), build_scheme('daq')
    grad_y = mixed_channel_grad((2, 4, 6, 6), seed=2).to(DEVICE)
    _, *saved = fused_forward_pass(x, weight, None, fused, geo)
    got = fused_backward_pass(grad_y, *saved, weight, fused, geo, 0, True, False, need_b)
    _, *saved_ref = int8_conv_forward_pass(x, weight, None, ref, geo)
    want = int8_conv_backward_pass(grad_y, *saved_ref, weight, ref, geo, 0, True, False, need_b)
    assert got[1] is None and want[1] is None
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    if need_b:
        torch.testing.assert_close(got[2], want[2], rtol=1e-5, atol=1e-6)
    assert fused.state_dict() == ref.state_dict() == {}


def test_layer_passes_fall_back_for_groups_and_linear():
    geo = ConvGeometry((3, 3), (1, 1), (1, 1), (1, 1), 2)
    x, weight = torch.randn(2, 4, 5, 5).to(DEVICE), torch.randn(4, 2, 3, 3).to(DEVICE)
    scheme = build_scheme('daq')
    assert not fused_forward_applies(x, weight, scheme)
    assert not fused_forward_applies(torch.randn(3, 4), torch.randn(5, 4), scheme)
    with count_launches() as launches:
        y, *saved = fused_forward_pass(x, weight, None, scheme, geo)
        fused_backward_pass(torch.randn_like(y), *saved, weight, scheme, geo, 0, True, True,
                            False)
    assert launches == []


def test_diagnostics_and_the_guard_take_the_reference_path():
    scheme = build_scheme('daq')
    scheme.collect_stats = True
    assert scheme.fused_grad_rule() is None
    scheme.collect_stats, scheme.measure_error = False, True
    assert scheme.fused_grad_rule() is None


def test_the_int8_ops_have_a_cuda_kernel():
    for op in ('int8_conv', 'int8_conv_backward'):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f'mmdaq::{op}', 'CUDA')


def test_half_precision_activations_and_gradients():
    """X and G_Y in bfloat16 (a layer under autocast): the chain quantizes them as the reference
    passes do, and returns Y in X's dtype and G_X in G_Y's (its kernel rounds as a cast
    would)."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 4, 6, 6, generator=gen).to(DEVICE, torch.bfloat16)
    weight = torch.randn(5, 4, 3, 3, generator=gen).to(DEVICE)
    geo = ConvGeometry((3, 3), (1, 1), (1, 1), (1, 1), 1)
    fused, ref = build_scheme('daq'), build_scheme('daq')
    grad_y = mixed_channel_grad((2, 5, 6, 6), seed=5).to(DEVICE, torch.bfloat16)
    y, *saved = fused_forward_pass(x, weight, None, fused, geo)
    got = fused_backward_pass(grad_y, *saved, weight, fused, geo, 0, True, True, False)
    y_ref, *saved_ref = int8_conv_forward_pass(x, weight, None, ref, geo)
    want = int8_conv_backward_pass(grad_y, *saved_ref, weight, ref, geo, 0, True, True, False)
    assert y.dtype == torch.bfloat16 and got[0].dtype == torch.bfloat16
    assert_same((y, saved[:2], got[:2]), (y_ref, saved_ref[:2], (want[0].bfloat16(), want[1])))
