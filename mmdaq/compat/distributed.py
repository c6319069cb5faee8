"""Multi-process training without CUDA (torchrun + gloo) for mmengine 0.10.7.

mmengine's ``init_dist('pytorch')`` calls ``torch.cuda.set_device`` unconditionally
and ``Runner.wrap_model`` passes ``device_ids=[LOCAL_RANK]`` to DDP, which a CPU
module rejects. Without CUDA we initialise the gloo process group ourselves before
the Runner is built (the Runner then skips its own initialisation) and let DDP
wrap the CPU module with ``device_ids=None``.
"""
import os

import torch
import torch.distributed as dist


def needs_cpu_distributed(launcher: str) -> bool:
    """Whether ``launcher`` asks for multi-process training on a machine without CUDA."""
    return launcher != 'none' and not torch.cuda.is_available()


def init_cpu_distributed(launcher: str, timeout_s: int = 1800) -> None:
    """Initialise a gloo process group from the environment torchrun/slurm sets.

    Args:
        launcher (str): 'pytorch' (torchrun) or 'slurm'.
        timeout_s (int): Collective timeout in seconds. Defaults to 1800.
    """
    if dist.is_initialized():
        return
    if launcher == 'slurm':
        os.environ.setdefault('RANK', os.environ['SLURM_PROCID'])
        os.environ.setdefault('WORLD_SIZE', os.environ['SLURM_NTASKS'])
        os.environ.setdefault('LOCAL_RANK', os.environ.get('SLURM_LOCALID', '0'))
        os.environ.setdefault('MASTER_PORT', '29500')
        os.environ.setdefault('MASTER_ADDR', '127.0.0.1')
    elif launcher != 'pytorch':
        raise ValueError(
            f"launcher must be 'pytorch' or 'slurm' without CUDA, but got {launcher!r}")
    import datetime
    dist.init_process_group('gloo', timeout=datetime.timedelta(seconds=timeout_s))


def cpu_model_wrapper_cfg(cfg_wrapper: dict = None) -> dict:
    """The ``model_wrapper_cfg`` for DDP on CPU: the configured one with ``device_ids=None``."""
    wrapper = dict(type='MMDistributedDataParallel')
    wrapper.update(cfg_wrapper or {})
    wrapper['device_ids'] = None
    return wrapper
