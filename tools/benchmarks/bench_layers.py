"""FP32 vs BF16 (autocast) vs DAQ INT8, side by side in one run: conv layers and training steps.

Layer mode (default): every distinct convolution of ResNet-50 (mmdet's backbone) at the given
batch and image size; forward, backward and forward+backward time of each precision and the
bytes saved for backward. End-to-end mode (``--e2e``): one training iteration (forward, loss,
backward, SGD step) of stock mmdet / mmaction2 models on synthetic batches, DAQ converted as
``DAQHook`` does by default. Prints speed-ups relative to FP32 (>1: faster than FP32), the CPU
ISA and the INT8 GEMM backend, and writes JSON with ``--json``::

    python tools/benchmarks/bench_layers.py                      # ResNet-50 convs, batch 8, 224 px
    python tools/benchmarks/bench_layers.py --limit 4 --size 112 # a quick look
    python tools/benchmarks/bench_layers.py --e2e faster_rcnn tsn i3d
"""
import argparse
import contextlib
import json
import os.path as osp
import platform
import statistics
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402

from mmdaq.analysis import torchvision_models  # noqa: E402
from mmdaq.analysis.benchmark import (code_version, prepare, resnet50_conv_shapes,  # noqa: E402
                                      saved_activation_bytes, time_layer, time_train_step)
from mmdaq.ops.conv_autotune import (MODES, autotune_choices, cpu_conv_kernel,  # noqa: E402
                                     reset_autotune)
from mmdaq.ops.int8_matmul import cpu_isa, cpu_model_name, resolve_backend  # noqa: E402

E2E_MODELS = {
    'faster_rcnn': ('mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', dict(size=320)),
    'tsn': ('mmaction::recognition/tsn/tsn_imagenet-pretrained-r50_8xb32-1x1x3-100e_'
            'kinetics400-rgb.py', dict(size=112, num_frames=3)),
    'i3d': ('mmaction::recognition/i3d/i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e_'
            'kinetics400-rgb.py', dict(size=64, num_frames=8)),
}


def device_description(device: torch.device) -> str:
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    model = cpu_model_name() or platform.processor() or 'cpu'
    return f'{model}, {torch.get_num_threads()} threads, ISA {cpu_isa()}'


def variants(args) -> list:
    """(label, precision, CPU conv kernel) of each timed column: FP32, BF16, DAQ per kernel."""
    out = [('fp32', 'fp32', None), ('bf16', 'bf16', None)]
    if len(args.daq_kernels) == 1:
        return out + [('daq', 'daq', args.daq_kernels[0])]
    return out + [(f'daq[{k}]', 'daq', k) for k in args.daq_kernels]


def _kernel_context(kernel):
    return cpu_conv_kernel(kernel) if kernel else contextlib.nullcontext()


def _chosen_kernels() -> str:
    """The kernels the measured choice took for the shapes timed since the last reset."""
    return '+'.join(name for name, _ in autotune_choices().values()) or '-'


