"""Training-curve reading, seed grouping, bands and tools/analysis/plot_curves.py."""
import json

import numpy as np
import pytest

from mmdaq.analysis.curves import (Series, band, curve_bands, group_runs, load_scalars, match_key,
                                   run_label, smooth)
from mmdaq.testing import load_tool


def write_run(work_dir, losses, maps, timestamp='20261125_120000', iters_per_log=10):
    """A scalars.json as mmengine writes it for an epoch-based run (2 logs per epoch)."""
    vis = work_dir / timestamp / 'vis_data'
    vis.mkdir(parents=True)
    lines = []
    for i, loss in enumerate(losses):
        it = (i + 1) * iters_per_log
        lines.append(dict(lr=0.01, loss=loss, loss_cls=loss / 2, time=0.3, epoch=i // 2 + 1,
                          iter=it, step=it))
        if i % 2 == 1:
            lines.append({'coco/bbox_mAP': maps[i // 2], 'coco/bbox_mAP_50': 0.9, 'time': 0.1,
                          'step': i // 2 + 1})
    (vis / 'scalars.json').write_text(''.join(json.dumps(d) + '\n' for d in lines))
    return work_dir


def test_load_scalars_puts_train_keys_on_iterations_and_val_keys_on_epochs(tmp_path):
    run = write_run(tmp_path / 'fp32', [1.0, 0.8, 0.6, 0.5], [0.3, 0.4])
    scalars = load_scalars(str(run))
    assert scalars['loss'].x.tolist() == [10, 20, 30, 40]
    assert scalars['loss'].y.tolist() == [1.0, 0.8, 0.6, 0.5]
    assert scalars['loss'].x_label == 'iteration'
    assert scalars['coco/bbox_mAP'].x.tolist() == [1, 2]
    assert scalars['coco/bbox_mAP'].x_label == 'epoch'
    assert 'step' not in scalars and 'epoch' not in scalars
    # 'time' is logged by both kinds of line: validation's is kept apart
    assert scalars['time'].x.tolist() == [10, 20, 30, 40]
    assert scalars['val/time'].x.tolist() == [1, 2] and scalars['val/time'].x_label == 'epoch'


def test_resumed_run_joins_timestamps_and_keeps_the_later_value(tmp_path):
    write_run(tmp_path / 'r', [1.0, 0.8], [0.3], timestamp='20261125_120000')
    vis = tmp_path / 'r' / '20261125_130000' / 'vis_data'
    vis.mkdir(parents=True)
    vis.joinpath('scalars.json').write_text(
        json.dumps(dict(loss=0.7, epoch=1, iter=20, step=20)) + '\n'
        + json.dumps(dict(loss=0.4, epoch=2, iter=30, step=30)) + '\n')
    loss = load_scalars(str(tmp_path / 'r'))['loss']
    assert loss.x.tolist() == [10, 20, 30] and loss.y.tolist() == [1.0, 0.7, 0.4]


def test_missing_scalars_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match='work_dir must hold <timestamp>/vis_data/'):
        load_scalars(str(tmp_path))


def test_labels_and_key_matching():
    assert run_label('work_dirs/daq_seed3') == 'daq'
    assert run_label('work_dirs/daq-seed-12/') == 'daq'
    assert run_label('w/fp32/20261125_153023') == 'fp32'
    assert run_label('w/fp32/20261125_153023/vis_data/scalars.json') == 'fp32'
    assert run_label('w/seedless') == 'seedless'
    keys = ['loss', 'coco/bbox_mAP', 'coco/bbox_mAP_50', 'acc/top1']
    assert match_key('bbox_mAP', keys) == 'coco/bbox_mAP'
    assert match_key('top1', keys) == 'acc/top1'
    assert match_key('loss', keys) == 'loss'
    assert match_key('top5', keys) is None
    with pytest.raises(ValueError, match=r"matches \['a/x', 'b/x'\]"):
        match_key('x', ['a/x', 'b/x'])


def test_band_mean_std_and_minmax_on_common_steps():
    runs = [Series(np.array([0., 1, 2, 3]), np.array([1., 2, 3, 4]), 'iteration'),
            Series(np.array([0., 1, 2, 3]), np.array([3., 4, 5, 6]), 'iteration'),
            Series(np.array([1., 2]), np.array([0., 1]), 'iteration')]  # a shorter run
    b = band(runs[:2])
    assert b.x.tolist() == [0, 1, 2, 3] and b.runs == 2
    assert b.mean.tolist() == [2, 3, 4, 5]
    assert np.allclose(b.high - b.mean, 1.0) and np.allclose(b.mean - b.low, 1.0)
    b = band(runs, 'minmax')
    assert b.x.tolist() == [1, 2]  # only the range every run covers
    assert b.low.tolist() == [0, 1] and b.high.tolist() == [4, 5]
    shifted = Series(np.array([0.5, 2.5]), np.array([10., 30.]), 'iteration')
    b = band([runs[0], shifted])  # x values not shared: interpolated on the union
    assert b.x.tolist() == [0.5, 1, 2, 2.5]
    assert b.mean.tolist() == pytest.approx([(1.5 + 10) / 2, (2 + 15) / 2, (3 + 25) / 2,
                                             (3.5 + 30) / 2])
    with pytest.raises(ValueError, match="spread must be one of"):
        band(runs, 'iqr')


def test_smooth_is_a_trailing_moving_average():
    assert smooth(np.array([1., 3, 5, 7]), 2).tolist() == [1, 2, 4, 6]
    assert smooth(np.array([1., 3]), 1).tolist() == [1, 3]


def test_seeds_are_grouped_and_unknown_keys_are_errors(tmp_path):
    paths = [str(write_run(tmp_path / f'daq_seed{s}', [1.0 + s, 0.5 + s], [0.1 * (s + 1)]))
             for s in range(3)]
    paths.append(str(write_run(tmp_path / 'fp32', [1.0, 0.4], [0.5])))
    groups = group_runs(paths)
    assert list(groups) == ['daq', 'fp32'] and len(groups['daq']) == 3
    bands = curve_bands(groups, ['loss', 'bbox_mAP'])
    daq_map, name, x_label = bands['bbox_mAP']['daq']
    assert name == 'coco/bbox_mAP' and x_label == 'epoch'
    assert daq_map.mean[-1] == pytest.approx(0.2) and daq_map.runs == 3
    assert daq_map.high[-1] - daq_map.mean[-1] == pytest.approx(np.std([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="'top1' is not; logged: .*'coco/bbox_mAP'"):
        curve_bands(groups, ['top1'])
    assert curve_bands(groups, ['top1'], strict=False) == {}
    with pytest.raises(ValueError, match='one label per work_dir'):
        group_runs(paths, ['a'])


def test_tool_draws_one_png_and_prints_the_last_values(tmp_path, capsys):
    pytest.importorskip('matplotlib')
    paths = [str(write_run(tmp_path / f'daq_seed{s}', [1.0, 0.5 + 0.1 * s, 0.4, 0.3 + 0.1 * s],
                           [0.2, 0.3 + 0.1 * s])) for s in range(2)]
    paths.append(str(write_run(tmp_path / 'fp32', [1.0, 0.6, 0.4, 0.2], [0.3, 0.5])))
    tool = load_tool('tools/analysis/plot_curves.py')
    out = tmp_path / 'figs' / 'curves.png'
    bands = tool.main(paths + ['--out', str(out), '--title', 'demo'])
    assert sorted(bands) == ['bbox_mAP', 'loss']  # the default keys that were logged
    with open(out, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert out.stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert 'coco/bbox_mAP' in printed and 'daq' in printed
    assert bands['loss']['daq'][0].mean[-1] == pytest.approx(0.35)
    with pytest.raises(SystemExit):
        tool.main(paths + ['--smooth', '0'])
