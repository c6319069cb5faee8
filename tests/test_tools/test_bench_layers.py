"""tools/benchmarks/bench_layers.py: DAQ kernels side by side, the measured choice recorded."""
import json

import pytest

from mmdaq.testing import load_tool


@pytest.mark.needs_ext
def test_layer_table_has_a_column_per_daq_kernel(tmp_path, capsys):
    out = tmp_path / 'bench.json'
    bench = load_tool('tools/benchmarks/bench_layers.py')
    bench.main(['--device', 'cpu', '--limit', '2', '--size', '32', '--batch', '1', '--reps', '1',
                '--warmup', '0', '--daq-kernels', 'gemm', 'auto', '--json', str(out)])
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
        load_tool('tools/benchmarks/bench_layers.py').main(['--daq-kernels', 'fastest'])
