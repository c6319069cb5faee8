"""What ``tools/train.py`` and ``tools/test.py`` do besides parsing: one place, tested.

The command-line interface is mmdet's (also mmaction2's); the task (detection or
video) comes from the config's ``default_scope`` and needs nothing here beyond
importing mmdaq first, so its compatibility fixes are in place.
"""
import os.path as osp
from typing import Optional

import torch
from mmengine.config import Config

from ..compat.distributed import cpu_model_wrapper_cfg, init_cpu_distributed, needs_cpu_distributed

SUPPORTED_SCOPES = ('mmdet', 'mmaction')
#: Dataset roots of the demo configs -> the kind tools/data/generate_synthetic.py makes there.
SYNTHETIC_ROOTS = {'data/synthetic_shapes': 'detection', 'data/synthetic_clips': 'video'}


def load_config(path: str, cfg_options: Optional[dict] = None, work_dir: Optional[str] = None,
                launcher: str = 'none') -> Config:
    """Read a config, apply ``--cfg-options`` and the work_dir rule of mmdet's tools.

    work_dir priority: CLI > the config's own > ``./work_dirs/<config name>``.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'config must be an existing file, but got {path!r}')
    cfg = Config.fromfile(path)
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope')
    if scope not in SUPPORTED_SCOPES:
        raise ValueError(f'default_scope of {path} must be one of {SUPPORTED_SCOPES}, but got '
                         f'{scope!r}; inherit an mmdet or mmaction2 config (`_base_ = '
                         "'mmdet::...'`)")
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(path))[0])
    return cfg


def enable_amp(cfg: Config) -> None:
    """``--amp``: mmengine's AmpOptimWrapper with dynamic loss scaling (needs a GPU)."""
    if not torch.cuda.is_available():
        raise RuntimeError('--amp needs a CUDA GPU (mmengine\'s AmpOptimWrapper is GPU-only), '
                           'but torch.cuda.is_available() is False; drop --amp on CPU')
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.loss_scale = 'dynamic'


def enable_auto_scale_lr(cfg: Config) -> None:
    """``--auto-scale-lr``: scale the LR by the actual vs the config's base batch size."""
    auto = cfg.get('auto_scale_lr')
    if not auto or 'base_batch_size' not in auto:
        raise RuntimeError('--auto-scale-lr needs `auto_scale_lr = dict(enable=False, '
                           'base_batch_size=...)` in the config, but it has none')
    cfg.auto_scale_lr.enable = True


def apply_resume(cfg: Config, resume: Optional[str]) -> None:
    """``--resume`` (latest checkpoint in work_dir) or ``--resume CKPT``."""
    if resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif resume is not None:
        if not osp.isfile(resume):
            raise FileNotFoundError(f'--resume checkpoint must be an existing file, but got '
                                    f'{resume!r}')
        cfg.resume = True
        cfg.load_from = resume


def setup_launcher(cfg: Config) -> None:
    """Prepare multi-process training; without CUDA, gloo and CPU DDP (see compat.distributed)."""
    if needs_cpu_distributed(cfg.launcher):
        init_cpu_distributed(cfg.launcher)
        cfg.model_wrapper_cfg = cpu_model_wrapper_cfg(cfg.get('model_wrapper_cfg'))
        env_cfg = cfg.get('env_cfg') or {}
        env_cfg.setdefault('dist_cfg', {})['backend'] = 'gloo'
        cfg.env_cfg = env_cfg


def check_synthetic_data(cfg: Config) -> None:
    """Raise FileNotFoundError, saying how to make it, where a dataloader of the config reads a
    synthetic dataset (:data:`SYNTHETIC_ROOTS`, relative to the working directory) that was not
    generated yet."""
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = (cfg.get(loader) or {}).get('dataset') or {}
        paths = [osp.normpath(p) for p in (dataset.get('data_root'), dataset.get('ann_file'))
                 if isinstance(p, str) and p]
        for root, kind in SYNTHETIC_ROOTS.items():
            reads_root = any(p == root or p.startswith(root + osp.sep) for p in paths)
            if reads_root and not osp.isfile(osp.join(root, 'manifest.json')):
                raise FileNotFoundError(
                    f'{loader} reads the synthetic dataset {root!r}, which is not in '
                    f'{osp.abspath(root)!r}: generate it with `make data` (or `python '
                    f'tools/data/generate_synthetic.py {kind}`) in this directory')


def build_runner(cfg: Config):
    """The Runner of the config: the default one, or ``runner_type`` from the registry.
    A synthetic dataset the config reads must exist (:func:`check_synthetic_data`)."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    check_synthetic_data(cfg)
    setup_launcher(cfg)
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def shutdown_distributed(synchronize: bool = True) -> None:
    """Destroy the process group, if any: gloo's threads must stop before the interpreter exits.

    Args:
        synchronize (bool): Wait for every rank first (a rank that tears down while a peer is
            still talking aborts with "terminate called without an active exception"). Pass
            False on an error path, where a peer may never arrive. Defaults to True.
    """
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        if synchronize:
            dist.barrier()
        dist.destroy_process_group()
