"""Where the time of one DAQ INT8 conv goes: torch.profiler over forward + backward.

Prints the operators sorted by device time (CUDA) or CPU time, for one FP32 conv and its
DAQ twin on the same input, so the share of quantization, clip solving, im2col and the INT8
GEMMs in a layer's backward can be read off::

    python tools/benchmarks/profile_daq_layer.py  # 64 -> 64 k3 on 56 x 56, batch 64 on CUDA
    python tools/benchmarks/profile_daq_layer.py --channels 256 --out-channels 64 --kernel 1

``--resnet50`` profiles DAQ on every distinct ResNet-50 convolution instead and sorts its
operators' own time into a budget per layer: INT8 GEMMs, the gradient statistics (clip
solving), quantization, layout and scaling passes, and the rest (dispatch, Python). Beside it,
FP32's fwd+bwd time and the speed-up DAQ would have if only its GEMMs were left (the bound of
this design with these GEMM kernels)::

    python tools/benchmarks/profile_daq_layer.py --resnet50 --json budget.json
"""
import argparse
import json
import os.path as osp
import statistics
import sys
from collections import defaultdict

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.autograd import DeviceType  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from mmdaq.analysis.benchmark import median_time, prepare, resnet50_conv_shapes  # noqa: E402
from mmdaq.analysis.op_trace import OpTrace  # noqa: E402
from mmdaq.ops.int8_matmul import cpu_isa  # noqa: E402

#: Budget categories, by operator name (first match wins); what matches none is 'other'.
#: ``aten::mm`` is the INT8 GEMM on a CPU without VNNI/AMX (float32 GEMMs on the codes,
#: int8_matmul's float_exact backend). ``mmdaq::daq_grad_codes`` (DAQ's whole G_Y pass: the
#: statistics and both copies) counts as statistics.
CATEGORIES = (
    ('int8 GEMM', ('aten::_int_mm', 'qconv', 'aten::mm')),
    ('statistics', ('mmdaq::grad_channel_stats', 'mmdaq::daq_grad_codes')),
    ('quantization', ('mmdaq::quantize_int8', 'mmdaq::quantize_per_tensor_int8',
                      'mmdaq::clip_to_scale', 'aten::aminmax', 'aten::amax', 'aten::abs',
                      'aten::max', 'aten::isfinite')),
    ('layout, scaling', ('mmdaq::int32_to_channels_first', 'mmdaq::int8_channels_last',
                         'mmdaq::int8_im2col', 'mmdaq::int32_to_weight', 'aten::copy_',
                         'aten::mul', 'aten::add', 'aten::clone', 'aten::fill_', 'aten::zero',
                         'aten::flip', 'aten::constant_pad_nd', 'aten::sum', 'aten::cat',
                         'aten::index')),
)


def category(name: str) -> str:
    for label, patterns in CATEGORIES:
        if any(p in name for p in patterns):
            return label
    return 'other'


def layer_budget(conv: nn.Module, x: torch.Tensor, reps: int) -> dict:
    """Seconds per DAQ fwd+bwd by category (operators' own CPU time; 'other': the operators of
    no category, e.g. the autograd and custom-op wrappers with the Python they run), DAQ's and
    FP32's fwd+bwd median (unprofiled)."""
    times, steps = {}, {}
    for precision in ('fp32', 'daq'):
        module = prepare(conv, precision)
        grad = torch.randn_like(module(x))
        steps[precision] = lambda module=module, grad=grad: module(x).backward(grad)
        times[precision] = median_time(steps[precision], x.device, reps, 2)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(reps):
            steps['daq']()
    budget = defaultdict(float)
    for event in prof.key_averages():
        budget[category(event.key)] += event.self_cpu_time_total / 1e6 / reps
    total = sum(budget.values())
    return dict(budget=dict(budget), profiled_s=total, daq_s=times['daq'], fp32_s=times['fp32'])


