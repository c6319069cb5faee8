"""Print which share of each stock model's Conv/Linear layers DAQHook turns INT8.

    python tools/analysis/conversion_coverage.py [--models faster_rcnn tsn ...]
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmdaq.engine.coverage import COVERAGE_MODELS, conversion_coverage  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', nargs='+', default=list(COVERAGE_MODELS),
                        choices=list(COVERAGE_MODELS))
    args = parser.parse_args(argv)
    results = {key: conversion_coverage(key) for key in args.models}
    print('| model | Conv/Linear | INT8 | share | FP32 layers (why) | 1 step finite |')
    print('|---|---|---|---|---|---|')
    for key, r in results.items():
        fp32 = ', '.join(f'{n}' for n in r['skipped'])
        print(f'| {key} | {r["layers"]} | {r["int8"]} | {100 * r["share"]:.0f}% | {fp32} | '
              f'{r["finite"]} |')
    return results


if __name__ == '__main__':
    main()
