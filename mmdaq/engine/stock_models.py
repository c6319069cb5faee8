"""Build the stock mmdet / mmaction2 models from their configs and feed them tiny batches.

Used by the analysis tools, the benchmarks and the coverage tests: no dataset, no
downloads (pretrained-weight references are removed from the config).
"""
import copy
import inspect
from typing import Any, Dict, Iterator, Tuple

import torch
from mmengine.config import Config, ConfigDict
from mmengine.logging import MMLogger
from torch import nn

import mmdaq  # noqa: F401  (compatibility fixes before OpenMMLab imports)

TASKS = {'mmdet': 'detection', 'mmaction': 'video'}


def load_stock_config(name: str) -> Config:
    """A config by package scope (``'mmdet::faster_rcnn/...'``) or by file path."""
    if '::' in name:
        from mmengine.hub import get_config
        return get_config(name)
    return Config.fromfile(name)


def strip_pretrained(cfg: Any, registry=None) -> Any:
    """Remove every reference to pretrained weights (they cannot be downloaded here).

    ``pretrained`` becomes None, Pretrained ``init_cfg`` None, and ``pretrained2d`` False, also
    where a module only has it as a default (mmaction2's ResNetTSM/ResNet3d, looked up in
    ``registry``).
    """
    if isinstance(cfg, (dict, ConfigDict)):
        out = type(cfg)()
        for key, value in cfg.items():
            if key == 'pretrained':
                value = None
            elif key == 'pretrained2d':
                value = False
            elif (key == 'init_cfg' and isinstance(value, dict)
                  and value.get('type') == 'Pretrained'):
                value = None
            out[key] = strip_pretrained(value, registry)
        if 'pretrained' in cfg and 'pretrained2d' not in cfg and registry is not None:
            cls = registry.get(cfg.get('type')) if isinstance(cfg.get('type'), str) else None
            if cls is not None and 'pretrained2d' in inspect.signature(cls).parameters:
                out['pretrained2d'] = False
        return out
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(strip_pretrained(v, registry) for v in cfg)
    return cfg


def build_stock_model(cfg: Config) -> Tuple[nn.Module, str]:
    """Build ``cfg.model`` in the config's scope with fresh weights.

    Returns:
        tuple: (model, task) with task 'detection' or 'video'.
    """
    scope = cfg.get('default_scope')
    if scope not in TASKS:
        raise ValueError(f"default_scope must be one of {sorted(TASKS)}, but got {scope!r}")
    from mmengine.registry import DefaultScope, init_default_scope
    init_default_scope(scope)
    if scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmaction.registry import MODELS
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(strip_pretrained(copy.deepcopy(cfg.model), MODELS))
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('WARNING')  # init_weights logs every parameter at INFO
    try:
        model.init_weights()
    finally:
        logger.setLevel(level)
    return model, TASKS[scope]


def demo_batch(model: nn.Module, task: str, batch_size: int = 2, size: int = 128,
               num_frames: int = 8, num_classes: int = 10, seed: int = 0) -> Dict[str, Any]:
    """A random training batch, already through the model's data preprocessor.

    Detection: ``batch_size`` images of ``size x size`` with 3 random boxes each.
    Video: clips of ``num_frames`` frames (3D models) or segments (2D models).
    """
    if task == 'detection':
        from mmdet.testing import demo_mm_inputs
        with_mask = hasattr(getattr(model, 'roi_head', None), 'mask_head')
        packed = demo_mm_inputs(batch_size, [(3, size, size)] * batch_size,
                                num_items=[3] * batch_size, num_classes=num_classes,
                                with_mask=with_mask)
        if not with_mask:  # synthetic shapes instead of noise: realistic, seeded gradients
            _fill_with_shapes(packed, size, seed)
    else:
        from mmaction.structures import ActionDataSample
        gen = torch.Generator().manual_seed(seed)
        fmt = getattr(model.data_preprocessor, 'format_shape', 'NCHW')
        shape = (1, 3, num_frames, size, size) if fmt == 'NCTHW' else (num_frames, 3, size, size)
        packed = dict(
            inputs=[torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)
                    for _ in range(batch_size)],
            data_samples=[ActionDataSample().set_gt_label(i % num_classes)
                          for i in range(batch_size)])
    return model.data_preprocessor(packed, training=True)


def _fill_with_shapes(packed: Dict[str, Any], size: int, seed: int) -> None:
    """Replace demo images and boxes by rendered synthetic shapes (seeded)."""
    import numpy as np
    from mmengine.structures import InstanceData

    from mmdaq.datasets.synthetic_detection import render_detection_image
    rng = np.random.default_rng(seed)
    for i, sample in enumerate(packed['data_samples']):
        image, _, anns = render_detection_image(rng, (size, size))
        packed['inputs'][i] = torch.from_numpy(image).permute(2, 0, 1).contiguous()
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a['bbox'] for a in anns)],
                             dtype=torch.float32)
        sample.gt_instances = InstanceData(
            bboxes=boxes, labels=torch.tensor([a['label'] for a in anns], dtype=torch.long))


def training_loss(model: nn.Module, data: Dict[str, Any]) -> torch.Tensor:
    """The summed training loss of one batch (as mmengine's ``train_step`` computes it)."""
    losses = model(**data, mode='loss')
    loss, _ = model.parse_losses(losses)
    return loss


def config_batches(cfg: Config, model: nn.Module, batch_size: int, num_batches: int,
                   seed: int = 0) -> Iterator[Dict[str, Any]]:
    """``num_batches`` training batches from the config's own ``train_dataloader``.

    The dataloader is built as the runner would, with ``batch_size`` samples, no worker
    processes and a seeded sampler; each batch is put through the model's data
    preprocessor (``training=True``). Dataset paths are relative to the working directory,
    as for ``tools/train.py``.

    Args:
        cfg (Config): A training config with ``train_dataloader`` and ``default_scope``
            (``build_stock_model`` has set that scope).
        model (nn.Module): The model built from ``cfg`` (for its data preprocessor).
        batch_size (int): Samples per batch.
        num_batches (int): Batches to yield (fewer if the dataset runs out).
        seed (int): Seed of the sampler. Defaults to 0.

    Yields:
        dict: ``inputs`` and ``data_samples``, ready for ``model(**batch, mode='loss')``.
    """
    if cfg.get('train_dataloader') is None:
        raise ValueError('the config must have a train_dataloader to take batches from, but '
                         'it has none')
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner
    loader_cfg = copy.deepcopy(cfg.train_dataloader)
    loader_cfg.update(batch_size=batch_size, num_workers=0, persistent_workers=False)
    loader_cfg.pop('prefetch_factor', None)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        loader = Runner.build_dataloader(loader_cfg, seed=seed)
    for i, batch in enumerate(loader):
        if i == num_batches:
            break
        yield model.data_preprocessor(batch, training=True)


def load_weights(model: nn.Module, checkpoint: str) -> None:
    """Load the weights of an mmengine (or plain ``state_dict``) checkpoint into ``model``."""
    import os.path as osp
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint must be an existing file, but got {checkpoint!r}')
    from mmengine.runner import load_checkpoint
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('WARNING')
    try:
        load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    finally:
        logger.setLevel(level)
