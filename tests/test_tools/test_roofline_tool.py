"""tools/benchmarks/roofline.py end to end on two tiny shapes, with a fake measured run."""
import json

from mmdaq.testing import load_tool


def test_predicts_compares_and_fits(tmp_path, capsys):
    tool = load_tool('tools/benchmarks/roofline.py')
    # A measured run naming the same two shapes (labels as bench_layers writes them).
    first = tool.main(['--batch', '1', '--size', '32', '--limit', '2', '--devices', 'h100'])
    labels = [row['label'] for row in first['rows']]
    measured = dict(device='NVIDIA H100 (fake)', torch='x', layers=[
        dict(label=label, fp32=dict(fwd_bwd=1e-3),
             speedup=dict(bf16=dict(fwd_bwd=2.0), daq=dict(fwd_bwd=0.5))) for label in labels])
    path = tmp_path / 'measured.json'
    path.write_text(json.dumps(measured))
    out = tmp_path / 'pred.json'
    tool.main(['--batch', '1', '--size', '32', '--limit', '2', '--devices', 'h100', '--measured',
               str(path), '--json', str(out)])
    printed = capsys.readouterr().out
    assert 'predicted / measured bf16 ratio over 2 shapes' in printed
    assert 'fitted to the measured run: FP32 GEMMs at' in printed
    rows = json.loads(out.read_text())['rows']
    assert [r['label'] for r in rows] == labels
    assert all(r['traced_launches'] > 8 and r['traced_syncs'] == 0 for r in rows)
