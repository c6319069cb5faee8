"""mmengine resumes from its own checkpoint on torch >= 2.6 (weights-only default)."""
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

pytest.importorskip('mmengine')
from mmengine.model import BaseModel  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmdaq  # noqa: E402,F401  (installs the safe checkpoint loader)


class _ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, inputs, labels, mode='tensor'):
        out = self.linear(inputs)
        if mode == 'loss':
            return dict(loss=((out - labels)**2).mean())
        return out


class _ToyDataset(Dataset):

    def __init__(self):
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(32, 4, generator=g)
        self.y = self.x.sum(1, keepdim=True)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return dict(inputs=self.x[i], labels=self.y[i])


def _runner(work_dir, max_epochs, resume=False, load_from=None):
    torch.manual_seed(0)  # the same initial weights in every run
    return Runner(
        model=_ToyModel(),
        work_dir=str(work_dir),
        train_dataloader=dict(dataset=_ToyDataset(), sampler=dict(type='DefaultSampler',
                                                                  shuffle=True),
                              batch_size=8, collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1),
                           logger=dict(type='LoggerHook', interval=1)),
        randomness=dict(seed=0, deterministic=True),
        resume=resume, load_from=load_from,
        default_scope='mmengine', experiment_name=f'toy_{max_epochs}_{resume}')


def test_resume_continues_exactly(tmp_path):
    straight = _runner(tmp_path / 'straight', max_epochs=3)
    straight.train()
    _runner(tmp_path / 'split', max_epochs=1).train()
    resumed = _runner(tmp_path / 'split', max_epochs=3, resume=True,
                      load_from=str(tmp_path / 'split' / 'epoch_1.pth'))
    resumed.train()
    assert resumed.epoch == 3 and resumed.iter == straight.iter
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