def resnet50_budget(args) -> None:
    shapes = resnet50_conv_shapes(args.batch or 8, 224)
    labels = [c for c, _ in CATEGORIES] + ['other']
    print(f'DAQ time budget per ResNet-50 convolution (fwd+bwd, batch {args.batch or 8}), '
          f'{torch.get_num_threads()} threads, ISA {cpu_isa()}, torch '
          f'{torch.__version__}; shares of the operators\' own CPU time under the profiler')
    print(f'{"conv":40s} {"fp32 ms":>8s} {"daq ms":>8s} {"x":>6s} '
          + ' '.join(f'{c[:12]:>12s}' for c in labels) + f' {"GEMM-only x":>11s}')
    rows = []
    for shape, count in shapes:
        torch.manual_seed(0)
        x = torch.randn(shape.input_shape, requires_grad=True)
        r = layer_budget(shape.build(), x, args.reps)
        shares = {c: r['budget'].get(c, 0.0) / r['profiled_s'] for c in labels}
        gemm_bound = r['fp32_s'] / (r['daq_s'] * shares['int8 GEMM'])
        rows.append(dict(conv=shape.label(), count=count, shares=shares, gemm_only_x=gemm_bound,
                         **r))
        print(f'{shape.label():40s} {r["fp32_s"] * 1e3:8.2f} {r["daq_s"] * 1e3:8.2f} '
              f'{r["fp32_s"] / r["daq_s"]:6.2f} '
              + ' '.join(f'{100 * shares[c]:11.1f}%' for c in labels) + f' {gemm_bound:11.2f}')
    med = {c: statistics.median(r['shares'][c] for r in rows) for c in labels}
    print('median share: ' + ', '.join(f'{c} {100 * med[c]:.1f}%' for c in labels))
    print(f'median fwd+bwd speed-up over FP32: '
          f'{statistics.median(r["fp32_s"] / r["daq_s"] for r in rows):.2f}x; with only the '
          f'GEMMs left: {statistics.median(r["gemm_only_x"] for r in rows):.2f}x')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(threads=torch.get_num_threads(), isa=cpu_isa(),
                           torch=torch.__version__, command=' '.join(sys.argv), rows=rows), f,
                      indent=1)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--batch', type=int, default=None, help='default 64 on CUDA, 8 on CPU')
    parser.add_argument('--channels', type=int, default=64)
    parser.add_argument('--out-channels', type=int, default=64)
    parser.add_argument('--size', type=int, default=56)
    parser.add_argument('--kernel', type=int, default=3)
    parser.add_argument('--stride', type=int, default=1)
    parser.add_argument('--rows', type=int, default=18, help='operators listed per table')
    parser.add_argument('--resnet50', action='store_true',
                        help='time budget of DAQ on every distinct ResNet-50 conv (CPU)')
    parser.add_argument('--reps', type=int, default=5)
    parser.add_argument('--json', help='with --resnet50: also write the rows here')
    args = parser.parse_args(argv)
    if args.resnet50:
        resnet50_budget(args)
        return
    device = torch.device(args.device)
    batch = args.batch or (64 if device.type == 'cuda' else 8)
    if device.type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    conv = nn.Conv2d(args.channels, args.out_channels, args.kernel, args.stride,
                     args.kernel // 2, bias=False).to(device)
    x = torch.randn(batch, args.channels, args.size, args.size, device=device,
                    requires_grad=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda'
                                           else [])
    sort = 'cuda_time_total' if device.type == 'cuda' else 'cpu_time_total'
    for precision in ('fp32', 'daq'):
        module = prepare(conv, precision)
        grad = torch.randn_like(module(x))
        for _ in range(3):  # warm-up: kernels loaded, clip state initialised
            module(x).backward(grad)
        if device.type == 'cuda':
            torch.cuda.synchronize()
        with profile(activities=activities) as prof:
            for _ in range(5):
                module(x).backward(grad)
            if device.type == 'cuda':
                torch.cuda.synchronize()
        print(f'== {precision}: conv {args.channels}->{args.out_channels} k{args.kernel} '
              f's{args.stride} on {batch}x{args.channels}x{args.size}x{args.size}, {device} '
              f'({torch.cuda.get_device_name() if device.type == "cuda" else "cpu"}), '
              f'5 x (forward + backward)')
        print(prof.key_averages().table(sort_by=sort, row_limit=args.rows,
                                        max_name_column_width=60))
        if device.type == 'cuda':  # the launch budget of the fused chain: 10 per conv
            gpu = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
            print(f'{precision}: {len(gpu) / 5:.1f} CUDA kernels (and copies) per forward + '
                  f'backward')
        else:  # the CPU proxy of launches: ops dispatched to a kernel, views excluded
            with OpTrace() as trace:
                module(x).backward(grad)
            print(f'{precision}: {len(trace.kernels())} kernel ops dispatched per forward + '
                  f'backward ({len(trace.syncs())} host syncs): {trace.counts()}')


if __name__ == '__main__':
    main()
