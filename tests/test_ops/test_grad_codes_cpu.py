"""mmdaq::daq_grad_codes, DAQ's G_Y pass on CPU in one op: the same codes, scales, bias
gradient and clip state as DAQScheme.quantize_grads, and the layer's backward takes it."""
import copy

import pytest
import torch

from mmdaq.analysis.op_trace import OpTrace
from mmdaq.kernels.grad_codes import _daq_grad_codes_fake
from mmdaq.ops import int8_layer
from mmdaq.ops.geometry import ConvGeometry
from mmdaq.ops.grad_codes_cpu import daq_grad_codes_cpu, daq_grad_codes_cpu_applies
from mmdaq.ops.int8_layer import int8_conv_backward_pass, int8_conv_forward_pass
from mmdaq.quantization.schemes import build_scheme
from mmdaq.testing import assert_same, mixed_channel_grad

pytestmark = pytest.mark.needs_ext


def _state(scheme):
    return (scheme.state_dict(), scheme.last_grad_weight_scale, scheme.is_gaussian)


def _grads():
    """(slot, G_Y) per call: channels of every kind and a long-tailed one (clipped below its
    abs-max), a second call slot, a non-finite channel (it keeps its clip history), an Inf,
    then a change of shape."""
    steps = []
    for step, slot in enumerate([0, 1, 0, 0, 1]):
        g = mixed_channel_grad((3, 6, 16, 16), seed=step)
        gen = torch.Generator().manual_seed(step)
        g[:, 5] = torch.randn(g[:, 5].shape, generator=gen) / torch.rand(
            g[:, 5].shape, generator=gen).clamp_min(1e-3)  # heavy tails
        if step == 2:
            g[:, 0] = float('nan')
        if step == 3:
            g[1, 4, 2, 2] = float('inf')
        steps.append((slot, g))
    steps.append((0, mixed_channel_grad((2, 9, 3, 3), seed=9)))
    return steps


# Without the magnitude weight (alpha 0) the objective clips the long-tailed channels; with
# the default weight it keeps their abs-max at 8 bits.
@pytest.mark.parametrize('options', [{}, dict(alpha=0.0), dict(threshold=1.0, alpha=0.0),
                                     dict(threshold=0.0)])
def test_the_op_gives_what_quantize_grads_gives(options):
    torch.manual_seed(0)
    op_scheme, ref = build_scheme('daq', **options), build_scheme('daq', **options)
    clipped = 0
    for slot, g in _grads():
        rule = op_scheme.fused_grad_rule(slot)
        assert daq_grad_codes_cpu_applies(g, rule, op_scheme)
        state = op_scheme.fused_clip_state(slot, g.shape[1], g.device)
        codes = daq_grad_codes_cpu(g, rule, state, need_bias=True)
        op_scheme.record_fused_grads(slot, rule, codes)
        want_w, want_x = ref.quantize_grads(g, dim=1, slot=slot)
        clipped += int((codes.clip < codes.g_max).sum())
        assert_same(((codes.g_q_w, codes.s_w), (codes.g_q_x, codes.s_x)), (want_w, want_x))
        assert_same(codes.grad_bias, g.sum(dim=(0, 2, 3)))
        assert_same(_state(op_scheme), _state(ref))
    assert (clipped > 0) == (options.get('alpha') == 0.0)  # the objective clip ran


def test_the_layer_backward_runs_the_op_and_gives_the_eager_gradients(monkeypatch):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 6, 7, 7, generator=gen)
    weight, bias = torch.randn(6, 6, 3, 3, generator=gen), torch.randn(6, generator=gen)
    geo = ConvGeometry((3, 3), (1, 1), (1, 1), (1, 1), 1)
    op_scheme, ref = build_scheme('daq'), build_scheme('daq')
    for step, slot in enumerate([0, 0]):
        grad_y = mixed_channel_grad((2, 6, 7, 7), seed=step)
        _, *saved = int8_conv_forward_pass(x, weight, bias, op_scheme, geo)
        with OpTrace() as trace:
            got = int8_conv_backward_pass(grad_y, *saved, weight, op_scheme, geo, slot, True,
                                          True, True)
        names = [r.name for r in trace.records]
        assert 'mmdaq.daq_grad_codes' in names and 'mmdaq.grad_channel_stats' not in names
        with monkeypatch.context() as patch:  # the eager G_Y pass: scheme.quantize_grads
            patch.setattr(int8_layer, 'daq_grad_codes_cpu_applies', lambda *args: False)
            _, *saved_ref = int8_conv_forward_pass(x, weight, bias, ref, geo)
            want = int8_conv_backward_pass(grad_y, *saved_ref, weight, ref, geo, slot, True,
                                           True, True)
        assert_same(got, want)
        assert_same(_state(op_scheme), _state(ref))


