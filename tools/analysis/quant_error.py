"""Gradient quantization error of real conv/linear layers, per method, against FP32.

Builds the stock models (fresh weights, no downloads), trains them in FP32 for a
few iterations on synthetic batches (a new one each iteration), captures every
layer's input X and output gradient G_Y, and runs each method's INT8 layer on the
side (its clip state carried across iterations as in training). Prints, per model
and method, the median over layers of: the magnitude-weighted error of the G_W
copy of G_Y (relative to per-channel abs-max; also its mean and the share of
layers below 1), the relative MSE and cosine similarity of G_W and G_X, and DAQ's
share of bell-shaped channels. Example::

    python tools/analysis/quant_error.py                      # the three default models
    python tools/analysis/quant_error.py --models faster_rcnn --iters 6 --json out.json
"""
import argparse
import json
import os.path as osp
import statistics
import sys
import time
from typing import Dict, List

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402

from mmdaq.analysis import GradientCapture, layer_gradient_errors  # noqa: E402
from mmdaq.engine.stock_models import (build_stock_model, demo_batch,  # noqa: E402
                                       load_stock_config, training_loss)
from mmdaq.quantization.schemes import build_scheme  # noqa: E402

MODELS = {
    'faster_rcnn': ('mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', dict(size=256)),
    'tsn': ('mmaction::recognition/tsn/tsn_imagenet-pretrained-r50_8xb32-1x1x3-100e_'
            'kinetics400-rgb.py', dict(size=112, num_frames=3)),
    'i3d': ('mmaction::recognition/i3d/i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e_'
            'kinetics400-rgb.py', dict(size=64, num_frames=8)),
}
METRICS = ('mwe', 'gw_rel_mse', 'gw_cos', 'gx_rel_mse', 'gx_cos', 'share_gaussian')


def parse_method(spec: str):
    """'daq' or 'daq:cap_at_abs_max=True,a=0.5' -> (label, name, options)."""
    name, _, opts = spec.partition(':')
    options = {}
    for item in filter(None, opts.split(',')):
        key, _, value = item.partition('=')
        options[key] = json.loads(value.lower()) if value.lower() in ('true', 'false') \
            else json.loads(value)
    build_scheme(name, **options)  # fail early on a bad spec
    return spec, name, options


def analyse(model_key: str, methods, iters: int, lr: float, alpha: float, seed: int,
            batch: int = 2) -> Dict:
    config, batch_kw = MODELS[model_key]
    torch.manual_seed(seed)
    model, task = build_stock_model(load_stock_config(config))
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    schemes: Dict[str, Dict] = {}
    per_layer: Dict[str, Dict[str, List[dict]]] = {}
    for it in range(iters):
        t0 = time.time()
        data = demo_batch(model, task, batch_size=batch, seed=seed + it, **batch_kw)  # a new batch
        with GradientCapture(model) as capture:
            loss = training_loss(model, data)
            optimizer.zero_grad()
            loss.backward()
        for name, rec in capture.complete().items():
            layer_schemes = schemes.setdefault(
                name, {label: build_scheme(m, **o) for label, m, o in methods})
            for slot, call in enumerate(rec.calls):
                result = layer_gradient_errors(rec.module, call.x, call.g_y, layer_schemes,
                                               alpha, slot)
                if it > 0:  # iteration 0 has no clip history: DAQ equals per-channel there
                    for label, metrics in result.items():
                        per_layer.setdefault(name, {}).setdefault(label, []).append(metrics)
        optimizer.step()
        print(f'[{model_key}] iter {it + 1}/{iters}: loss {float(loss):.4f}, '
              f'{len(capture.complete())} layers, {time.time() - t0:.1f}s', flush=True)
    summary = {}
    for label, _, _ in methods:
        layer_means = [{k: statistics.fmean(m[k] for m in runs[label]) for k in METRICS}
                       for runs in per_layer.values()]
        summary[label] = {k: statistics.median(v[k] for v in layer_means) for k in METRICS}
        summary[label]['layers'] = len(layer_means)
        # MWE rel is 1 for per-channel abs-max by definition: the share of layers a method
        # beats it on (by more than 0.1 %, not rounding noise) and its mean over layers.
        summary[label]['mwe_wins'] = statistics.fmean(v['mwe'] < 0.999 for v in layer_means) \
            if summary[label]['mwe'] == summary[label]['mwe'] else float('nan')  # NaN: no clip
        summary[label]['mwe_mean'] = statistics.fmean(v['mwe'] for v in layer_means)
    return summary


def print_table(model_key: str, summary: Dict) -> None:
    print(f'\n{model_key}: median over layers (iterations 2..N)')
    print(f'{"method":<34}{"MWE rel":>9}{"mean":>9}{"<1 %":>6}{"G_W relMSE":>12}{"G_W cos":>10}'
          f'{"G_X relMSE":>12}{"G_X cos":>10}{"gauss %":>9}')
    for label, s in summary.items():
        share = s['share_gaussian']
        gauss = '-' if share != share else f'{100 * share:.0f}'  # NaN: no classification
        if s['mwe'] == s['mwe']:
            mwe = f'{s["mwe"]:>9.3f}{s["mwe_mean"]:>9.4g}{100 * s["mwe_wins"]:>6.0f}'
        else:  # a scheme without a per-channel clip of G_Y (ShiftQuant)
            mwe = f'{"-":>9}{"-":>9}{"-":>6}'
        print(f'{label:<34}{mwe}'
              f'{s["gw_rel_mse"]:>12.3e}{s["gw_cos"]:>10.6f}'
              f'{s["gx_rel_mse"]:>12.3e}{s["gx_cos"]:>10.6f}{gauss:>9}')


def main(argv=None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', nargs='+', default=list(MODELS), choices=list(MODELS))
    parser.add_argument('--methods', nargs='+',
                        default=['per_tensor', 'per_channel', 'daq', 'daq:long_tail_rule="ema"'],
                        help="method specs, e.g. daq 'daq:cap_at_abs_max=true'")
    parser.add_argument('--iters', type=int, default=4)
    parser.add_argument('--lr', type=float, default=0.002)
    parser.add_argument('--alpha', type=float, default=3.0,
                        help='magnitude weight exponent of the MCS objective (DAQ default: 3)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--batch', type=int, default=2, help='samples per iteration')
    parser.add_argument('--json', help='also write the summary to this file')
    args = parser.parse_args(argv)
    if args.iters < 2:
        parser.error(f'--iters must be >= 2, but got {args.iters}')
    methods = [parse_method(m) for m in args.methods]
    print(f'quant_error: torch {torch.__version__}, {torch.get_num_threads()} threads, '
          f'alpha={args.alpha}, iters={args.iters}, lr={args.lr}, seed={args.seed}, '
          f'batch={args.batch}')
    results = {}
    for key in args.models:
        results[key] = analyse(key, methods, args.iters, args.lr, args.alpha, args.seed,
                               args.batch)
        print_table(key, results[key])
    print('\ncommand: python tools/analysis/quant_error.py ' + ' '.join(sys.argv[1:]))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == '__main__':
    main()
