"""Train the synthetic demo with several methods and seeds; print mean and spread per method.

Each (method, seed) is one ``tools/train.py`` run of the method's demo config with
``randomness.seed=K`` into ``WORK_DIR/<task>/<method>_seed<K>``; a run whose work dir already
holds the final metric is not trained again (``--retrain`` forces it). Prints a table (final
metric mean, sample std, min-max, wall time) and writes it as JSON and Markdown::

    python tools/analysis/compare_methods.py video --methods fp32 daq per_tensor --seeds 0 1 2
    python tools/analysis/compare_methods.py detection --methods fp32 daq ui8 --seeds 0
    python tools/analysis/plot_curves.py work_dirs/compare/video/*   # the curves of the runs
    python tools/analysis/compare_methods.py detection --seeds 1 2 --merge earlier/summary.json

Methods: fp32, daq, per_channel, per_tensor (DAQ's config with the hook's method switched),
and every method with a demo config ``configs/<method up to the first _>/..._<method>_...``
(ui8, shiftquant, zhuang_w4a4, zhuang_sp_w4a4); ``shiftquant8`` / ``shiftquant6``: ShiftQuant's
config at 8 / 6 bits (its default is 4). A hook method takes hook options after a colon:
``daq:forward=fp32`` (FP32 forward, DAQ backward), ``daq:weight_scale=per_channel``; with
``--finetune-from`` also UI8 and ShiftQuant: ``shiftquant:weight_bits=8,input_bits=8,grad_bits=4``.

The fidelity protocol (docs/fidelity.md) continues one trained FP32 checkpoint in every method
(``--finetune-from``: the ``_finetune`` twins of the demo configs, 50 iterations) and reports
each method's paired difference to FP32 over the seeds (mean and standard error)::

    python tools/train.py configs/demo/faster_rcnn_r50_fpn_synthetic_shapes.py \
        --work-dir work_dirs/base        # the common start: FP32 from scratch, 500 iterations
    python tools/analysis/compare_methods.py detection --finetune-from work_dirs/base/epoch_4.pth \
        --methods fp32 daq daq:forward=fp32 per_tensor --seeds 0 1 2 3 4
"""
import argparse
import glob
import json
import math
import os
import os.path as osp
import re
import statistics
import subprocess
import sys
import time
from typing import Optional

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools'))
sys.path.insert(0, ROOT)

from demo import DEMOS, final_metric, generate_data, train  # noqa: E402

#: The hook methods that run from DAQ's demo config with ``custom_hooks.0.method`` switched.
HOOK_METHODS = ('daq', 'per_channel', 'per_tensor')
#: With --finetune-from, UI8 and ShiftQuant run the same way (their own demo configs train from
#: scratch; ShiftQuant's has L1 batch norm, which a checkpoint trained with BN does not fit, so
#: under this protocol ShiftQuant is its quantizers and shift GEMMs with the model's BN).
FINETUNE_HOOK_METHODS = HOOK_METHODS + ('ui8', 'shiftquant')
#: File-name stems of the demo configs per task, as in configs/<method>/.
CONFIG_STEMS = {'detection': 'faster_rcnn_r50_fpn_{}_synthetic_shapes.py',
                'video': 'tsn_r18_{}_synthetic_clips.py'}


def method_run(task: str, method: str, finetune: bool = False) -> tuple:
    """(config path, extra cfg-options) of ``method`` on ``task``'s demo (its ``_finetune``
    twin with ``finetune``)."""
    configs = DEMOS[task]['finetune_configs' if finetune else 'configs']
    hook_methods = FINETUNE_HOOK_METHODS if finetune else HOOK_METHODS
    name, _, options = method.partition(':')
    if options and name not in hook_methods:
        raise SystemExit(f'[compare] options after ":" are for the hook methods {hook_methods}, '
                         f'but got {method!r}')
    hook_options = []
    for item in filter(None, options.split(',')):
        key, eq, value = item.partition('=')
        if not eq or not key or not value:
            raise SystemExit(f'[compare] hook options must be key=value, but got {item!r} in '
                             f'{method!r}')
        hook_options.append(f'custom_hooks.0.{key}={value}')
    if method == 'fp32':
        return configs['fp32'], []
    if name in hook_methods:
        return configs['daq'], [f'custom_hooks.0.method={name}'] + hook_options
    if finetune:
        raise SystemExit(f'[compare] --finetune-from runs fp32 and the hook methods '
                         f'{hook_methods} (with options), not {method!r}')
    bits = re.fullmatch(r'shiftquant([2-8])', method)
    if bits:  # ShiftQuant's config at another bit-width for W, X and G_Y
        config, _ = method_run(task, 'shiftquant')
        return config, [f'custom_hooks.0.{k}_bits={bits.group(1)}'
                        for k in ('weight', 'input', 'grad')]
    # configs/<folder>/<stem with the method's name>, e.g. 'zhuang_w4a4' in configs/zhuang/
    path = osp.join('configs', method.split('_')[0], CONFIG_STEMS[task].format(method))
    if not osp.isfile(osp.join(ROOT, path)):
        known = sorted(osp.basename(p)[len(CONFIG_STEMS[task].split('{')[0]):].split(
            CONFIG_STEMS[task].split('}')[1])[0] for p in glob.glob(
            osp.join(ROOT, 'configs', '*', CONFIG_STEMS[task].format('*')))
            if '/demo/' not in p)
        raise SystemExit(f'[compare] no demo config for method {method!r} ({path}); methods: '
                         f'fp32, {", ".join(HOOK_METHODS)}, {", ".join(known)}')
    return path, []


