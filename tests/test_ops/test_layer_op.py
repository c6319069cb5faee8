"""The layers' eager route (an autograd.Function) and their custom op give the same results and
state, and each call takes the route it should."""
import copy

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import mmdaq.ops.layer_op as layer_op
from mmdaq.analysis.op_trace import OpTrace
from mmdaq.cnn import DAQConv2d, DAQConv3d, DAQLinear
from mmdaq.testing import assert_same

LAYERS = [
    (lambda m: DAQConv2d(4, 6, 3, stride=2, padding=1, method=m), (2, 4, 7, 7)),
    (lambda m: DAQConv3d(4, 6, (3, 1, 1), padding=(1, 0, 0), method=m), (2, 4, 3, 4, 4)),
    (lambda m: DAQConv2d(8, 6, 1, method=m), (2, 8, 5, 5)),
    (lambda m: DAQLinear(5, 3, method=m), (4, 5)),
]


def _steps(layer, x, grads, eager: bool, monkeypatch):
    """Two forward + backward steps; the outputs, gradients and the scheme's state after them
    (the global RNG reset: UI8 and ShiftQuant round stochastically)."""
    torch.manual_seed(1)
    if not eager:
        monkeypatch.setattr(layer_op, 'eager_route_applies', lambda *tensors: False)
    outputs = []
    for grad in grads:
        x = x.detach().requires_grad_()
        y = layer(x)
        y.backward(grad)
        outputs += [y, x.grad, layer.weight.grad.clone()]
        if layer.bias is not None:
            outputs.append(layer.bias.grad.clone())
        layer.zero_grad()
    monkeypatch.undo()
    return outputs, layer.quant_scheme.state_dict()


@pytest.mark.parametrize('method', ['daq', 'per_tensor', 'per_channel', 'ui8', 'shiftquant'])
@pytest.mark.parametrize('build, x_shape', LAYERS)
def test_eager_route_equals_the_op(build, x_shape, method, monkeypatch):
    torch.manual_seed(0)
    layer = build(method)
    x = torch.randn(x_shape)
    grads = [torch.randn(layer(x).shape) for _ in range(2)]
    op_layer = copy.deepcopy(layer)
    got, got_state = _steps(layer, x, grads, True, monkeypatch)
    want, want_state = _steps(op_layer, x, grads, False, monkeypatch)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert_same(g, w)
    assert_same(got_state, want_state)


def _backward_name(layer, x) -> str:
    return type(layer(x).grad_fn).__name__


def test_each_call_takes_its_route():
    layer = DAQConv2d(4, 6, 3, padding=1, method='daq')
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    assert _backward_name(layer, x) == 'EagerLayerBackward'  # plain eager
    with OpTrace():  # a dispatch mode sees the op
        assert 'mmdaq_int8_conv' in _backward_name(layer, x)
    assert layer_op.eager_route_applies(x, layer.weight, None)
    assert not layer_op.eager_route_applies(x.to('meta'), layer.weight, None)
    with FakeTensorMode() as mode:
        fake = mode.from_tensor(x)
        assert not layer_op.eager_route_applies(fake, None)


def test_a_torch_without_the_probes_takes_the_op(monkeypatch):
    monkeypatch.setattr(layer_op, '_DISPATCH_MODES', None)
    layer = DAQConv2d(4, 6, 3, padding=1, method='daq')
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    assert not layer_op.eager_route_applies(x, layer.weight, None)
    assert 'mmdaq_int8_conv' in _backward_name(layer, x)
