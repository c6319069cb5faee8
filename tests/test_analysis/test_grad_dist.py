"""Gradient-distribution analysis: capture, classification, summary, figures and the tool."""
import json
import os.path as osp
import struct

import pytest
import torch
from torch import nn

from mmdaq.analysis.grad_dist import analyse_gradients, daq_channel_choice, spread_evenly, summarise
from mmdaq.quantization.schemes import DAQScheme
from mmdaq.testing import load_tool

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


class TinyNet(nn.Module):

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.frozen = nn.Conv2d(8, 8, 1)  # its output never reaches the loss
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        f = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        self.frozen(f.detach())
        return self.fc(f.mean((2, 3)))


def _batches(count, n=4):
    gen = torch.Generator().manual_seed(0)
    return [(torch.randn(n, 3, 16, 16, generator=gen), torch.randint(0, 4, (n, ), generator=gen))
            for _ in range(count)]


def _loss(model, batch):
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


def _png_size(path):
    with open(path, 'rb') as f:
        head = f.read(24)
    assert head[:8] == PNG_MAGIC, path
    return struct.unpack('>II', head[16:24])  # IHDR width, height


def test_classifier_tells_gaussian_from_long_tailed_channels():
    torch.manual_seed(0)
    m = 20000
    gauss = torch.randn(3, m)
    laplace = torch.distributions.Laplace(0.0, 1.0).sample((3, m))
    spiky = torch.randn(3, m) * 0.01
    spiky[:, :200] = torch.randn(3, 200) * 3  # 1% large values on a narrow spike
    g = torch.cat([gauss, laplace, spiky])  # [9, M] channels
    g = g.t().reshape(m // 100, 100, 9).permute(0, 2, 1)  # G_Y as Tensor[N, C, L]
    choice = daq_channel_choice(g, 1, DAQScheme())
    assert choice.is_gaussian.tolist() == [True] * 3 + [False] * 6
    assert torch.allclose(choice.frac_above_sigma[:3], torch.tensor(0.317), atol=0.01)
    assert torch.allclose(choice.frac_above_sigma[3:6], torch.tensor(0.243), atol=0.01)
    assert (choice.frac_above_sigma[6:] < 0.05).all()
    assert torch.equal(choice.clip[:3], choice.abs_max[:3])  # Gaussian: abs-max, as derived
    assert (choice.clip_ratio <= 1.0).all()
    # A large-sample Laplace channel under a weak magnitude weight is clipped (docs, sec. 3.6).
    weak = daq_channel_choice(g, 1, DAQScheme(alpha=0.0))
    assert (weak.clip_ratio[3:6] < 0.9).all() and (weak.clip_ratio[:3] == 1.0).all()


def test_spread_evenly():
    assert spread_evenly(list('abcdefg'), 3) == ['a', 'd', 'g']
    assert spread_evenly(list('ab'), 4) == ['a', 'b']
    assert spread_evenly(list('abc'), 1) == ['b']
    assert spread_evenly(list('abc'), 0) == []


def test_analyse_captures_every_call_and_keeps_only_the_asked_layers():
    torch.manual_seed(0)
    model = TinyNet()
    layers = analyse_gradients(model, _batches(3), _loss, keep=2)
    assert list(layers) == ['conv1', 'conv2', 'fc']  # 'frozen' gets no gradient
    assert [len(v.choices) for v in layers.values()] == [3, 3, 3]
    assert [len(v.gradients) for v in layers.values()] == [3, 0, 3]  # first and last kept
    assert layers['conv1'].gradients[0].shape == (4, 8, 16, 16)
    assert layers['fc'].channel_dim == -1 and layers['fc'].gradients[0].shape == (4, 4)
    assert all(p.grad is None for p in model.parameters())  # dropped after each backward
    assert not any(m._forward_hooks for m in model.modules())  # the model is left as it was
    summary = summarise(layers)
    assert summary['conv2']['channels'] == 8 and summary['conv2']['calls'] == 3
    for values in summary.values():
        assert 0.0 <= values['share_gaussian'] <= 1.0
        assert 0.0 < values['mean_clip_ratio'] <= 1.0


def test_summary_counts_channel_classes():
    model = TinyNet()
    layers = analyse_gradients(model, _batches(1), _loss, pattern='conv2', keep=0)
    choice = layers['conv2'].choices[0]
    expected = float(choice.is_gaussian.float().mean())
    assert summarise(layers)['conv2']['share_gaussian'] == pytest.approx(expected)
    assert layers['conv2'].gradients == []


def test_analyse_errors_name_the_bad_input():
    with pytest.raises(ValueError, match="pattern must match at least one .* got 'backbone'"):
        analyse_gradients(TinyNet(), _batches(1), _loss, pattern='backbone')
    with pytest.raises(ValueError, match="none of the 1 layers matching 'frozen' got one"):
        analyse_gradients(TinyNet(), _batches(1), _loss, pattern='frozen')
    with pytest.raises(ValueError, match='batches must yield at least one batch'):
        analyse_gradients(TinyNet(), [], _loss)
    with pytest.raises(ValueError, match='long_tail_rule must be one of'):
        analyse_gradients(TinyNet(), _batches(1), _loss, long_tail_rule='median')


def test_figures_are_real_pngs(tmp_path):
    pytest.importorskip('matplotlib')
    from mmdaq.analysis.grad_plots import plot_overview, render_figures
    torch.manual_seed(0)
    layers = analyse_gradients(TinyNet(), _batches(2), _loss, keep=-1)
    figures = render_figures(layers, str(tmp_path))
    assert sorted(figures) == ['conv1', 'conv2', 'fc']
    for paths in figures.values():
        assert [osp.basename(p).split('_', 1)[1] for p in paths] == [
            'samples_vs_channels.png', 'channel_types.png', 'clip_objective.png']
        for path in paths:
            width, height = _png_size(path)
            assert width >= 700 and height >= 350
            assert 15_000 < osp.getsize(path) < 300_000  # drawn content, small enough for docs
    overview = plot_overview(summarise(layers), str(tmp_path / 'overview.png'))
    assert _png_size(overview)[0] >= 600


def test_tool_on_the_video_demo_config(tmp_path, monkeypatch):
    pytest.importorskip('mmaction')
    pytest.importorskip('matplotlib')
    if not osp.isdir(osp.join(ROOT, 'data', 'synthetic_clips')):
        pytest.skip('synthetic clips not generated (tools/data/generate_synthetic.py video)')
    monkeypatch.chdir(ROOT)  # the config's data paths are relative to the repository
    out = tmp_path / 'tsn'
    tool = load_tool('tools/analysis/grad_dist.py')
    summary = tool.main(['configs/demo/tsn_r18_synthetic_clips.py', '--iters', '1', '--batch', '1',
                         '--layers', r'layer4\.1\.conv|fc_cls', '--plot', '2', '--out', str(out)])
    with open(out / 'summary.json') as f:
        written = json.load(f)
    assert written == json.loads(json.dumps(summary))
    assert list(written['layers']) == ['backbone.layer4.1.conv1.conv',
                                       'backbone.layer4.1.conv2.conv', 'cls_head.fc_cls']
    assert written['task'] == 'video' and written['iters'] == 1
    conv = written['layers']['backbone.layer4.1.conv1.conv']
    assert conv['channels'] == 512 and conv['type'] == 'Conv2d'
    assert 0.0 <= conv['share_gaussian'] <= 1.0 and 0.0 < conv['mean_clip_ratio'] <= 1.0
    drawn = [n for n, v in written['layers'].items() if 'figures' in v]
    assert drawn == ['backbone.layer4.1.conv1.conv', 'cls_head.fc_cls']  # first and last
    for name in drawn:
        for fig in written['layers'][name]['figures']:
            assert _png_size(out / fig)[0] > 0
    assert _png_size(out / 'overview.png')[0] > 0


def test_tool_rejects_bad_arguments(tmp_path, capsys):
    tool = load_tool('tools/analysis/grad_dist.py')
    with pytest.raises(SystemExit):
        tool.parse_args(['cfg.py', '--checkpoint', str(tmp_path / 'missing.pth')])
    assert '--checkpoint must be an existing file' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.parse_args(['cfg.py', '--iters', '0'])
    assert '--iters must be >= 1, but got 0' in capsys.readouterr().err


def test_all_zero_gradient_still_gives_figures(tmp_path):
    pytest.importorskip('matplotlib')
    from mmdaq.analysis.grad_plots import render_figures

    class Dead(nn.Module):

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            return self.conv(x) * 0.0  # G_Y of conv is exactly zero

    layers = analyse_gradients(Dead(), [torch.randn(2, 3, 4, 4)], lambda m, x: m(x).sum())
    assert summarise(layers)['conv']['share_gaussian'] == 0.0
    for path in render_figures(layers, str(tmp_path))['conv']:
        assert _png_size(path)[0] > 0