def run_name(method: str) -> str:
    """A folder name for ``method``: 'daq:forward=fp32' -> 'daq_forward_fp32'."""
    return re.sub(r'[^A-Za-z0-9_.-]+', '_', method)


def paired_difference(runs: list, reference: list) -> Optional[dict]:
    """Mean, standard error and count of ``metric(run) - metric(reference run)`` over the seeds
    both have (None without a common seed)."""
    ref = {r['seed']: r['metric'] for r in reference}
    diffs = [r['metric'] - ref[r['seed']] for r in runs if r['seed'] in ref]
    if not diffs:
        return None
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else float('nan')
    return dict(mean=statistics.mean(diffs), se=se, n=len(diffs), values=diffs)


def summarize(values: list) -> dict:
    return dict(mean=statistics.mean(values), std=statistics.stdev(values) if len(values) > 1
                else 0.0, min=min(values), max=max(values), n=len(values), values=values)


def earlier_runs(path: str, task: str, protocol: str = 'scratch') -> dict:
    """method -> {seed: run} of an earlier summary.json (``--merge``).

    Runs are read from the summary's per-run list, or, for summaries written before it had one,
    from ``values`` in the order of ``seeds`` when every seed has a value (else it is refused).
    """
    with open(path) as f:
        summary = json.load(f)
    if summary.get('task') != task:
        raise SystemExit(f'[compare] {path} is a {summary.get("task")!r} summary, not {task!r}')
    if summary.get('protocol', 'scratch') != protocol:
        raise SystemExit(f'[compare] {path} holds {summary.get("protocol", "scratch")} runs, '
                         f'not {protocol} runs: they do not pair')
    runs = {}
    for method, r in summary['results'].items():
        if 'runs' in r:
            listed = r['runs']
        elif len(r['values']) == len(summary['seeds']):
            listed = [dict(seed=seed, metric=value, seconds=r['seconds'])
                      for seed, value in zip(summary['seeds'], r['values'])]
        else:
            raise SystemExit(f'[compare] {path}: {method} has {len(r["values"])} values for seeds '
                             f'{summary["seeds"]}; which seed each belongs to is not recorded')
        runs[method] = {run['seed']: dict(run, source=path) for run in listed}
    return runs


