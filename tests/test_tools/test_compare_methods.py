"""compare_methods.py: which config and options each method runs (no training here)."""
import json
import os.path as osp
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
