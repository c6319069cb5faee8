"""Predict conv forward + backward times (FP32, BF16, DAQ) on H100 / H200 from bytes and launches.

For every distinct convolution of ResNet-50 (batch x 3 x size x size) it models (see
``mmdaq/analysis/roofline.py``): FP32 and BF16 autocast as cuDNN's three kernels, DAQ as the
kernels its layer really dispatches (traced on this CPU with ``OpTrace``, the GEMM path:
``MMDAQ_CPU_CONV=gemm``, closest to the generic CUDA chain, its GEMMs integer ones even on a
CPU without VNNI, where torch's reference int8 kernel makes the trace slow) and DAQ as the
fused ten-kernel Triton chain that the layer runs on CUDA (also against BF16, eager and both
replayed as CUDA graphs; and, column "bf16 act", the chain between bfloat16 layers under
autocast, X and G_Y read and Y and G_X written in two bytes). It prints per shape the predicted
ratios, then the medians, and, with ``--measured`` (a ``bench_layers.py --json`` file of a GPU
run), the measured ratios beside the predictions and how far apart they are::

    python tools/benchmarks/roofline.py --batch 64 \\
        --measured docs/benchmarks/h100_2026-11-25/bench_layers_cuda.json
    python tools/benchmarks/roofline.py --batch 8 --limit 3 --per-op   # quick, with op tables

Nothing here runs on a GPU: the figures are predictions and are printed as such.
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

import mmdaq  # noqa: E402
from mmdaq.analysis.benchmark import code_version, resnet50_conv_shapes  # noqa: E402
from mmdaq.analysis.op_trace import OpTrace  # noqa: E402
from mmdaq.analysis.roofline import (DEVICES, conv_dims, daq_fused_kernels,  # noqa: E402
                                     dense_kernels, predict, summarize_ratios, traced_kernels)
from mmdaq.ops.conv_autotune import cpu_conv_kernel  # noqa: E402
from mmdaq.ops.int8_matmul import int8_matmul_backend  # noqa: E402


def trace_daq_layer(shape, seed: int = 0) -> OpTrace:
    """The ops of one DAQ conv forward + backward (after two warm-up steps) on this CPU, its
    GEMMs as integer GEMMs (as on a GPU) whatever this CPU's int8 instructions."""
    torch.manual_seed(seed)
    conv = mmdaq.convert_model(shape.build(), method='daq')
    x = torch.randn(shape.input_shape, requires_grad=True)
    with cpu_conv_kernel('gemm'), int8_matmul_backend('int_mm'):
        for _ in range(2):
            y = conv(x)
            y.backward(torch.ones_like(y))
        y = conv(x)
        grad = torch.randn_like(y)
        with OpTrace() as trace:
            y = conv(x)
            y.backward(grad)
    return trace


def measured_ratios(path: str) -> dict:
    """label -> {'bf16': FP32 / BF16, 'daq': FP32 / DAQ, 'fp32_s': FP32 seconds} of a GPU run."""
    with open(path) as f:
        run = json.load(f)
    return {layer['label']: dict(bf16=layer['speedup']['bf16']['fwd_bwd'],
                                 daq=layer['speedup']['daq']['fwd_bwd'],
                                 fp32_s=layer['fp32']['fwd_bwd'])
            for layer in run['layers']}, run


