import pytest
import torch
from torch import nn

from mmdaq.analysis import GradientCapture, layer_gradient_errors
from mmdaq.quantization.schemes import build_scheme


class _Shared(nn.Module):
    """A conv applied twice per forward (like an RPN head on two FPN levels)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        f = torch.relu(self.stem(x))
        a = self.head(f).mean((2, 3))
        b = self.head(nn.functional.avg_pool2d(f, 2)).mean((2, 3))
        return self.fc(a + b)


def test_capture_records_every_call_with_matching_shapes():
    torch.manual_seed(0)
    model = _Shared()
    with GradientCapture(model) as cap:
        model(torch.randn(2, 3, 8, 8)).sum().backward()
    records = cap.complete()
    assert sorted(records) == ['fc', 'head', 'stem']
    calls = records['head'].calls
    assert [tuple(c.g_y.shape) for c in calls] == [(2, 4, 8, 8), (2, 4, 4, 4)]
    assert all(c.x.shape[2:] == c.g_y.shape[2:] for c in calls)
    assert not model._forward_hooks and not model.head._forward_hooks  # hooks removed


def test_pattern_must_match():
    with pytest.raises(ValueError, match='pattern must match at least one'):
        GradientCapture(_Shared(), pattern='backbone')


def test_gradient_errors_rank_the_methods():
    torch.manual_seed(0)
    model = _Shared()
    with GradientCapture(model, pattern='head') as cap:
        model(torch.randn(4, 3, 8, 8)).sum().backward()
    rec = cap.complete()['head']
    schemes = {m: build_scheme(m) for m in ('per_tensor', 'per_channel', 'daq')}
    res = layer_gradient_errors(rec.module, rec.calls[0].x, rec.calls[0].g_y, schemes, alpha=3.0)
    assert res['per_channel']['mwe'] == pytest.approx(1.0)
    assert res['per_tensor']['mwe'] >= 1.0
    for method in schemes:
        assert res[method]['gw_cos'] > 0.999 and res[method]['gx_cos'] > 0.999
        assert 0 <= res[method]['gw_rel_mse'] < 1e-3
    assert 0.0 <= res['daq']['share_gaussian'] <= 1.0


@pytest.mark.parametrize('layer', ['head', 'fc'])
def test_gradient_errors_of_the_other_dataflows(layer):
    """UI8 runs the INT8 layer, ShiftQuant its own (shift) layer; fewer bits, larger error."""
    torch.manual_seed(0)
    model = _Shared()
    with GradientCapture(model) as cap:
        model(torch.randn(4, 3, 8, 8)).sum().backward()
    rec = cap.complete()[layer]
    schemes = {'ui8': build_scheme('ui8'),
               'sq8': build_scheme('shiftquant', weight_bits=8, input_bits=8, grad_bits=8,
                                   grad_rounding='nearest'),
               'sq4': build_scheme('shiftquant', grad_rounding='nearest')}
    res = layer_gradient_errors(rec.module, rec.calls[0].x, rec.calls[0].g_y, schemes, alpha=3.0)
    assert res['ui8']['mwe'] >= 1.0 - 1e-6  # one clip per tensor: not below per-channel abs-max
    assert res['sq8']['mwe'] != res['sq8']['mwe']  # NaN: ShiftQuant has no per-channel clip
    for key in ('gw_rel_mse', 'gx_rel_mse'):
        assert 0 <= res['sq8'][key] < res['sq4'][key] < 0.5
    assert res['sq8']['gw_cos'] > 0.999 and res['ui8']['gw_cos'] > 0.99
