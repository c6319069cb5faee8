"""Training curves (loss, metrics) of several mmengine runs on one figure.

Reads ``<work_dir>/<timestamp>/vis_data/scalars.json`` of each run (all timestamps of a
resumed run), labels runs by their work_dir name without a trailing ``seed<k>`` (or by
--labels), and draws one panel per key. Runs sharing a label are drawn as their mean with a
band (--band std: +- one std; minmax: min to max). Prints the last value of every curve.
A key is a logged name (``loss``, ``coco/bbox_mAP``) or its part after the last ``/``
(``bbox_mAP``, ``top1``). Examples::

    python tools/analysis/plot_curves.py work_dirs/demo/detection_fp32 \
        work_dirs/demo/detection_daq --keys loss bbox_mAP --out curves.png
    python tools/analysis/plot_curves.py work_dirs/tsn_fp32_seed{0,1,2} \
        work_dirs/tsn_daq_seed{0,1,2} --keys loss top1 --band minmax
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmdaq.analysis.curves import SPREADS, curve_bands, group_runs, plot_bands  # noqa: E402

DEFAULT_KEYS = ('loss', 'bbox_mAP', 'top1')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('work_dirs', nargs='+', metavar='WORK_DIR',
                        help='run folders (or <timestamp> folders, or scalars.json files)')
    parser.add_argument('--keys', nargs='+',
                        help=f'scalars to draw (default: those of {list(DEFAULT_KEYS)} logged)')
    parser.add_argument('--labels', nargs='+', help='one label per WORK_DIR (equal labels '
                        'are averaged); default: the folder name without a seed suffix')
    parser.add_argument('--band', default='std', choices=SPREADS,
                        help='spread drawn for a label with several runs')
    parser.add_argument('--smooth', type=int, default=1,
                        help='moving-average window in logged points (applied to each run)')
    parser.add_argument('--title', help='figure title')
    parser.add_argument('--out', default='curves.png', help='image file to write')
    args = parser.parse_args(argv)
    if args.smooth < 1:
        parser.error(f'--smooth must be >= 1, but got {args.smooth}')
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    groups = group_runs(args.work_dirs, args.labels)
    keys = args.keys or DEFAULT_KEYS
    bands = curve_bands(groups, keys, args.band, args.smooth, strict=args.keys is not None)
    if not bands:
        raise ValueError(f'the runs must log one of {list(DEFAULT_KEYS)} for the default '
                         f'--keys, but none does; name the keys with --keys')
    if osp.dirname(args.out):
        os.makedirs(osp.dirname(args.out), exist_ok=True)
    plot_bands(bands, args.out, args.title)
    print(f'{"key":<20}{"label":<28}{"runs":>5}{"x":>10}{"last mean":>14}{"spread":>12}')
    for key, per_label in bands.items():
        for label, (b, name, _) in per_label.items():
            spread = (b.high[-1] - b.low[-1]) / 2 if b.runs > 1 else 0.0
            print(f'{name:<20}{label:<28}{b.runs:>5}{b.x[-1]:>10g}{b.mean[-1]:>14.4g}'
                  f'{spread:>12.3g}')
    print(f'plot_curves: {args.out}')
    return bands


if __name__ == '__main__':
    main()
