"""OpTrace: the ops a step dispatches, its host syncs, and the traffic of each op."""
import pytest
import torch
from torch import nn

import mmdaq
from mmdaq.analysis.op_trace import OpTrace, matmul_flops


def test_records_ops_syncs_and_bytes():
    x = torch.ones(4, 8)
    with OpTrace() as trace:
        y = (x * 2).sum()
        assert bool(y > 0)
        value = y.item()
    assert value == 64
    names = [r.name for r in trace.records]
    assert names[:3] == ['aten.mul.Tensor', 'aten.sum', 'aten.gt.Scalar']
    assert len(trace.syncs()) == 2 and trace.syncs()[-1] == 'aten._local_scalar_dense'
    mul = trace.records[0]
    assert (mul.bytes_read, mul.bytes_written) == (4 * 8 * 4, 4 * 8 * 4)


def test_views_empties_and_no_op_conversions_launch_no_kernel():
    x = torch.ones(4, 8)
    with OpTrace() as trace:
        x.view(8, 4).t().contiguous()
        torch.empty(3)
        x.to(torch.float32)  # returns x
        x.contiguous()
        x.to(torch.float64)
    names = [r.name for r in trace.kernels()]
    assert names == ['aten.clone', 'aten._to_copy']  # contiguous of a transpose; a real cast


def test_descends_into_the_python_ops_of_mmdaq():
    conv = mmdaq.convert_model(nn.Conv2d(4, 8, 3, padding=1), method='daq')
    x = torch.randn(2, 4, 6, 6)
    with OpTrace() as trace:
        conv(x)
    outer = [r for r in trace.records if r.depth == 0 and r.name.startswith('mmdaq')]
    assert [r.name for r in outer] == ['mmdaq.int8_conv']
    assert outer[0].is_python_op and not outer[0].launches_kernel
    inner = {r.name for r in trace.records if r.depth == 1}
    # the codes of X: the compiled per-tensor op, or the eager quantizer without the extension
    assert inner & {'mmdaq.quantize_per_tensor_int8', 'mmdaq.quantize_int8', 'aten.round'}


def test_matmul_flops():
    a, b = torch.ones(3, 5), torch.ones(5, 7)
    with OpTrace() as trace:
        a @ b
    assert [r.name for r in trace.records] == ['aten.mm']
    assert matmul_flops(trace.records[0]) == 2 * 3 * 5 * 7


def _tiny_model(method, **options):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                          nn.Conv2d(16, 16, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(16, 4))
    return mmdaq.convert_model(model, method=method, exclude=[r'^0$'], **options)


@pytest.mark.parametrize('method, options', [
    ('daq', {}), ('per_channel', {}), ('per_tensor', {}), ('ui8', {}),
    ('ui8', dict(update_interval=1)),  # its clip search and LR factor on every step
])
def test_a_training_step_has_no_host_sync(method, options):
    """After warm-up, forward + backward + optimizer step read nothing back to the host: the
    clip state, scales and distribution decisions stay in tensors (the CPU check of what
    torch.cuda.set_sync_debug_mode('error') checks on a GPU)."""
    model = _tiny_model(method, **options)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, target = torch.randn(2, 3, 16, 16), torch.tensor([0, 3])

    def step():
        loss = nn.functional.cross_entropy(model(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()
    step()
    with OpTrace() as trace:
        step()
    assert sum(r.name.startswith('mmdaq.int8_conv') for r in trace.records) == 2 * 3
    assert trace.syncs() == []
