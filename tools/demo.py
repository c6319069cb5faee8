"""The demo behind `make demo` / `make demo-full` / `make demo-video`: FP32 vs DAQ INT8.

Generates the synthetic dataset if needed and trains FP32 and DAQ with the same seed and
schedule (each through tools/train.py, progress and ETA from mmengine's logger), then prints the
final metric of both side by side and the wall-time ratio.

Detection (``make demo``) starts with a short shared FP32 warm start (one epoch from scratch),
then continues it in FP32 and in DAQ (the ``_finetune`` configs, 50 iterations): both
runs share their start, so their difference is mostly the method's, and the demo takes minutes.
``--full`` trains both from scratch for 4 epochs instead (``make demo-full``)::

    python tools/demo.py detection            # warm start + two continuations, bbox mAP
    python tools/demo.py detection --full     # Faster R-CNN R50-FPN from scratch twice
    python tools/demo.py video                # TSN R18 from scratch twice, top-1
    python tools/demo.py detection --only fp32
"""
import argparse
import glob
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

DEMOS = {
    'detection': dict(
        data=('detection', 'data/synthetic_shapes'),
        configs={'fp32': 'configs/demo/faster_rcnn_r50_fpn_synthetic_shapes.py',
                 'daq': 'configs/demo/faster_rcnn_r50_fpn_daq_synthetic_shapes.py'},
        finetune_configs={
            'fp32': 'configs/demo/faster_rcnn_r50_fpn_synthetic_shapes_finetune.py',
            'daq': 'configs/demo/faster_rcnn_r50_fpn_daq_synthetic_shapes_finetune.py'},
        # The shared start of the default demo: the FP32 config's first epoch (125 iterations),
        # without evaluation.
        warm_start=['train_cfg.max_epochs=1', 'train_cfg.val_interval=2'],
        metric='coco/bbox_mAP', label='bbox mAP'),
    'video': dict(
        data=('video', 'data/synthetic_clips'),
        configs={'fp32': 'configs/demo/tsn_r18_synthetic_clips.py',
                 'daq': 'configs/demo/tsn_r18_daq_synthetic_clips.py'},
        finetune_configs={'fp32': 'configs/demo/tsn_r18_synthetic_clips_finetune.py',
                          'daq': 'configs/demo/tsn_r18_daq_synthetic_clips_finetune.py'},
        metric='acc/top1', label='top-1'),
}
PROGRESS = re.compile(r'((Epoch|Iter)\((train|val)\)\s+(\[\d+\])?\[\s*\d+/\d+\].*?(eta: \S+)?\s+'
                      r'time|coco/bbox_mAP:|acc/top1:|DAQHook \()')


def generate_data(kind: str, out: str) -> None:
    from mmdaq.datasets import generate_detection_dataset, generate_video_dataset
    t0 = time.time()
    info = (generate_detection_dataset if kind == 'detection' else generate_video_dataset)(out)
    status = "generated" if info["generated"] else "reused"
    print(f"[demo] data: {out} ({status}, {time.time() - t0:.1f}s)",
          flush=True)


def train(config: str, work_dir: str, extra: list) -> float:
    """Run tools/train.py, echo progress lines, return the wall time in seconds."""
    cmd = [sys.executable, osp.join(ROOT, 'tools/train.py'), osp.join(ROOT, config),
           '--work-dir', work_dir] + extra
    print(f'[demo] $ {" ".join(cmd)}', flush=True)
    t0 = time.time()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          cwd=os.getcwd()) as proc:
        tail = []
        for line in proc.stdout:
            tail = (tail + [line])[-40:]
            if PROGRESS.search(line):
                print('  ' + line.split(' - mmengine - INFO - ')[-1].rstrip()[:160], flush=True)
    if proc.returncode != 0:
        sys.stdout.write(''.join(tail))
        raise SystemExit(f'[demo] training {config} failed (exit {proc.returncode})')
    return time.time() - t0


def final_metric(work_dir: str, key: str) -> float:
    logs = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    values = []
    for log in logs:
        with open(log) as f:
            values += [json.loads(line)[key] for line in f if key in line]
    if not values:
        raise SystemExit(f'[demo] no {key} in the logs of {work_dir}')
    return values[-1]


def warm_start(demo: dict, work_dir: str, extra: list) -> tuple:
    """Train the shared FP32 start; return (its last checkpoint, wall time in seconds)."""
    print(f'[demo] warm start: FP32 from scratch ({" ".join(demo["warm_start"])})', flush=True)
    seconds = train(demo['configs']['fp32'], work_dir,
                    ['--cfg-options'] + demo['warm_start'] + extra)
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip(), seconds


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('task', choices=sorted(DEMOS))
    parser.add_argument('--only', choices=['fp32', 'daq'], help='run just one of the two')
    parser.add_argument('--full', action='store_true',
                        help='train both from scratch (the long demo) instead of continuing '
                        'a shared FP32 warm start')
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--cfg-options', nargs='+', default=[], help='passed to tools/train.py')
    args = parser.parse_args(argv)
    demo = DEMOS[args.task]
    full = args.full or 'warm_start' not in demo
    generate_data(*demo['data'])
    runs = [args.only] if args.only else ['fp32', 'daq']
    results, configs, extra = {}, demo['configs'], list(args.cfg_options)
    if not full:
        checkpoint, seconds = warm_start(demo, osp.join(args.work_dir, f'{args.task}_warm_start'),
                                         extra)
        results['warm_start'] = dict(checkpoint=checkpoint, seconds=seconds)
        configs, extra = demo['finetune_configs'], extra + [f'load_from={checkpoint}']
    for i, run in enumerate(runs):
        what = 'from scratch' if full else 'continuing the warm start'
        print(f'[demo] {i + 1}/{len(runs)}: training {run.upper()} {what} ({configs[run]})',
              flush=True)
        work_dir = osp.join(args.work_dir, f'{args.task}_{run}' + ('' if full else '_finetune'))
        seconds = train(configs[run], work_dir, ['--cfg-options'] + extra if extra else [])
        results[run] = dict(metric=final_metric(work_dir, demo['metric']), seconds=seconds)
    import torch
    schedule = 'from scratch' if full else 'from one FP32 warm start '
    if not full:
        schedule += f'({results["warm_start"]["seconds"]:.0f} s)'
    print(f'\n[demo] {args.task}: {demo["label"]} on the synthetic val split, same seed and '
          f'schedule, {schedule} ({torch.get_num_threads()} CPU threads)')
    print(f'  {"run":<6}{demo["label"]:>10}{"wall time":>12}')
    for run in runs:
        r = results[run]
        print(f'  {run.upper():<6}{r["metric"]:>10.3f}{r["seconds"]:>11.0f}s')
    if len(runs) == 2:
        print(f'  DAQ - FP32: {results["daq"]["metric"] - results["fp32"]["metric"]:+.3f} '
              f'{demo["label"]}; time DAQ / FP32: '
              f'{results["daq"]["seconds"] / results["fp32"]["seconds"]:.2f}x')
    with open(osp.join(args.work_dir, f'{args.task}_summary.json'), 'w') as f:
        json.dump(results, f, indent=2)
    return results


if __name__ == '__main__':
    main()