def bench_layers(args, device: torch.device) -> list:
    shapes = resnet50_conv_shapes(args.batch, args.size)[:args.limit or None]
    columns = variants(args)
    daq_labels = [label for label, precision, _ in columns if precision == 'daq']
    rows = []
    header = f'{"conv (input -> out)":<40}{"n":>3}{"fp32 ms":>10}{"bf16 x":>8}'
    for label in daq_labels:
        header += f'{label + " x":>12}{"fwd x":>7}{"bwd x":>7}'
    print(header + f'{"saved fp32/daq":>16}  auto chose (fwd+G_X)', flush=True)
    for shape, count in shapes:
        torch.manual_seed(0)
        base = shape.build().to(device)
        x = torch.randn(shape.input_shape, device=device)
        row = dict(shape=shape._asdict(), count=count, label=shape.label())
        modules = {label: prepare(base, precision) for label, precision, _ in columns}
        inputs = {label: x for label, _, _ in columns}
        if args.channels_last:  # the float baselines in the layout cuDNN / oneDNN prefer
            for label, precision, _ in columns:
                if precision != 'daq' and x.dim() in (4, 5):
                    layout = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
                    modules[label] = modules[label].to(memory_format=layout)
                    inputs[label] = x.contiguous(memory_format=layout)
        reset_autotune()
        # Repetitions interleaved over the columns, so that a busy machine slows all alike.
        samples = {label: [] for label, _, _ in columns}
        for rep in range(args.reps):
            for label, precision, kernel in columns:
                with _kernel_context(kernel):
                    samples[label].append(time_layer(modules[label], inputs[label], precision,
                                                     reps=1,
                                                     warmup=args.warmup if rep == 0 else 0))
        row['auto_chose'] = _chosen_kernels()
        for label, precision, kernel in columns:
            row[label] = {k: statistics.median(t[k] for t in samples[label])
                          for k in ('fwd', 'bwd', 'fwd_bwd')}
            with _kernel_context(kernel):
                row[label]['saved_bytes'] = saved_activation_bytes(modules[label], inputs[label],
                                                                   precision)
        fp32 = row['fp32']
        row['speedup'] = {p: {k: fp32[k] / row[p][k] if row[p][k] > 0 else float('nan')
                              for k in ('fwd', 'bwd', 'fwd_bwd')} for p in ['bf16'] + daq_labels}
        mem = fp32['saved_bytes'] / max(row[daq_labels[0]]['saved_bytes'], 1)
        line = (f'{shape.label():<40}{count:>3}{1e3 * fp32["fwd_bwd"]:>10.2f}'
                f'{row["speedup"]["bf16"]["fwd_bwd"]:>8.2f}')
        for label in daq_labels:
            speed = row['speedup'][label]
            line += f'{speed["fwd_bwd"]:>12.2f}{speed["fwd"]:>7.2f}{speed["bwd"]:>7.2f}'
        print(line + f'{mem:>16.2f}  {row["auto_chose"]}', flush=True)
        rows.append(row)
    for p in ['bf16'] + daq_labels:
        med = statistics.median(r['speedup'][p]['fwd_bwd'] for r in rows)
        total = sum(r['fp32']['fwd_bwd'] * r['count'] for r in rows) / \
            sum(r[p]['fwd_bwd'] * r['count'] for r in rows)
        print(f'{p}: median fwd+bwd speed-up over FP32 {med:.2f}x; whole network (each shape '
              f'times its count) {total:.2f}x')
    return rows


def _openmmlab_step(key: str, precision: str, args, device: torch.device):
    from mmdaq.engine.hooks import DAQHook
    from mmdaq.engine.stock_models import (build_stock_model, demo_batch, load_stock_config,
                                           training_loss)
    config, batch_kw = E2E_MODELS[key]
    torch.manual_seed(0)
    model, task = build_stock_model(load_stock_config(config))
    model.to(device).train()
    if precision == 'daq':
        DAQHook().convert(model)
    data = demo_batch(model, task, batch_size=args.e2e_batch, seed=0, **batch_kw)
    return model, lambda m: training_loss(m, data)


def _torchvision_step(key: str, precision: str, args, device: torch.device):
    model, loss_fn = torchvision_models.build_torchvision_step(key, args.e2e_batch, device)
    if precision == 'daq':
        torchvision_models.convert_like_daq_hook(model, key)
    return model, loss_fn


