"""Train the toy net of test_daq_hook with DAQHook, 1 or 2 processes (run by test_distributed).

Usage: [torchrun --nproc_per_node N] dist_toy_train.py WORK_DIR GLOBAL_BATCH OUT_JSON
"""
import json
import os
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import mmdaq  # noqa: E402,F401  (compatibility fixes before any OpenMMLab import)

# isort: split
from mmengine.config import Config  # noqa: E402
from mmengine.dist import get_rank, get_world_size  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402
from mmengine.runner import Runner  # noqa: E402
from test_daq_hook import ToyData, ToyNet  # noqa: E402

from mmdaq.cnn import daq_layers  # noqa: E402
from mmdaq.engine.launch import setup_launcher, shutdown_distributed  # noqa: E402


class Record(Hook):

    def __init__(self):
        self.losses = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses.append(float(outputs['loss'].detach()))


def main():
    work_dir, global_batch, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    launcher = 'pytorch' if 'LOCAL_RANK' in os.environ else 'none'
    cfg = Config(dict(launcher=launcher))
    setup_launcher(cfg)
    torch.manual_seed(0)
    record = Record()
    runner = Runner(
        model=ToyNet(), work_dir=work_dir, launcher=launcher, cfg=cfg,
        env_cfg=cfg.get('env_cfg') or dict(dist_cfg=dict(backend='gloo')),
        train_dataloader=dict(dataset=ToyData(n=48),
                              sampler=dict(type='DefaultSampler', shuffle=True, seed=0),
                              batch_size=global_batch // get_world_size(),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05)),
        train_cfg=dict(by_epoch=False, max_iters=6),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=100, by_epoch=False)),
        custom_hooks=[dict(type='DAQHook', stats_interval=0), record],
        randomness=dict(seed=0), default_scope='mmengine')
    runner.train()
    # The loss of the global batch: mean of the ranks' losses (equal-size shards).
    losses = torch.tensor(record.losses)
    if get_world_size() > 1:
        torch.distributed.all_reduce(losses)
        losses /= get_world_size()
    state = {name: layer.quant_scheme.state_dict().get('prev_clips', {}).get(0).tolist()
             for name, layer in daq_layers(runner.model.module if hasattr(runner.model, 'module')
                                           else runner.model).items()}
    with open(f'{out}.rank{get_rank()}', 'w') as f:
        json.dump(dict(losses=losses.tolist(), state=state), f)
    shutdown_distributed()  # every rank done, then gloo's threads stop before exit


if __name__ == '__main__':
    main()
