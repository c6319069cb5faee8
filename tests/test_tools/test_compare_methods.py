"""compare_methods.py: which config and options each method runs (no training here)."""
import json
import os
import os.path as osp
import re
import sys

import pytest

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
                            'tools', 'analysis'))
import compare_methods  # noqa: E402


@pytest.mark.parametrize('task', ['video', 'detection'])
def test_every_method_maps_to_an_existing_config(task):
    root = compare_methods.ROOT
    for method in ('fp32', 'daq', 'per_channel', 'per_tensor', 'ui8', 'shiftquant',
                   'zhuang_w4a4'):
        config, options = compare_methods.method_run(task, method)
        assert osp.isfile(osp.join(root, config)), (method, config)
        assert options == ([f'custom_hooks.0.method={method}']
                           if method in compare_methods.HOOK_METHODS else [])


def test_shiftquant_bit_widths():
    config, options = compare_methods.method_run('video', 'shiftquant6')
    assert config == compare_methods.method_run('video', 'shiftquant')[0]
    assert options == ['custom_hooks.0.weight_bits=6', 'custom_hooks.0.input_bits=6',
                       'custom_hooks.0.grad_bits=6']


def test_unknown_method_names_the_known_ones():
    with pytest.raises(SystemExit, match="no demo config for method 'nosuch'.*ui8"):
        compare_methods.method_run('video', 'nosuch')


def test_existing_results_are_summarized_without_training(tmp_path, monkeypatch):
    for seed, metric in ((0, 0.5), (1, 0.7)):
        run = tmp_path / 'video' / f'fp32_seed{seed}'
        run.mkdir(parents=True)
        (run / 'result.json').write_text(json.dumps(dict(metric=metric, seconds=10.0)))
    monkeypatch.setattr(compare_methods, 'generate_data', lambda *a: None)
    monkeypatch.setattr(compare_methods, 'train', lambda *a: pytest.fail('must not train'))
    results = compare_methods.main(['video', '--methods', 'fp32', '--seeds', '0', '1',
                                    '--work-dir', str(tmp_path)])
    assert results['fp32']['mean'] == pytest.approx(0.6)
    assert results['fp32']['std'] == pytest.approx(0.1414, abs=1e-3)
    assert (tmp_path / 'video' / 'summary.md').read_text().startswith('| method |')


def test_no_train_summarizes_what_exists(tmp_path):
    run = tmp_path / 'video' / 'daq_seed0'
    run.mkdir(parents=True)
    (run / 'result.json').write_text(json.dumps(dict(metric=0.9, seconds=5.0)))
    results = compare_methods.main(['video', '--methods', 'daq', 'ui8', '--seeds', '0', '1',
                                    '--work-dir', str(tmp_path), '--no-train'])
    assert list(results) == ['daq'] and results['daq']['n'] == 1


def _summary(path, task, seeds, values, runs=None):
    result = dict(mean=0.0, values=values, seconds=7.0)
    if runs is not None:
        result['runs'] = runs
    path.write_text(json.dumps(dict(task=task, seeds=seeds, results=dict(daq=result))))
    return str(path)


def test_merge_adds_the_seeds_of_an_earlier_summary(tmp_path):
    run = tmp_path / 'detection' / 'daq_seed1'
    run.mkdir(parents=True)
    (run / 'result.json').write_text(json.dumps(dict(metric=0.6, seconds=5.0, code='abc')))
    old = _summary(tmp_path / 'old.json', 'detection', [0], [0.5])
    results = compare_methods.main(['detection', '--methods', 'daq', '--seeds', '1',
                                    '--work-dir', str(tmp_path), '--no-train', '--merge', old])
    assert results['daq']['values'] == [0.5, 0.6] and results['daq']['n'] == 2
    assert [r['seed'] for r in results['daq']['runs']] == [0, 1]
    assert results['daq']['runs'][0]['source'] == old
    summary = json.loads((tmp_path / 'detection' / 'summary.json').read_text())
    assert summary['seeds'] == [0, 1]
    # The merged summary can be merged again: its runs carry their seeds.
    again = compare_methods.earlier_runs(str(tmp_path / 'detection' / 'summary.json'),
                                         'detection')
    assert sorted(again['daq']) == [0, 1]