def bench_e2e(args, device: torch.device) -> dict:
    results = {}
    columns = variants(args)
    for key in args.e2e:
        from_torchvision = key in torchvision_models.TORCHVISION_MODELS
        build = _torchvision_step if from_torchvision else _openmmlab_step
        steps, errors = {}, {}
        for label, precision, _ in columns:
            try:
                steps[label] = build(key, precision, args, device)
            except (RuntimeError, TypeError, ValueError) as e:
                errors[label] = f'{type(e).__name__}: {str(e).splitlines()[0]}'
        reset_autotune()
        # Repetitions interleaved over the columns, so that a busy machine slows all alike.
        samples = {label: [] for label in steps}
        for rep in range(args.e2e_reps):
            for label, precision, kernel in columns:
                if label not in steps or label in errors:
                    continue
                model, loss_fn = steps[label]
                try:
                    with _kernel_context(kernel):
                        samples[label].append(time_train_step(model, loss_fn, precision, device,
                                                              1, 1 if rep == 0 else 0))
                except (RuntimeError, TypeError, ValueError) as e:  # e.g. no BF16 kernel here
                    errors[label] = f'{type(e).__name__}: {str(e).splitlines()[0]}'
        del steps
        times = {label: statistics.median(samples[label]) if label not in errors and
                 samples.get(label) else float('nan') for label, _, _ in columns}
        results[key] = dict(times, errors=errors, auto_chose=_chosen_kernels(),
                            speedup={label: times['fp32'] / times[label]
                                     for label, _, _ in columns[1:]})
        cells = [f'FP32 {times["fp32"]:.3f}s']
        for label, _, _ in columns[1:]:
            speed = results[key]['speedup'][label]
            cell = (f'failed ({errors[label]})' if label in errors else
                    f'{times[label]:.3f}s ({speed:.2f}x)')
            cells.append(f'{label.upper()} {cell}')
        print(f'{key}: iteration ' + ', '.join(cells), flush=True)
    return results


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--batch', type=int, default=None,
                        help='layer mode batch (default 8 on CPU, 64 on CUDA)')
    parser.add_argument('--size', type=int, default=224, help='ResNet-50 input size')
    parser.add_argument('--limit', type=int, default=0, help='only the first N shapes')
    parser.add_argument('--reps', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2)
    e2e_choices = list(E2E_MODELS) + list(torchvision_models.TORCHVISION_MODELS)
    parser.add_argument('--e2e', nargs='*', choices=e2e_choices,
                        help='time training iterations of these models instead of layers '
                        '(tv_*: torchvision stand-ins that need no OpenMMLab install)')
    parser.add_argument('--e2e-batch', type=int, default=None,
                        help='images / clips per iteration (default 2 on CPU, 8 on CUDA)')
    parser.add_argument('--tf32', action='store_true',
                        help='let FP32 matmuls/convs use TF32 on CUDA (off by default: FP32 is '
                        'the IEEE float32 baseline)')
    parser.add_argument('--e2e-reps', type=int, default=3)
    parser.add_argument('--channels-last', action='store_true',
                        help='run the FP32 and BF16 layers channels last (DAQ takes the same '
                        'NCHW input as before); on CUDA cudnn.benchmark is on either way')
    parser.add_argument('--daq-kernels', nargs='+', choices=MODES, default=['auto'],
                        help='CPU INT8 convolution kernels to time DAQ with, side by side '
                        '(MMDAQ_CPU_CONV; default: auto, the per-shape measured choice)')
    parser.add_argument('--json', help='also write the results here')
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.batch is None:
        args.batch = 64 if device.type == 'cuda' else 8
    if args.e2e_batch is None:
        args.e2e_batch = 8 if device.type == 'cuda' else 2
    if device.type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
        torch.backends.cudnn.benchmark = True  # the fastest cuDNN kernel per shape: fair peers
    tf32 = ''
    if device.type == 'cuda':
        from mmdaq.ops.int8_layer import USE_TRITON
        from mmdaq.ops.triton_conv import triton_available
        conv = 'Triton implicit GEMM' if USE_TRITON and triton_available() else 'im2col + GEMM'
        tf32 = (f'; TF32 {"on" if args.tf32 else "off"}; cudnn.benchmark on; 2-D INT8 conv: '
                f'{conv}')
    print(f'bench_layers: {device_description(device)}; torch {torch.__version__}; INT8 GEMM '
          f'backend {resolve_backend(device)}{tf32}; code {code_version()}; '
          f'{time.strftime("%Y-%m-%d %H:%M")}', flush=True)
    print('command: python tools/benchmarks/bench_layers.py ' + ' '.join(sys.argv[1:]), flush=True)
    result = dict(device=device_description(device), torch=torch.__version__,
                  backend=resolve_backend(device), code=code_version(), args=vars(args))
    if args.e2e:
        result['e2e'] = bench_e2e(args, device)
    else:
        result['layers'] = bench_layers(args, device)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == '__main__':
    main()
