"""tools/analysis/quant_error.py end to end on the smallest stock model input."""
import pytest

from mmdaq.testing import load_tool

pytest.importorskip('mmaction')


def _tiny_i3d_summary(monkeypatch, *methods):
    """The tool's summary of I3D on 32 px clips, two iterations."""
    tool = load_tool('tools/analysis/quant_error.py')
    monkeypatch.setitem(tool.MODELS, 'i3d', (tool.MODELS['i3d'][0], dict(size=32, num_frames=8)))
    return tool.main(['--models', 'i3d', '--iters', '2', '--methods', *methods])['i3d']


def test_table_for_i3d(capsys, monkeypatch):
    summary = _tiny_i3d_summary(monkeypatch, 'per_tensor', 'per_channel', 'daq')
    out = capsys.readouterr().out
    assert 'i3d: median over layers' in out
    assert 'command: python tools/analysis/quant_error.py' in out
    assert summary['per_channel']['mwe'] == pytest.approx(1.0)  # the reference of MWE rel
    assert summary['per_tensor']['mwe'] > 1.0  # one scale for all channels is worse
    assert summary['daq']['mwe'] <= 1.01  # never clearly worse than abs-max under its objective
    assert summary['per_channel']['gw_rel_mse'] < summary['per_tensor']['gw_rel_mse']
    assert 0.99 < summary['daq']['gw_cos'] <= 1.0
    assert 0.0 <= summary['daq']['share_gaussian'] <= 1.0
    assert summary['daq']['layers'] > 40


def test_bad_method_spec_fails_early():
    with pytest.raises((TypeError, ValueError)):
        load_tool('tools/analysis/quant_error.py').parse_method('daq:no_such_option=1')


def test_shiftquant_rows_show_no_clip_error(capsys, monkeypatch):
    summary = _tiny_i3d_summary(monkeypatch, 'per_channel',
                                'shiftquant:weight_bits=8,input_bits=8,grad_bits=8', 'shiftquant')
    sq8 = summary['shiftquant:weight_bits=8,input_bits=8,grad_bits=8']
    assert sq8['mwe'] != sq8['mwe'] and sq8['mwe_wins'] != sq8['mwe_wins']  # NaN: no clip
    assert sq8['gw_rel_mse'] < summary['shiftquant']['gw_rel_mse']
    row = [line for line in capsys.readouterr().out.splitlines()
           if line.startswith('shiftquant ') or line.startswith('shiftquant  ')]
    assert row and row[0].split()[1:4] == ['-', '-', '-']