def test_merge_refuses_ambiguous_or_overlapping_runs(tmp_path):
    gappy = _summary(tmp_path / 'gappy.json', 'detection', [0, 1], [0.5])
    with pytest.raises(SystemExit, match='which seed each belongs to is not recorded'):
        compare_methods.earlier_runs(gappy, 'detection')
    video = _summary(tmp_path / 'video.json', 'video', [0], [0.5])
    with pytest.raises(SystemExit, match="is a 'video' summary"):
        compare_methods.earlier_runs(video, 'detection')
    old = _summary(tmp_path / 'old.json', 'detection', [0], [0.5])
    run = tmp_path / 'detection' / 'daq_seed0'
    run.mkdir(parents=True)
    (run / 'result.json').write_text(json.dumps(dict(metric=0.6, seconds=5.0)))
    with pytest.raises(SystemExit, match='seed 0 of daq is in .* and in .*daq_seed0'):
        compare_methods.main(['detection', '--methods', 'daq', '--seeds', '0', '--no-train',
                              '--work-dir', str(tmp_path), '--merge', old])


def test_merged_runs_are_not_trained_again(tmp_path, monkeypatch):
    """New methods at seed 0 next to the merged seed-0 runs of others: one table."""
    old = _summary(tmp_path / 'old.json', 'detection', [0], [0.5])
    run = tmp_path / 'detection' / 'ui8_seed0'
    run.mkdir(parents=True)
    (run / 'result.json').write_text(json.dumps(dict(metric=0.4, seconds=5.0)))
    monkeypatch.setattr(compare_methods, 'generate_data', lambda *a: None)
    monkeypatch.setattr(compare_methods, 'train', lambda *a: pytest.fail('must not train'))
    results = compare_methods.main(['detection', '--methods', 'daq', 'ui8', '--seeds', '0',
                                    '--work-dir', str(tmp_path), '--merge', old])
    assert results['daq']['values'] == [0.5] and results['daq']['runs'][0]['source'] == old
    assert results['ui8']['values'] == [0.4]


def test_a_run_records_the_code_it_started_from(tmp_path, monkeypatch):
    """The commit is read before training (a run can outlast several commits)."""
    calls = []
    monkeypatch.setattr(compare_methods, 'generate_data', lambda *a: None)
    monkeypatch.setattr(compare_methods, 'code_version', lambda: calls.append('code') or 'abc')

    def train(config, work_dir, extra):
        calls.append('train')
        os.makedirs(work_dir)
        return 3.0

    monkeypatch.setattr(compare_methods, 'train', train)
    monkeypatch.setattr(compare_methods, 'final_metric', lambda *a: 0.5)
    compare_methods.main(['video', '--methods', 'fp32', '--seeds', '0', '--work-dir',
                          str(tmp_path)])
    assert calls == ['code', 'train']
    result = json.loads((tmp_path / 'video' / 'fp32_seed0' / 'result.json').read_text())
    assert result['code'] == 'abc' and result['metric'] == 0.5


def test_code_version_names_a_commit():
    assert re.fullmatch(r'[0-9a-f]{7,}(-dirty)?|unknown', compare_methods.code_version())


def test_hook_options_after_a_colon():
    config, options = compare_methods.method_run('detection', 'daq:forward=fp32,weight_scale=x')
    assert config == compare_methods.method_run('detection', 'daq')[0]
    assert options == ['custom_hooks.0.method=daq', 'custom_hooks.0.forward=fp32',
                       'custom_hooks.0.weight_scale=x']
    assert compare_methods.run_name('daq:forward=fp32') == 'daq_forward_fp32'
    with pytest.raises(SystemExit, match="options after \":\" are for the hook methods"):
        compare_methods.method_run('detection', 'ui8:a=1')
    with pytest.raises(SystemExit, match="hook options must be key=value, but got 'forward'"):
        compare_methods.method_run('detection', 'daq:forward')


