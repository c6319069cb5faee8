"""DAQHook in a real mmengine Runner on a toy conv net."""
import glob

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

pytest.importorskip('mmengine')
from mmengine.model import BaseModel  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from mmdaq.cnn import DAQConv2d, DAQLinear, daq_layers  # noqa: E402
from mmdaq.engine import DAQHook  # noqa: E402


class ToyNet(BaseModel):

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential(nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                                  nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.neck = nn.Linear(8, 8)
        self.fc_cls = nn.Linear(8, 4)

    def forward(self, inputs, labels, mode='tensor'):
        logits = self.fc_cls(torch.relu(self.neck(self.body(self.stem(inputs)))))
        if mode == 'loss':
            return dict(loss=nn.functional.cross_entropy(logits, labels))
        return logits


class ToyData(Dataset):

    def __init__(self, n=32):
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 3, 8, 8, generator=g)
        self.y = torch.randint(0, 4, (n, ), generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return dict(inputs=self.x[i], labels=self.y[i])


def make_runner(work_dir, max_iters=8, hook=None, resume=False, load_from=None, name='toy',
                visualizer=None):
    torch.manual_seed(0)
    losses = []

    from mmengine.hooks import Hook

    class Record(Hook):

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            losses.append(float(outputs['loss']))

    runner = Runner(
        model=ToyNet(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=ToyData(), sampler=dict(type='DefaultSampler', shuffle=True),
                              batch_size=8, collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=4, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[hook or dict(type='DAQHook', stats_interval=2), Record()],
        randomness=dict(seed=0, deterministic=True), resume=resume, load_from=load_from,
        default_scope='mmengine', experiment_name=name, visualizer=visualizer)
    runner.losses = losses
    return runner


def test_converts_keeping_stem_and_head_and_optimizer_params(tmp_path):
    runner = make_runner(tmp_path, max_iters=2)
    runner.train()
    model = runner.model
    assert type(model.stem) is nn.Conv2d  # first conv kept in FP32
    assert type(model.fc_cls) is nn.Linear  # final prediction layer kept in FP32
    assert isinstance(model.body[2], DAQConv2d) and isinstance(model.neck, DAQLinear)
    opt_params = {id(p) for g in runner.optim_wrapper.optimizer.param_groups for p in g['params']}
    assert {id(p) for p in model.parameters()} == opt_params
    hook = next(h for h in runner.hooks if isinstance(h, DAQHook))
    assert hook.report.skipped['stem'] == 'first conv (stem) kept in FP32'
    assert hook.report.skipped['fc_cls'] == 'final prediction layer kept in FP32'


def test_statistics_reach_the_message_hub(tmp_path):
    runner = make_runner(tmp_path, max_iters=4)
    runner.train()
    scalars = runner.message_hub.log_scalars
    for key in ('train/daq/share_gaussian', 'train/daq/clip_ratio', 'train/daq/grad_rel_error'):
        assert key in scalars, key
    share = scalars['train/daq/share_gaussian'].current()
    assert 0.0 <= share <= 1.0
    assert 0.0 < scalars['train/daq/grad_rel_error'].current() < 0.1


def test_statistics_reach_tensorboard(tmp_path):
    pytest.importorskip('tensorboard')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    vis = dict(type='Visualizer', vis_backends=[dict(type='TensorboardVisBackend')],
               name='daq_tb_test')
    runner = make_runner(tmp_path, max_iters=4, visualizer=vis, name='tb')
    runner.train()
    runner.visualizer.close()
    events = glob.glob(str(tmp_path / '*' / 'vis_data' / 'events.out.tfevents.*'))
    assert events, sorted(p.name for p in tmp_path.rglob('*'))
    acc = EventAccumulator(events[0])
    acc.Reload()
    tags = set(acc.Tags()['scalars'])
    assert {'daq/share_gaussian', 'daq/clip_ratio', 'daq/grad_rel_error'} <= tags, tags
    ratios = [e.value for e in acc.Scalars('daq/clip_ratio')]
    assert ratios and all(0.0 < r <= 1.0 for r in ratios)


def test_fp32_warmup_then_int8(tmp_path):
    hook = DAQHook(warmup_iters=3, stats_interval=0)
    runner = make_runner(tmp_path, max_iters=3, hook=hook)
    runner.train()
    assert all(not layer.quant_enabled for layer in daq_layers(runner.model).values())
    assert all(layer.quant_scheme.prev_clip is None for layer in daq_layers(runner.model).values())


def test_checkpoint_loads_into_fp32_model_and_resume_is_exact(tmp_path):
    straight = make_runner(tmp_path / 'straight', max_iters=8, name='a')
    straight.train()
    ckpt = torch.load(tmp_path / 'straight' / 'iter_8.pth', weights_only=False)
    assert 'daq_state' in ckpt and ckpt['daq_state']['neck']['prev_clips'][0].shape == (8, )
    ToyNet().load_state_dict(ckpt['state_dict'], strict=True)  # plain FP32 model, strict

    first = make_runner(tmp_path / 'split', max_iters=4, name='b')
    first.train()
    resumed = make_runner(tmp_path / 'split', max_iters=8, resume=True,
                          load_from=str(tmp_path / 'split' / 'iter_4.pth'), name='c')
    resumed.train()
    assert first.losses + resumed.losses == pytest.approx(straight.losses, rel=0, abs=0)


def test_bad_options_are_clear_errors():
    with pytest.raises(TypeError, match=r"unknown \['lamda'\]"):
        DAQHook(lamda=0.3)
    with pytest.raises(ValueError, match='layer_types must be a list from'):
        DAQHook(layer_types=['Conv2D'])
    with pytest.raises(ValueError, match='warmup_iters must be an int >= 0'):
        DAQHook(warmup_iters=-1)
    with pytest.raises(ValueError, match='filter_fn must be an importable'):
        DAQHook(filter_fn='no.such.module.fn')


def test_pattern_matching_nothing_warns(recwarn):
    DAQHook().convert(ToyNet())  # the default head patterns never warn
    assert not [w for w in recwarn if 'match no' in str(w.message)]
    with pytest.warns(UserWarning, match=r"patterns \['bodyy'\] match no"):
        DAQHook(exclude=['bodyy']).convert(ToyNet())