def fit_to_measured(dev, rows, models, measured) -> dict:
    """Refit the device model to a measured run and predict the fused design with it.

    FP32's and BF16's GEMM efficiencies become the medians of (time at the datasheet peak /
    measured time); the current DAQ chain's host cost per kernel the median of measured time /
    kernels (an upper bound: the chain is host-bound when that dominates). The fused design is
    then predicted with its INT8 GEMMs at BF16's fitted share of their peak (the same tensor
    cores), with the model's own launch costs.
    """
    ideal = dev._replace(efficiency=1.0, launch_s=0.0, graph_launch_s=0.0)
    fp32_eff, bf16_eff, host = [], [], []
    for row, (dims, traced) in zip(rows, models):
        m = measured.get(row['label'])
        if not m:
            continue
        fp32_eff.append(predict(dense_kernels(dims, 'fp32'), ideal).device_s / m['fp32_s'])
        bf16_eff.append(predict(dense_kernels(dims, 'bf16'), ideal).device_s /
                        (m['fp32_s'] / m['bf16']))
        host.append(m['fp32_s'] / m['daq'] / len(traced))
    fit = dict(fp32=summarize_ratios(fp32_eff)['median'],
               bf16=summarize_ratios(bf16_eff)['median'], host_s=summarize_ratios(host)['median'])
    fitted = dev._replace(gemm_efficiency=(('fp32', fit['fp32']), ('bf16', fit['bf16']),
                                           ('int8', fit['bf16'])))
    ratios = {'eager': [], 'graph': []}
    for row, (dims, _) in zip(rows, models):
        for mode, graph in (('eager', False), ('graph', True)):
            bf16 = predict(dense_kernels(dims, 'bf16'), fitted, graph=graph).seconds
            ratios[mode].append(bf16 / predict(daq_fused_kernels(dims), fitted,
                                               graph=graph).seconds)
    print(f'fitted to the measured run: FP32 GEMMs at {100 * fit["fp32"]:.0f}% of peak, BF16 at '
          f'{100 * fit["bf16"]:.0f}%; the current DAQ chain spends up to {1e6 * fit["host_s"]:.0f}'
          f' us per kernel. With INT8 at BF16\'s share of its peak, the fused design is predicted '
          f'{summarize_ratios(ratios["eager"])["median"]:.2f}x BF16 (median, eager) and '
          f'{summarize_ratios(ratios["graph"])["median"]:.2f}x (CUDA graphs)')
    return fit


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--devices', nargs='+', default=sorted(DEVICES), choices=sorted(DEVICES))
    parser.add_argument('--limit', type=int, default=0, help='only the first N shapes')
    parser.add_argument('--measured', help='bench_layers.py --json of a GPU run to compare with')
    parser.add_argument('--per-op', action='store_true', help='print the traced DAQ kernels')
    parser.add_argument('--json', help='write the predictions here')
    args = parser.parse_args(argv)
    shapes = resnet50_conv_shapes(args.batch, args.size)
    if args.limit:
        shapes = shapes[:args.limit]
    measured, run = measured_ratios(args.measured) if args.measured else ({}, None)
    print(f'roofline: predictions for {", ".join(DEVICES[d].name for d in args.devices)}; '
          f'DAQ traced on this CPU ({torch.backends.cpu.get_cpu_capability()}, '
          f'torch {torch.__version__}); commit {code_version()}; {time.strftime("%Y-%m-%d %H:%M")}')
    arguments = ' '.join(sys.argv[1:] if argv is None else argv)
    print(f'command: python tools/benchmarks/roofline.py {arguments}')
    if run:
        print(f'measured: {args.measured} ({run["device"]}, torch {run["torch"]})')
    rows, models = [], []  # models: (dims, traced kernels) per row, for the fit
    for shape, count in shapes:
        s, label = shape, shape.label()
        dims = conv_dims(s.input_shape, s.out_channels, s.kernel, s.stride, s.padding,
                         s.dilation, s.groups)
        trace = trace_daq_layer(s)
        traced = traced_kernels(trace.records)
        models.append((dims, traced))
        row = dict(label=label, count=count, traced_launches=len(traced),
                   traced_syncs=len(trace.syncs()), devices={})
        for key in args.devices:
            dev = DEVICES[key]
            fp32 = predict(dense_kernels(dims, 'fp32'), dev)
            bf16 = predict(dense_kernels(dims, 'bf16'), dev)
            bf16_graph = predict(dense_kernels(dims, 'bf16'), dev, graph=True)
            fused = predict(daq_fused_kernels(dims), dev)
            fused_graph = predict(daq_fused_kernels(dims), dev, graph=True)
            fused_bf16 = predict(daq_fused_kernels(dims, act_bytes=2), dev)
            row['devices'][key] = dict(
                fp32_s=fp32.seconds, bf16=fp32.seconds / bf16.seconds,
                daq_traced=fp32.seconds / predict(traced, dev).seconds,
                daq_fused=fp32.seconds / fused.seconds,
                daq_fused_vs_bf16=bf16.seconds / fused.seconds,
                daq_fused_vs_bf16_graph=bf16_graph.seconds / fused_graph.seconds,
                daq_fused_bf16_act_vs_bf16=bf16.seconds / fused_bf16.seconds)
        rows.append(row)
        if args.per_op:
            print(f'\n{label}: {len(traced)} kernels traced')
            for k in traced:
                print(f'  {k.name:<36} {k.nbytes / 1e6:9.2f} MB {k.flops / 1e9:9.2f} GFLOP')
    for key in args.devices:
        print(f'\n{DEVICES[key].name} (predicted; ratios = FP32 time / other time; traced: the '
              'kernels DAQ dispatches now, eager)')
        header = (f'{"conv":<34}{"fp32 ms":>9}{"bf16 x":>8}{"daq now x":>10}{"fused x":>9}'
                  f'{"/bf16":>7}{"/bf16 graph":>12}{"bf16 act":>9}{"launches":>9}')
        if measured:
            header += f'{"meas bf16":>10}{"meas daq":>10}'
        print(header)
        for row in rows:
            p = row['devices'][key]
            line = (f'{row["label"]:<34}{p["fp32_s"] * 1e3:>9.2f}{p["bf16"]:>8.2f}'
                    f'{p["daq_traced"]:>10.2f}{p["daq_fused"]:>9.2f}'
                    f'{p["daq_fused_vs_bf16"]:>7.2f}{p["daq_fused_vs_bf16_graph"]:>12.2f}'
                    f'{p["daq_fused_bf16_act_vs_bf16"]:>9.2f}{row["traced_launches"]:>9d}')
            m = measured.get(row['label'])
            if m:
                line += f'{m["bf16"]:>10.2f}{m["daq"]:>10.2f}'
            print(line)
        summary = {k: summarize_ratios([r['devices'][key][k] for r in rows])['median']
                   for k in ('bf16', 'daq_traced', 'daq_fused', 'daq_fused_vs_bf16',
                             'daq_fused_vs_bf16_graph', 'daq_fused_bf16_act_vs_bf16')}
        print('medians: ' + ', '.join(f'{k} {v:.2f}x' for k, v in summary.items()))
        matched = [(r, measured[r['label']]) for r in rows if r['label'] in measured]
        if matched:
            for what, pkey in (('bf16', 'bf16'), ('daq', 'daq_traced')):
                errors = [r['devices'][key][pkey] / m[what] for r, m in matched]
                s = summarize_ratios(errors)
                print(f'predicted / measured {what} ratio over {len(matched)} shapes: median '
                      f'{s["median"]:.2f}, geometric mean {s["geomean"]:.2f}')
            errors = [r['devices'][key]['fp32_s'] / m['fp32_s'] for r, m in matched]
            s = summarize_ratios(errors)
            print(f'predicted / measured FP32 time: median {s["median"]:.2f}, geometric mean '
                  f'{s["geomean"]:.2f}')
            if key.upper() in run['device'].upper():  # fit only the card that was measured
                fit_to_measured(DEVICES[key], rows, models, measured)
    launches = sorted(r['traced_launches'] for r in rows)
    print(f'\ntraced DAQ kernels per conv fwd+bwd: {launches[0]}-{launches[-1]} '
          f'(median {launches[len(launches) // 2]}); fused design: '
          f'{len(daq_fused_kernels(conv_dims((1, 1, 1, 1), 1, (1, 1), (1, 1), (0, 0), (1, 1))))};'
          f' host syncs traced: {sum(r["traced_syncs"] for r in rows)}')
    if args.json:
        os.makedirs(osp.dirname(osp.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(dict(args=vars(args), commit=code_version(), rows=rows), f, indent=1)
    return dict(rows=rows)


if __name__ == '__main__':
    main()
