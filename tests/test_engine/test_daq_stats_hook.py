"""DAQStatsHook on a real mmengine Runner: TensorBoard contents, idle iterations, options."""
import glob

import pytest
import torch

pytest.importorskip('mmengine')
pytest.importorskip('tensorboard')
from mmengine.hooks import Hook  # noqa: E402
from mmengine.runner import Runner  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from test_daq_hook import ToyData, ToyNet  # noqa: E402  (the same toy model and data)

from mmdaq.engine import DAQStatsHook  # noqa: E402


class CountForwardHooks(Hook):
    """Records, per iteration, how many forward hooks the model's conv carries."""
    priority = 'LOWEST'  # after DAQStatsHook.before_train_iter

    def __init__(self):
        self.counts = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.counts.append(len(runner.model.body[2]._forward_hooks))


def run(work_dir, hooks, backends=('TensorboardVisBackend', ), max_iters=4):
    torch.manual_seed(0)
    vis = dict(type='Visualizer', vis_backends=[dict(type=b) for b in backends],
               name=f'stats_{work_dir.name}')
    runner = Runner(
        model=ToyNet(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=ToyData(), sampler=dict(type='DefaultSampler', shuffle=True),
                              batch_size=8, collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=hooks, randomness=dict(seed=0), default_scope='mmengine',
        experiment_name=work_dir.name, visualizer=vis)
    runner.train()
    runner.visualizer.close()
    return runner


def read_events(work_dir):
    events = glob.glob(str(work_dir / '*' / 'vis_data' / 'events.out.tfevents.*'))
    assert events, sorted(p.name for p in work_dir.rglob('*'))
    acc = EventAccumulator(events[0], size_guidance={'histograms': 0, 'scalars': 0})
    acc.Reload()
    return acc


def test_fp32_run_records_every_layer_on_logging_iterations_only(tmp_path):
    counter = CountForwardHooks()
    run(tmp_path, [dict(type='DAQStatsHook', interval=2, max_values=64), counter])
    assert counter.counts == [0, 1, 0, 1]  # hooks only on iterations 2 and 4, removed after
    acc = read_events(tmp_path)
    scalars, histograms = set(acc.Tags()['scalars']), set(acc.Tags()['histograms'])
    for layer in ('stem', 'body.2', 'neck', 'fc_cls'):
        assert {f'daq_stats/{layer}/share_gaussian', f'daq_stats/{layer}/clip_ratio'} <= scalars
        assert {f'daq_stats/{layer}/grad', f'daq_stats/{layer}/clip_ratio',
                f'daq_stats/{layer}/frac_above_sigma'} <= histograms
    share = acc.Scalars('daq_stats/body.2/share_gaussian')
    assert [e.step for e in share] == [2, 4]
    assert all(0.0 <= e.value <= 1.0 for e in share)
    assert all(0.0 < e.value <= 1.0 for e in acc.Scalars('daq_stats/stem/clip_ratio'))
    grad = acc.Histograms('daq_stats/body.2/grad')
    assert [e.step for e in grad] == [2, 4]
    assert grad[0].histogram_value.num == 64  # max_values samples of G_Y [8, 8, 8, 8]
    assert grad[0].histogram_value.min < 0 < grad[0].histogram_value.max
    per_channel = acc.Histograms('daq_stats/body.2/frac_above_sigma')[0].histogram_value
    assert per_channel.num == 8  # one value per output channel
    assert 0.0 <= per_channel.min <= per_channel.max <= 1.0


def test_daq_layers_report_the_clip_their_scheme_applied(tmp_path):
    run(tmp_path, [dict(type='DAQHook', stats_interval=2),
                   dict(type='DAQStatsHook', interval=2, layers=r'body|neck')])
    acc = read_events(tmp_path)
    scalars = set(acc.Tags()['scalars'])
    assert 'daq_stats/body.2/clip_ratio' in scalars and 'daq_stats/neck/clip_ratio' in scalars
    assert not any(t.startswith('daq_stats/stem') for t in scalars)  # not matched by layers
    assert 'daq/share_gaussian' in scalars  # DAQHook's own model-wide scalar still arrives
    ratios = [e.value for e in acc.Scalars('daq_stats/body.2/clip_ratio')]
    assert len(ratios) == 2 and all(0.0 < r <= 1.0 + 1e-6 for r in ratios)


def test_without_tensorboard_backend_it_warns_and_stays_idle(tmp_path, capsys):
    counter = CountForwardHooks()
    run(tmp_path, [dict(type='DAQStatsHook', interval=1), counter],
        backends=('LocalVisBackend', ), max_iters=2)
    assert counter.counts == [0, 0]
    assert "no 'TensorboardVisBackend' backend" in capsys.readouterr().out
    assert not glob.glob(str(tmp_path / '*' / 'vis_data' / 'events.out.tfevents.*'))


@pytest.mark.parametrize('kwargs, match', [
    (dict(interval=0), 'interval must be an int >= 1, but got 0'),
    (dict(max_values=-1), 'max_values must be an int >= 0, but got -1'),
    (dict(layers='conv('), 'layers must be a regex'),
    (dict(threshold=1.5), r'threshold must be a number in \[0, 1\]'),
    (dict(alpha=-1.0), 'alpha must be a finite number >= 0'),
])
def test_bad_options_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DAQStatsHook(**kwargs)
