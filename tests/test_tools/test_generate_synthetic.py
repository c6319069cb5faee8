"""tools/data/generate_synthetic.py (what `make data` runs): generate, then reuse."""
from mmdaq.testing import load_tool


def test_generates_then_reuses(tmp_path, capsys):
    tool = load_tool('tools/data/generate_synthetic.py')
    out = str(tmp_path / 'shapes')
    info = tool.main(['detection', '--out', out, '--num-train', '3', '--num-val', '2'])
    assert info['generated'] and info['train']['num_images'] == 3
    assert not tool.main(['detection', '--out', out, '--num-train', '3',
                          '--num-val', '2'])['generated']
    printed = capsys.readouterr().out
    assert 'generated in' in printed and 'reused (same arguments)' in printed
    clips = tool.main(['video', '--out', str(tmp_path / 'clips'), '--num-train', '6',
                       '--num-val', '6'])
    assert clips['generated'] and clips['val']['num_clips'] == 6
