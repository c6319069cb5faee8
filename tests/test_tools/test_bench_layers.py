"""tools/benchmarks/bench_layers.py: DAQ kernels side by side, the measured choice recorded."""
import importlib.util
import json
import os.path as osp

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _bench_module():
    spec = importlib.util.spec_from_file_location(
        'bench_layers', osp.join(ROOT, 'tools', 'benchmarks', 'bench_layers.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.needs_ext
def test_layer_table_has_a_column_per_daq_kernel(tmp_path, capsys):
    out = tmp_path / 'bench.json'
    _bench_module().main(['--device', 'cpu', '--limit', '2', '--size', '32', '--batch', '1',
                          '--reps', '1', '--warmup', '0', '--daq-kernels', 'gemm', 'auto',
                          '--json', str(out)])
    printed = capsys.readouterr().out
    assert 'daq[gemm] x' in printed and 'daq[auto] x' in printed
    rows = json.loads(out.read_text())['layers']
    assert len(rows) == 2
    for row in rows:
        for label in ('fp32', 'bf16', 'daq[gemm]', 'daq[auto]'):
            assert row[label]['fwd_bwd'] > 0
        assert set(row['auto_chose'].split('+')) <= {'gemm', 'onednn', '-'}
        assert row['daq[gemm]']['saved_bytes'] == row['daq[auto]']['saved_bytes']


def test_unknown_kernel_is_refused():
    with pytest.raises(SystemExit):
        _bench_module().main(['--daq-kernels', 'fastest'])