def test_video_finetune_runs_the_finetune_twins():
    fp32, _ = compare_methods.method_run('video', 'fp32', finetune=True)
    daq, options = compare_methods.method_run('video', 'daq:grad_bits=4', finetune=True)
    assert fp32 == 'configs/demo/tsn_r18_synthetic_clips_finetune.py'
    assert daq == 'configs/demo/tsn_r18_daq_synthetic_clips_finetune.py'
    assert options == ['custom_hooks.0.method=daq', 'custom_hooks.0.grad_bits=4']


def test_finetune_runs_the_finetune_twins():
    root = compare_methods.ROOT
    fp32, _ = compare_methods.method_run('detection', 'fp32', finetune=True)
    daq, options = compare_methods.method_run('detection', 'per_tensor', finetune=True)
    assert fp32.endswith('_finetune.py') and daq.endswith('_finetune.py')
    assert osp.isfile(osp.join(root, fp32)) and osp.isfile(osp.join(root, daq))
    assert options == ['custom_hooks.0.method=per_tensor']
    assert compare_methods.method_run('detection', 'ui8', finetune=True) == (
        daq, ['custom_hooks.0.method=ui8'])
    assert compare_methods.method_run('detection', 'shiftquant:grad_bits=4', finetune=True) == (
        daq, ['custom_hooks.0.method=shiftquant', 'custom_hooks.0.grad_bits=4'])
    with pytest.raises(SystemExit, match='--finetune-from runs fp32 and the hook methods'):
        compare_methods.method_run('detection', 'zhuang_w4a4', finetune=True)


def test_finetune_passes_the_checkpoint_and_pairs_with_fp32(tmp_path, monkeypatch):
    checkpoint = tmp_path / 'base.pth'
    checkpoint.write_bytes(b'x')
    seen = {}
    metrics = {('fp32', 0): 0.50, ('fp32', 1): 0.60, ('daq', 0): 0.49, ('daq', 1): 0.57}

    def train(config, work_dir, extra):
        os.makedirs(work_dir)
        seen[osp.basename(work_dir)] = extra
        return 1.0

    monkeypatch.setattr(compare_methods, 'generate_data', lambda *a: None)
    monkeypatch.setattr(compare_methods, 'train', train)
    monkeypatch.setattr(compare_methods, 'final_metric', lambda work_dir, key: metrics[
        (osp.basename(work_dir).split('_')[0], int(work_dir[-1]))])
    results = compare_methods.main(['detection', '--methods', 'fp32', 'daq', '--seeds', '0', '1',
                                    '--work-dir', str(tmp_path), '--finetune-from',
                                    str(checkpoint)])
    assert f'load_from={checkpoint}' in seen['daq_seed1']
    assert 'randomness.seed=1' in seen['daq_seed1']
    paired = results['daq']['vs_fp32']
    assert paired['values'] == pytest.approx([-0.01, -0.03])
    assert paired['mean'] == pytest.approx(-0.02) and paired['se'] == pytest.approx(0.01)
    summary = json.loads((tmp_path / 'detection_finetune' / 'summary.json').read_text())
    assert summary['protocol'] == 'finetune'
    assert '-0.0200 (0.0100, 2)' in (tmp_path / 'detection_finetune' / 'summary.md').read_text()
    with pytest.raises(SystemExit, match='holds finetune runs, not scratch runs'):
        compare_methods.earlier_runs(str(tmp_path / 'detection_finetune' / 'summary.json'),
                                     'detection')


def test_finetune_needs_an_existing_checkpoint(tmp_path):
    with pytest.raises(SystemExit, match='--finetune-from must be a checkpoint file'):
        compare_methods.main(['detection', '--finetune-from', str(tmp_path / 'none.pth')])
