"""Train a detector (mmdet) or a video recognizer (mmaction2) from a config.

Same command line as mmdet's ``tools/train.py``; the task comes from the config's
``default_scope``. Examples::

    python tools/train.py configs/faster_rcnn_r50_daq.py
    python tools/train.py CONFIG --work-dir work_dirs/run1 --resume
    bash tools/dist_train.sh CONFIG 2
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a clone

import mmdaq  # noqa: E402,F401  (compatibility fixes before any OpenMMLab import)

# isort: split
from mmengine.config import DictAction  # noqa: E402

from mmdaq.engine.launch import (apply_resume, build_runner, enable_amp,  # noqa: E402
                                 enable_auto_scale_lr, load_config, shutdown_distributed)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a detector or video recognizer')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--amp', action='store_true', default=False,
                        help='enable automatic-mixed-precision training (GPU only)')
    parser.add_argument('--auto-scale-lr', action='store_true', help='enable automatically '
                        'scaling LR by the actual vs the base batch size')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from the given checkpoint, or without a path from the '
                        'latest checkpoint in the work directory')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value (e.g. '
                        'train_cfg.max_epochs=2 train_dataloader.batch_size=4)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    if args.amp:
        enable_amp(cfg)
    if args.auto_scale_lr:
        enable_auto_scale_lr(cfg)
    apply_resume(cfg, args.resume)
    runner = build_runner(cfg)
    try:
        runner.train()
    except BaseException:
        shutdown_distributed(synchronize=False)
        raise
    shutdown_distributed()


if __name__ == '__main__':
    main()
