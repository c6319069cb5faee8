"""Which Conv/Linear layers of a stock model DAQHook turns INT8 (for tests and the docs table)."""
from typing import Dict, Optional

import torch
from torch import nn

from .hooks.daq_hook import DAQHook
from .stock_models import build_stock_model, demo_batch, load_stock_config, training_loss

#: Stock configs of the paper's tasks and their relatives, with a tiny input for each.
COVERAGE_MODELS: Dict[str, tuple] = {
    'faster_rcnn': ('mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', dict(size=64)),
    'retinanet': ('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', dict(size=64)),
    'mask_rcnn': ('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', dict(size=64)),
    'fcos': ('mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py', dict(size=64)),
    'cascade_rcnn': ('mmdet::cascade_rcnn/cascade-rcnn_r50_fpn_1x_coco.py', dict(size=64)),
    'tsn': ('mmaction::recognition/tsn/tsn_imagenet-pretrained-r50_8xb32-1x1x3-100e_'
            'kinetics400-rgb.py', dict(size=32, num_frames=2)),
    'i3d': ('mmaction::recognition/i3d/i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e_'
            'kinetics400-rgb.py', dict(size=32, num_frames=8)),
    'tsm': ('mmaction::recognition/tsm/tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_'
            'kinetics400-rgb.py', dict(size=32, num_frames=8)),
    'slowfast': ('mmaction::recognition/slowfast/slowfast_r50_8xb8-4x16x1-256e_kinetics400-rgb.py',
                 dict(size=32, num_frames=8)),
    'x3d': ('mmaction::recognition/x3d/x3d_s_13x6x1_facebook-kinetics400-rgb.py',
            dict(size=32, num_frames=4)),
}


def count_layers(model: nn.Module) -> int:
    """Number of Conv1d/2d/3d and Linear layers (DAQ layers included: they subclass them)."""
    return sum(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))
               for m in model.modules())


def conversion_coverage(key: str, hook: Optional[DAQHook] = None, seed: int = 0) -> dict:
    """Build a stock model, convert it as DAQHook would, run one forward+backward.

    Returns:
        dict: ``layers`` (Conv/Linear count), ``int8``, ``share``, ``skipped`` (name -> reason),
        ``loss`` and ``finite`` (loss and every gradient finite).
    """
    config, batch_kw = COVERAGE_MODELS[key]
    torch.manual_seed(seed)
    model, task = build_stock_model(load_stock_config(config))
    total = count_layers(model)
    report = (hook or DAQHook()).convert(model)
    model.train()
    data = demo_batch(model, task, batch_size=2, seed=seed, **batch_kw)
    loss = training_loss(model, data)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    finite = bool(torch.isfinite(loss)) and all(bool(torch.isfinite(g).all()) for g in grads)
    return dict(layers=total, int8=len(report.converted), share=len(report.converted) / total,
                skipped=dict(report.skipped), loss=float(loss), finite=finite)
