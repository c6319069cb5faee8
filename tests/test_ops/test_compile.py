"""torch.compile of a network with quantized layers: one graph (no breaks), same results as
eager, for the custom ops of every layer family (INT8, ShiftQuant, low-bit)."""
import copy

import pytest
import torch
from torch import nn

from mmdaq.cnn import convert_model, daq_layers, lowbit_layers


def _net():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2),
                         nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 1), nn.Flatten(1),
                         nn.Linear(16 * 3 * 3, 5))


@pytest.mark.parametrize('method, options', [('daq', {}), ('per_tensor', {}),
                                             ('shiftquant', dict(seed=0)), ('zhuang_w4a4', {})])
def test_compiled_daq_net_has_one_graph_and_matches_eager(method, options):
    torch.manual_seed(0)
    eager = convert_model(_net(), method=method, **options)
    compiled_model = copy.deepcopy(eager)
    assert len(daq_layers(eager)) + len(lowbit_layers(eager)) == 4
    compiled = torch.compile(compiled_model, fullgraph=True, backend='aot_eager')
    opt_e = torch.optim.SGD(eager.parameters(), lr=0.1)
    opt_c = torch.optim.SGD(compiled_model.parameters(), lr=0.1)
    for step in range(3):
        x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(step))
        losses = []
        for model, opt in ((eager, opt_e), (compiled, opt_c)):
            opt.zero_grad()
            loss = model(x).square().mean()
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    for (name, a), (_, b) in zip(eager.named_parameters(), compiled_model.named_parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)
    if method == 'daq':  # the scheme state advanced inside the compiled backward too
        for (_, a), (_, b) in zip(daq_layers(eager).items(), daq_layers(compiled_model).items()):
            state = a.quant_scheme.state_dict()
            assert state['updates'] == {0: 3}  # one clip update per backward
            torch.testing.assert_close(b.quant_scheme.state_dict(), state)