def code_version() -> str:
    """Short commit of the repository the runs train from, '-dirty' if the work tree has
    uncommitted changes ('unknown' outside git)."""
    try:
        out = subprocess.run(['git', '-C', ROOT, 'describe', '--always', '--dirty', '--abbrev=7'],
                             capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return 'unknown'


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('task', choices=sorted(DEMOS))
    parser.add_argument('--methods', nargs='+', default=['fp32', 'daq', 'per_tensor'])
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--work-dir', default='work_dirs/compare')
    parser.add_argument('--retrain', action='store_true', help='train even if a result exists')
    parser.add_argument('--no-train', action='store_true',
                        help='only summarize the runs that exist (missing seeds are left out)')
    parser.add_argument('--cfg-options', nargs='+', default=[], help='added to every run')
    parser.add_argument('--merge', nargs='+', default=[], metavar='SUMMARY_JSON',
                        help='also count the runs of earlier summaries (e.g. of another machine '
                        'or session); a (method, seed) they hold is not trained again')
    parser.add_argument('--finetune-from', metavar='CHECKPOINT',
                        help='continue this trained FP32 checkpoint in every method (the '
                        '_finetune configs) instead of training from scratch')
    args = parser.parse_args(argv)
    demo = DEMOS[args.task]
    finetune = args.finetune_from is not None
    if finetune and not osp.isfile(args.finetune_from):
        raise SystemExit(f'[compare] --finetune-from must be a checkpoint file, but '
                         f'{args.finetune_from!r} does not exist')
    protocol = 'finetune' if finetune else 'scratch'
    # fail fast on unknown methods
    runs = {m: method_run(args.task, m, finetune) for m in args.methods}
    runs_dir = osp.join(args.work_dir, args.task + ('_finetune' if finetune else ''))
    merged = {}
    for path in args.merge:
        for method, by_seed in earlier_runs(path, args.task, protocol).items():
            for seed, run in by_seed.items():
                here = osp.join(runs_dir, f'{run_name(method)}_seed{seed}', 'result.json')
                if seed in args.seeds and method in runs and osp.isfile(here):
                    raise SystemExit(f'[compare] seed {seed} of {method} is in {path} and in '
                                     f'{here}: leave it out of one of them')
                if seed in merged.setdefault(method, {}):
                    raise SystemExit(f'[compare] seed {seed} of {method} is in {path} and in '
                                     f'{merged[method][seed]["source"]}')
                merged[method][seed] = run
    if not args.no_train:
        generate_data(*demo['data'])
    results = {}
    for method, (config, options) in runs.items():
        metrics, seconds, listed = [], [], []
        for seed, run in sorted(merged.get(method, {}).items()):
            print(f'[compare] {method} seed {seed}: {demo["label"]} {run["metric"]:.3f} '
                  f'(from {run["source"]})', flush=True)
            metrics.append(run['metric'])
            seconds.append(run['seconds'])
            listed.append(run)
        for seed in args.seeds:
            if seed in merged.get(method, {}):  # that run comes from an earlier summary
                continue
            work_dir = osp.join(runs_dir, f'{run_name(method)}_seed{seed}')
            done = osp.join(work_dir, 'result.json')
            if osp.isfile(done) and not args.retrain:
                with open(done) as f:
                    result = json.load(f)
            elif args.no_train:
                continue
            else:
                extra = ['--cfg-options', f'randomness.seed={seed}'] + options + args.cfg_options
                if finetune:
                    extra.append(f'load_from={osp.abspath(args.finetune_from)}')
                code, start = code_version(), time.strftime('%Y-%m-%d %H:%M')  # what it trains
                t = train(config, work_dir, extra)
                result = dict(metric=final_metric(work_dir, demo['metric']), seconds=t,
                              config=config, options=options + args.cfg_options, seed=seed,
                              date=start, code=code, finetune_from=args.finetune_from)
                with open(done, 'w') as f:
                    json.dump(result, f, indent=1)
            print(f'[compare] {method} seed {seed}: {demo["label"]} {result["metric"]:.3f} '
                  f'({result["seconds"]:.0f} s)', flush=True)
            metrics.append(result['metric'])
            seconds.append(result['seconds'])
            listed.append(dict(seed=seed, metric=result['metric'], seconds=result['seconds'],
                               code=result.get('code', 'unknown'), source=work_dir))
        if not metrics:
            print(f'[compare] {method}: no finished run', flush=True)
            continue
        results[method] = dict(summarize(metrics), seconds=statistics.mean(seconds),
                               config=config, options=options, runs=listed)
    for method, r in results.items():
        if method != 'fp32' and 'fp32' in results:
            r['vs_fp32'] = paired_difference(r['runs'], results['fp32']['runs'])
    lines = [f'| method | {demo["label"]} mean | std | min - max | seeds | vs FP32, paired '
             '(s.e., pairs) | s / run |', '|---|---|---|---|---|---|---|']
    for method, r in results.items():
        d = r.get('vs_fp32')
        paired = f'{d["mean"]:+.4f} ({d["se"]:.4f}, {d["n"]})' if d else '-'
        lines.append(f'| {method} | {r["mean"]:.3f} | {r["std"]:.3f} | {r["min"]:.3f} - '
                     f'{r["max"]:.3f} | {r["n"]} | {paired} | {r["seconds"]:.0f} |')
    table = '\n'.join(lines)
    all_seeds = sorted(set(args.seeds) | {seed for m in merged.values() for seed in m})
    print(f'\n[compare] {args.task} ({protocol}): final {demo["label"]} on the synthetic val '
          f'split, seeds {all_seeds}\n{table}')
    out = runs_dir
    os.makedirs(out, exist_ok=True)
    with open(osp.join(out, 'summary.json'), 'w') as f:
        json.dump(dict(task=args.task, protocol=protocol, finetune_from=args.finetune_from,
                       seeds=all_seeds, results=results,
                       command='python tools/analysis/compare_methods.py ' +
                       ' '.join(sys.argv[1:] if argv is None else argv)), f, indent=1)
    with open(osp.join(out, 'summary.md'), 'w') as f:
        f.write(table + '\n')
    return results


if __name__ == '__main__':
    main()
