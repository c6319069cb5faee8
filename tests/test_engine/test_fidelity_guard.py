"""The fidelity guard: its probe of a layer's gradient error, its moves, and resume."""
import copy

import pytest
import torch
from test_daq_hook import make_runner  # noqa: E402 (this folder is on sys.path)
from torch import nn

import mmdaq
from mmdaq.cnn import daq_layers
from mmdaq.engine.fidelity_guard import FidelityGuard
from mmdaq.ops.geometry import LINEAR_GEOMETRY, ConvGeometry
from mmdaq.ops.grad_error import float_grads, int8_grad_errors


def _errors(grad_bits, layer='conv'):
    torch.manual_seed(0)
    model = nn.Conv2d(4, 8, 3, padding=1) if layer == 'conv' else nn.Linear(6, 5)
    daq = mmdaq.convert_model(copy.deepcopy(model), method='daq', grad_bits=grad_bits)
    x = torch.randn((4, 4, 9, 9) if layer == 'conv' else (7, 6), requires_grad=True)
    daq.quant_scheme.measure_error = True
    y = daq(x)
    y.backward(torch.randn_like(y))
    assert not daq.quant_scheme.measure_error  # one probe per request
    return daq.quant_scheme.last_error


@pytest.mark.parametrize('layer', ['conv', 'linear'])
def test_probe_measures_the_int8_backward_against_float(layer):
    at_8, at_2 = _errors(8, layer), _errors(2, layer)
    assert set(at_8) == {'grad_input', 'grad_weight'}
    assert all(0 < float(e) < 0.05 for e in at_8.values()), at_8
    assert all(float(e) > 0.2 for e in at_2.values()), at_2


def test_int8_grad_errors_are_relative_errors_to_float_gemms():
    geo = ConvGeometry((3, 3), (1, 1), (1, 1), (1, 1), 1)
    gen = torch.Generator().manual_seed(0)
    x_q = torch.randint(-127, 128, (2, 3, 5, 5), generator=gen, dtype=torch.int8)
    s_x, w = torch.tensor(0.01), torch.randn(4, 3, 3, 3, generator=gen)
    g = torch.randn(2, 4, 5, 5, generator=gen)
    ref_x, ref_w = float_grads(g, x_q.float() * s_x, w, geo, True, True)
    errors = int8_grad_errors(g, x_q, s_x, w, geo, ref_x * 1.1, ref_w)
    assert float(errors['grad_input']) == pytest.approx(0.1, rel=1e-5)
    assert float(errors['grad_weight']) == 0
    linear = int8_grad_errors(g[:, :, 0, 0], x_q[:, :, 0, 0], s_x, w[:, :, 0, 0],
                              LINEAR_GEOMETRY, None, torch.zeros(4, 3))
    assert set(linear) == {'grad_weight'} and float(linear['grad_weight']) == 1


@pytest.mark.parametrize('options, match', [
    (dict(interval=0), 'guard interval must be an int >= 1, but got 0'),
    (dict(threshold=-1), 'guard threshold must be a number > 0, but got -1'),
    (dict(patience=1.5), 'guard patience must be an int >= 1, but got 1.5'),
])
def test_bad_guard_options(options, match):
    with pytest.raises(ValueError, match=match):
        FidelityGuard(**options)
    with pytest.raises(TypeError, match='unexpected keyword'):
        FidelityGuard(every=3)


def test_guard_moves_a_pathological_layer_to_8_bits_then_fp32():
    torch.manual_seed(0)
    model = mmdaq.convert_model(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                              nn.Conv2d(8, 8, 3, padding=1)), method='daq')
    layers = daq_layers(model)
    layers['2'].quant_scheme.grad_bits = 2  # the pathological layer: 2-bit gradients
    guard = FidelityGuard(interval=1, threshold=0.1, patience=2)
    x = torch.randn(2, 3, 8, 8)
    probes = []
    for it in range(8):
        guard.before_iter(it, layers)
        model(x).square().mean().backward()
        probes.append(guard.after_iter(layers))
    assert [p.layer for p in probes[:4]] == ['0', '2', '0', '2']  # round robin
    moved = [(p.layer, p.action) for p in probes if p.action]
    assert moved[0] == ('2', '8 bits') and layers['2'].quant_scheme.grad_bits == 8
    assert layers['0'].quant_enabled and layers['2'].quant_enabled
    # A threshold no INT8 layer meets moves every layer to FP32 in turn.
    guard.threshold = 1e-9
    for it in range(8, 16):
        guard.before_iter(it, layers)
        model(x).square().mean().backward()
        guard.after_iter(layers)
    assert guard.fp32_layers == {'0', '2'}
    assert not any(layer.quant_enabled for layer in layers.values())
    assert guard.before_iter(16, layers) is None  # nothing left to probe


def test_guard_moves_a_layer_with_a_low_bit_grad_input_copy_to_8_bits():
    torch.manual_seed(0)
    model = mmdaq.convert_model(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                              nn.Conv2d(8, 8, 3, padding=1)), method='daq',
                                grad_input_bits=2)  # only G_X's copy of G_Y is 2-bit
    layers = daq_layers(model)
    guard = FidelityGuard(interval=1, threshold=0.1, patience=1)
    x = torch.randn(2, 3, 8, 8)
    for it in range(2):
        guard.before_iter(it, layers)
        model(x).square().mean().backward()
        probe = guard.after_iter(layers)
    assert probe.layer == '2' and probe.action == '8 bits', probe
    assert probe.errors['grad_input'] > 0.1 > probe.errors['grad_weight']
    assert layers['2'].quant_scheme.grad_input_copy_bits == 8


def test_guard_in_a_runner_logs_moves_and_survives_resume(tmp_path):
    guard = dict(interval=1, threshold=1e-9, patience=1)
    runner = make_runner(tmp_path, max_iters=4, hook=dict(type='DAQHook', guard=guard,
                                                          stats_interval=0))
    runner.train()
    scalars = runner.message_hub.log_scalars
    assert 0 < scalars['train/daq/guard_grad_weight_error'].current() < 1
    moved = {name for name, layer in daq_layers(runner.model).items()
             if not layer.quant_enabled}
    assert moved == {'body.2', 'neck'}
    with open(next(tmp_path.glob('*/*.log'))) as f:
        log = f.read()
    assert 'DAQHook guard: layer body.2 moved to FP32: relative gradient error' in log
    ckpt = torch.load(tmp_path / 'iter_4.pth', weights_only=False)
    assert ckpt['daq_guard_state']['fp32_layers'] == ['body.2', 'neck']
    # Resumed with a threshold that nothing exceeds, the moved layers stay in FP32.
    resumed = make_runner(tmp_path, max_iters=6, resume=True, hook=dict(
        type='DAQHook', guard=dict(interval=1, threshold=10.0), stats_interval=0), name='r')
    resumed.train()
    assert not any(layer.quant_enabled for layer in daq_layers(resumed.model).values())


def test_guard_option_must_be_a_dict():
    from mmdaq.engine import DAQHook
    with pytest.raises(ValueError, match='guard must be a dict of FidelityGuard options'):
        DAQHook(guard=5)
