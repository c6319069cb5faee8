"""What the fidelity guard adds to a training iteration (DAQHook(guard=...)).

Times training iterations of a DAQ-converted ResNet-50 (mmdet's backbone and a linear head, on
``--batch`` x 3 x ``--size`` px), with and without a probe of one layer (the guard probes one
layer every ``interval`` iterations), interleaved so that a busy machine slows both alike; the
overhead at an interval is ``(probe iteration - plain iteration) / interval`` of a plain one::

    python tools/benchmarks/bench_guard.py --batch 4 --size 112 --reps 6
"""
import argparse
import os.path as osp
import statistics
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import mmdaq  # noqa: E402
from mmdaq.cnn import daq_layers  # noqa: E402
from mmdaq.engine.fidelity_guard import FidelityGuard  # noqa: E402
from mmdaq.ops.int8_matmul import cpu_isa  # noqa: E402


def build(batch: int, size: int):
    from mmdet.models.backbones import ResNet
    torch.manual_seed(0)
    model = nn.Sequential(ResNet(depth=50), nn.Identity())
    model[1] = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 10))
    mmdaq.convert_model(model, method='daq', exclude=[r'^0\.conv1$'])
    x, target = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch, ))

    def forward(m):
        return nn.functional.cross_entropy(m[1](m[0](x)[-1]), target)

    return model, forward


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--size', type=int, default=112)
    parser.add_argument('--reps', type=int, default=6)
    parser.add_argument('--interval', type=int, default=FidelityGuard.interval)
    args = parser.parse_args(argv)
    model, loss_fn = build(args.batch, args.size)
    layers = daq_layers(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    guard = FidelityGuard(interval=1, threshold=1e9)  # probes every call, never moves a layer

    def step(probe: bool) -> float:
        t0 = time.perf_counter()
        if probe:
            guard.before_iter(0, layers)
        loss = loss_fn(model)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if probe:
            guard.after_iter(layers)
        return time.perf_counter() - t0

    step(False), step(True)  # warm-up
    plain, probed = [], []
    for _ in range(args.reps):
        plain.append(step(False))
        probed.append(step(True))
    t_plain, t_probe = statistics.median(plain), statistics.median(probed)
    overhead = (t_probe - t_plain) / args.interval / t_plain
    print(f'bench_guard: {torch.get_num_threads()} threads, CPU {cpu_isa()}, torch '
          f'{torch.__version__}; ResNet-50 DAQ, batch {args.batch}, {args.size} px, '
          f'{len(layers)} INT8 layers probed in turn; {time.strftime("%Y-%m-%d %H:%M")}')
    arguments = ' '.join(sys.argv[1:] if argv is None else argv)
    print(f'command: python tools/benchmarks/bench_guard.py {arguments}')
    print(f'iteration: {t_plain:.3f} s plain, {t_probe:.3f} s with a probe (medians of '
          f'{args.reps}); at interval {args.interval} the guard adds {100 * overhead:.2f}%')
    return dict(plain=t_plain, probe=t_probe, overhead=overhead)


if __name__ == '__main__':
    main()
