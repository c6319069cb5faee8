"""The ShiftQuant demo configs train through tools/train.py (tiny data, a few iterations)."""
import glob
import json
import os.path as osp
import subprocess
import sys

import pytest

pytest.importorskip('mmdet')
pytest.importorskip('mmaction')

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = osp.join(ROOT, 'configs/shiftquant')


def _train(config, cwd, options):
    out = subprocess.run([sys.executable, osp.join(ROOT, 'tools/train.py'), config, '--work-dir',
                          str(cwd / 'work'), '--cfg-options'] + options, cwd=cwd,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    logs = glob.glob(str(cwd / 'work' / '*' / 'vis_data' / 'scalars.json'))
    assert logs, 'no scalars.json'
    with open(logs[0]) as f:
        return out.stdout + out.stderr, [json.loads(line) for line in f]


def test_detection_config_trains(tmp_path):
    from mmdaq.datasets import generate_detection_dataset
    generate_detection_dataset(str(tmp_path / 'data/synthetic_shapes'), num_train=6, num_val=2,
                               image_size=(96, 96), seed=0)
    out, records = _train(
        osp.join(CONFIGS, 'faster_rcnn_r50_fpn_shiftquant_synthetic_shapes.py'), tmp_path,
        ['train_cfg.max_epochs=1', 'train_cfg.val_interval=10', 'train_dataloader.batch_size=2',
         'default_hooks.logger.interval=1', 'param_scheduler.0.end=2'])
    assert 'DAQHook (shiftquant): 63 layers' in out
    assert "type='L1BN'" in out  # the backbone's norm_cfg
    losses = [r['loss'] for r in records if 'loss' in r]
    assert len(losses) == 3 and all(v == v and abs(v) < 1e4 for v in losses)  # finite


def test_video_config_trains(tmp_path):
    from mmdaq.datasets import generate_video_dataset
    generate_video_dataset(str(tmp_path / 'data/synthetic_clips'), num_train=6, num_val=3,
                           num_frames=6, frame_size=(32, 32), seed=0)
    opts = ['train_cfg.max_epochs=1', 'train_cfg.val_begin=1', 'train_cfg.val_interval=1',
            'default_hooks.logger.interval=1']
    for loader in ('train_dataloader', 'val_dataloader'):
        opts += [f'{loader}.batch_size=3', f'{loader}.num_workers=0',
                 f'{loader}.persistent_workers=False']
    out, records = _train(osp.join(CONFIGS, 'tsn_r18_shiftquant_synthetic_clips.py'), tmp_path,
                          opts)
    assert 'DAQHook (shiftquant)' in out
    losses = [r['loss'] for r in records if 'loss' in r]
    assert losses and all(v == v and abs(v) < 1e4 for v in losses)
    assert any('acc/top1' in r for r in records)
