"""Gradient distributions of a model's layers as DAQ sees them: PNG figures and a JSON summary.

Builds the model of an mmdet or mmaction2 training config (fresh weights, or --checkpoint),
runs --iters forward/backward passes on batches of the config's own training data (no
optimizer step, the model is not changed: hooks only), and for every analysed Conv/Linear
layer classifies the output channels of G_Y (bell-shaped vs inverted-T) and computes DAQ's
per-channel clips. Writes to --out::

    summary.json                                 per layer: share of Gaussian channels, clip ratio
    overview.png                                 the same, as bars over the layers
    <layer>_samples_vs_channels.png              G_Y per sample vs per channel
    <layer>_channel_types.png                    channel histograms by class, clips drawn
    <layer>_clip_objective.png                   error vs clip, DAQ's choice marked

Figures are drawn for --plot layers spread over the analysed ones. Examples::

    python tools/analysis/grad_dist.py configs/demo/faster_rcnn_r50_fpn_synthetic_shapes.py \
        --iters 2 --batch 2 --out work_dirs/grad_dist/faster_rcnn
    python tools/analysis/grad_dist.py configs/demo/tsn_r18_synthetic_clips.py \
        --checkpoint work_dirs/tsn/epoch_12.pth --layers 'layer[34]' --plot 3
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402

from mmdaq.analysis.grad_dist import analyse_gradients, summarise  # noqa: E402
from mmdaq.analysis.grad_plots import plot_overview, render_figures  # noqa: E402
from mmdaq.engine.stock_models import (build_stock_model, config_batches,  # noqa: E402
                                       load_stock_config, load_weights, training_loss)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='mmdet or mmaction2 training config (file or pkg::path)')
    parser.add_argument('--checkpoint', help='weights to load (default: fresh initialisation)')
    parser.add_argument('--layers', help='regex (re.search) of layer names (default: all '
                        'Conv/Linear layers)')
    parser.add_argument('--iters', type=int, default=2, help='batches (forward/backward passes)')
    parser.add_argument('--batch', type=int, default=2, help='samples per batch')
    parser.add_argument('--plot', type=int, default=4,
                        help='layers drawn, spread over the analysed ones (-1: all, 0: none)')
    parser.add_argument('--out', default='work_dirs/grad_dist', help='output directory')
    parser.add_argument('--alpha', type=float, default=3.0,
                        help='magnitude weight exponent of the clip objective (DAQ default: 3)')
    parser.add_argument('--threshold', type=float, default=0.3,
                        help='lambda of the Gaussian / inverted-T test (paper: 0.3)')
    parser.add_argument('--rule', default='objective', choices=('objective', 'ema'),
                        help="DAQ's long-tail rule (default: the project's, 'objective')")
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    for name in ('iters', 'batch'):
        if getattr(args, name) < 1:
            parser.error(f'--{name} must be >= 1, but got {getattr(args, name)}')
    if args.plot < -1:
        parser.error(f'--plot must be >= -1, but got {args.plot}')
    if args.checkpoint and not osp.isfile(args.checkpoint):
        parser.error(f'--checkpoint must be an existing file, but got {args.checkpoint!r}')
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    t0 = time.time()
    torch.manual_seed(args.seed)
    cfg = load_stock_config(args.config)
    model, task = build_stock_model(cfg)
    if args.checkpoint:
        load_weights(model, args.checkpoint)
    model.train()
    batches = config_batches(cfg, model, args.batch, args.iters, args.seed)
    layers = analyse_gradients(model, batches, training_loss, pattern=args.layers,
                               keep=args.plot, threshold=args.threshold, alpha=args.alpha,
                               long_tail_rule=args.rule)
    os.makedirs(args.out, exist_ok=True)
    per_layer = summarise(layers)
    figures = render_figures(layers, args.out, threshold=args.threshold, alpha=args.alpha)
    for name, paths in figures.items():
        per_layer[name]['figures'] = [osp.basename(p) for p in paths]
    overview = plot_overview(per_layer, osp.join(args.out, 'overview.png'))
    iterations = len(next(iter(layers.values())).first_choices)
    channels = sum(s['channels'] * s['calls'] for s in per_layer.values())
    summary = {
        'config': args.config, 'checkpoint': args.checkpoint, 'task': task,
        'iters': iterations, 'batch': args.batch, 'alpha': args.alpha,
        'threshold': args.threshold, 'long_tail_rule': args.rule,
        'share_gaussian': sum(s['share_gaussian'] * s['channels'] * s['calls']
                              for s in per_layer.values()) / channels,
        'overview': osp.basename(overview),
        'layers': per_layer,
    }
    with open(osp.join(args.out, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    print(f'grad_dist: {len(per_layer)} layers, {iterations} iterations of {args.batch} '
          f'samples; {100 * summary["share_gaussian"]:.1f}% of channels Gaussian; '
          f'{sum(map(len, figures.values())) + 1} figures and summary.json in {args.out} '
          f'({time.time() - t0:.1f}s)')
    return summary


if __name__ == '__main__':
    main()