@pytest.mark.parametrize('method, options, need_w', [
    ('daq', dict(grad_bits=6), True),  # 8-bit copies only
    ('daq', dict(grad_rounding='stochastic', seed=0), True),
    ('daq', dict(long_tail_rule='ema'), True),
    ('per_channel', {}, True),  # abs-max rule: the eager pass is already short
    ('daq', {}, False),  # no G_W copy: the clip state is not touched
])
def test_other_schemes_and_options_keep_the_eager_pass(method, options, need_w):
    scheme = build_scheme(method, **options)
    g = mixed_channel_grad((2, 4, 3, 3), seed=0)
    rule = scheme.fused_grad_rule(0) if need_w else None
    assert not daq_grad_codes_cpu_applies(g, rule, scheme)
    x_q = torch.zeros(2, 4, 3, 3, dtype=torch.int8)
    w_q = torch.zeros(4, 4, 1, 1, dtype=torch.int8)
    one = torch.ones(())
    with OpTrace() as trace:
        int8_conv_backward_pass(g, x_q, one, w_q, one, w_q.float(), scheme,
                                ConvGeometry((1, 1), (1, 1), (0, 0), (1, 1), 1), 0, True, need_w,
                                False)
    assert 'mmdaq.daq_grad_codes' not in [r.name for r in trace.records]
    if not need_w:
        assert scheme.state_dict() == build_scheme(method, **options).state_dict()


def test_opcheck_and_bad_input():
    g = mixed_channel_grad((2, 5, 3, 3), seed=0)
    state = [torch.zeros(5), torch.ones(5), torch.zeros(5, dtype=torch.bool)]
    torch.library.opcheck(torch.ops.mmdaq.daq_grad_codes.default,
                          (g, 1, 1024, 3.0, 0.3, *copy.deepcopy(state), False, True))
    with pytest.raises(RuntimeError, match='g must be a float32'):
        torch.ops.mmdaq.daq_grad_codes(g.double(), 1, 1024, 3.0, 0.3, *state, False, False)
    with pytest.raises(RuntimeError, match='g must not be empty'):
        torch.ops.mmdaq.daq_grad_codes(g[:0], 1, 1024, 3.0, 0.3, *state, False, False)
    with pytest.raises(RuntimeError, match=r'clip_ratio must be a contiguous CPU Float tensor '
                       r'of shape \[5\]'):
        torch.ops.mmdaq.daq_grad_codes(g, 1, 1024, 3.0, 0.3, state[0], torch.ones(4), state[2],
                                       False, False)
    with pytest.raises(RuntimeError, match='is_gaussian must be'):
        torch.ops.mmdaq.daq_grad_codes(g, 1, 1024, 3.0, 0.3, state[0], state[1],
                                       state[2].float(), False, False)


def test_the_fake_matches_the_kernel():
    g = mixed_channel_grad((2, 5, 3, 3), seed=0)
    state = [torch.zeros(5), torch.ones(5), torch.zeros(5, dtype=torch.bool)]
    for need_bias in (False, True):
        real = torch.ops.mmdaq.daq_grad_codes(g, 1, 1024, 3.0, 0.3, *state, False, need_bias)
        fake = _daq_grad_codes_fake(g, 1, 1024, 3.0, 0.3, *state, False, need_bias)
        assert [(t.shape, t.dtype, t.stride()) for t in real] == \
            [(t.shape, t.dtype, t.stride()) for t in fake]
