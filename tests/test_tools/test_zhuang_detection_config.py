"""The Zhuang et al. detection config trains through tools/train.py: its whole schedule (FP32,
4-bit weights, W4A4) on a tiny synthetic set, both nets of the joint distillation."""
import os.path as osp

import pytest

pytest.importorskip('mmdet')

from test_shiftquant_configs import ROOT, _train  # noqa: E402  (same runner helper)


def test_detection_config_trains_through_its_stages(tmp_path):
    from mmdaq.datasets import generate_detection_dataset
    generate_detection_dataset(str(tmp_path / 'data/synthetic_shapes'), num_train=4, num_val=2,
                               image_size=(96, 96), seed=0)
    out, records = _train(
        osp.join(ROOT, 'configs/zhuang/faster_rcnn_r50_fpn_zhuang_w4a4_synthetic_shapes.py'),
        tmp_path, ['train_cfg.val_interval=10', 'train_dataloader.batch_size=2',
                   'default_hooks.logger.interval=1', 'param_scheduler.0.end=2'])
    losses = [r['loss'] for r in records if 'loss' in r]
    assert len(losses) == 8  # 4 epochs x 2 iterations: every stage ran
    assert all(v == v and abs(v) < 1e4 for v in losses)  # finite through the bit-width switches
    assert 'ZhuangQuantHook' in out and 'ProgressiveQuantHook' in out
