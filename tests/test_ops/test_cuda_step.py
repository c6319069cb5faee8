"""A converted model's training step on CUDA: no host sync, and replayable as a CUDA graph,
also under torch.compile(mode='reduce-overhead').

Skipped without a GPU (the CPU twin of the sync check is
tests/test_analysis/test_op_trace.py::test_a_training_step_has_no_host_sync).
"""
import pytest
import torch
from torch import nn

import mmdaq
from mmdaq.testing import needs_cuda

pytestmark = needs_cuda


def _model_and_step(method='daq'):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                          nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
                          nn.Conv2d(64, 64, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(64, 10)).cuda()
    mmdaq.convert_model(model, method=method, exclude=[r'^0$'])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator(device='cuda').manual_seed(0)
    batches = [(torch.randn(8, 3, 32, 32, device='cuda', generator=gen),
                torch.randint(0, 10, (8, ), device='cuda', generator=gen)) for _ in range(6)]
    return model, optimizer, batches


def _step(model, optimizer, x, target):
    optimizer.zero_grad(set_to_none=False)
    loss = nn.functional.cross_entropy(model(x), target)
    loss.backward()
    optimizer.step()
    return loss.detach()


@pytest.mark.parametrize('method', ['daq', 'per_channel', 'per_tensor', 'ui8'])
def test_step_has_no_host_sync(method):
    model, optimizer, batches = _model_and_step(method)
    for x, t in batches[:2]:  # warm-up: first-call choices (autotune, kernel caches)
        _step(model, optimizer, x, t)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        for x, t in batches[2:]:
            _step(model, optimizer, x, t)
    finally:
        torch.cuda.set_sync_debug_mode('default')


def test_step_replays_as_a_cuda_graph_with_eager_losses():
    eager, eager_opt, batches = _model_and_step()
    want = [_step(eager, eager_opt, x, t) for x, t in batches]

    model, optimizer, _ = _model_and_step()
    static_x, static_t = batches[0][0].clone(), batches[0][1].clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    losses = []
    with torch.cuda.stream(side):  # warm-up outside the graph, as capture requires
        for x, t in batches[:2]:
            static_x.copy_(x)
            static_t.copy_(t)
            losses.append(_step(model, optimizer, static_x, static_t))
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):  # records the step; runs nothing
        static_loss = _step(model, optimizer, static_x, static_t)
    for x, t in batches[2:]:
        static_x.copy_(x)
        static_t.copy_(t)
        graph.replay()
        losses.append(static_loss.clone())
    torch.testing.assert_close(torch.stack(losses), torch.stack(want), rtol=1e-4, atol=1e-5)


def test_reduce_overhead_compile_gives_eager_losses():
    """torch.compile(mode='reduce-overhead'): inductor around the opaque INT8 ops, replayed as
    CUDA graphs; the losses of eager steps (the clip state lives in tensors the kernels update
    in place, so replays advance it too)."""
    eager, eager_opt, batches = _model_and_step()
    want = [_step(eager, eager_opt, x, t) for x, t in batches]

    model, optimizer, _ = _model_and_step()
    compiled = torch.compile(model, mode='reduce-overhead')
    losses = [_step(compiled, optimizer, x, t) for x, t in batches]
    torch.testing.assert_close(torch.stack(losses), torch.stack(want), rtol=1e-4, atol=1e-5)
