"""Figures of the gradient distributions found by :func:`.grad_dist.analyse_gradients`.

Per layer (from the G_Y of the first call of the last iteration, unless said otherwise):

- ``<layer>_samples_vs_channels.png``: G_Y seen per sample vs per output channel, each
  normalised by its own RMS sigma, and ``P(|g| > sigma)`` over all samples and all channels
  (the paper's Fig. 1 observation: samples look alike, channels do not);
- ``<layer>_channel_types.png``: every channel's ``P(|g| > sigma)`` against its clip ratio,
  then channel histograms coloured by DAQ's class with the chosen clip drawn on them;
- ``<layer>_clip_objective.png``: the magnitude-weighted error against the clip for a few
  channels (the histogram model DAQ minimises, and the measured error), with DAQ's choice.

Plus ``overview.png``: share of Gaussian channels and mean clip ratio of every analysed layer.
Matplotlib is used through :class:`matplotlib.figure.Figure` (Agg), without pyplot, so the
global backend is left alone.
"""
import os.path as osp
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ..quantization.clipping import magnitude_weighted_error
from ..quantization.distribution import channel_major
from ..quantization.histogram_clip import objective_curve
from ..quantization.schemes import DAQScheme
from .grad_dist import LayerGradients, spread_evenly

GAUSSIAN_COLOR = 'tab:blue'
LONG_TAIL_COLOR = 'tab:red'
_P_GAUSS = 0.3173  # P(|g| > sigma) of a zero-mean Gaussian
_P_LAPLACE = 0.2431  # ... of a Laplace law
_SIGMA_RANGE = 12.0  # the normalised histograms cover [-12 sigma, 12 sigma]


def _figure(width: float, height: float):
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), dpi=100, layout='constrained')


def _rms_normalised(rows: Tensor) -> List[np.ndarray]:
    """Each row of Tensor[R, M] divided by its RMS (rows must not be all zero)."""
    rms = rows.float().square().mean(dim=1, keepdim=True).sqrt()  # [R, 1]
    return list((rows / rms).numpy())


def _frac_above_rms(rows: Tensor) -> np.ndarray:
    """``P(|g| > sigma)`` of every row of Tensor[R, M] (sigma = RMS), as the classifier does."""
    rms = rows.float().square().mean(dim=1, keepdim=True).sqrt()  # [R, 1]
    return (rows.abs() > rms).float().mean(dim=1).numpy()


def _channel_order(frac: Tensor, abs_max: Tensor) -> List[int]:
    """Non-zero channels sorted from the most long-tailed to the most bell-shaped."""
    ok = (abs_max > 0) & torch.isfinite(frac)
    idx = torch.nonzero(ok).flatten()
    return idx[torch.argsort(frac[idx])].tolist()


def _no_gradient_figure(layer: LayerGradients, path: str, what: str) -> Optional[str]:
    """Write a figure saying G_Y was all zero (or not finite) and return ``path``; else None."""
    choice = layer.first_choices[-1]
    if bool(((choice.abs_max > 0) & torch.isfinite(choice.abs_max)).any()):
        return None
    fig = _figure(7.5, 3)
    ax = fig.subplots()
    ax.set_axis_off()
    ax.text(0.5, 0.5, f'{layer.name}: G_Y of the last iteration is zero in every channel\n'
            f'(shape {list(layer.gradients[-1].shape)}): no {what} to draw', ha='center',
            va='center', transform=ax.transAxes)
    fig.savefig(path)
    return path


def plot_samples_vs_channels(layer: LayerGradients, path: str, threshold: float = 0.3,
                             curves: int = 4) -> str:
    """Normalised G_Y histograms of a few samples and a few channels; ``P(|g| > sigma)`` spread.

    Samples are rows of the first dim of G_Y, taken from every kept iteration.

    Args:
        layer (LayerGradients): With kept gradients.
        path (str): PNG file to write.
        threshold (float): lambda, drawn on the spread panel. Defaults to 0.3.
        curves (int): Samples and channels drawn. Defaults to 4.

    Returns:
        str: ``path``.
    """
    if _no_gradient_figure(layer, path, 'distribution'):
        return path
    sample_rows = torch.cat([g.reshape(g.shape[0], -1) for g in layer.gradients])  # [N, C*S]
    g_cm = channel_major(layer.gradients[-1], layer.channel_dim)  # [C_out, M]
    choice = layer.first_choices[-1]
    order = _channel_order(choice.frac_above_sigma, choice.abs_max)
    bins = np.linspace(-_SIGMA_RANGE, _SIGMA_RANGE, 97)
    fig = _figure(13, 3.8)
    axes = fig.subplots(1, 3)
    nonzero = torch.nonzero(sample_rows.abs().amax(dim=1) > 0).flatten().tolist()
    picked_samples = spread_evenly(nonzero, curves)
    sample_frac = _frac_above_rms(sample_rows[nonzero])
    frac_of = dict(zip(nonzero, sample_frac))
    for i, values in zip(picked_samples, _rms_normalised(sample_rows[picked_samples])):
        axes[0].hist(values, bins=bins, density=True, histtype='step', lw=1.3,
                     label=f'sample {i}: P={frac_of[i]:.2f}')
    axes[0].set_title(f'per sample ({sample_rows.shape[0]} in all)')
    picked = spread_evenly(order, curves)
    for c, values in zip(picked, _rms_normalised(g_cm[picked])):
        color = GAUSSIAN_COLOR if choice.is_gaussian[c] else LONG_TAIL_COLOR
        style = '-' if choice.is_gaussian[c] else '--'
        axes[1].hist(values, bins=bins, density=True, histtype='step', lw=1.3, ls=style,
                     label=f'channel {c}: P={float(choice.frac_above_sigma[c]):.2f}',
                     color=color if len(picked) <= 2 else None)
    axes[1].set_title(f'per output channel ({g_cm.shape[0]} in all)')
    for ax in axes[:2]:
        ax.set_yscale('log')
        ax.set_xlabel('g / sigma (sigma = RMS of the sample or channel)')
        ax.set_ylabel('density')
        ax.legend(fontsize=7, loc='upper right')
    frac = choice.frac_above_sigma[order].numpy()
    edges = np.linspace(0.0, 0.5, 51)
    axes[2].hist(sample_frac, bins=edges, density=True, alpha=0.6, color='tab:gray',
                 label=f'{len(sample_frac)} samples')
    axes[2].hist(frac, bins=edges, density=True, alpha=0.6, color='tab:purple',
                 label=f'{len(frac)} channels')
    axes[2].axvline(threshold, color='k', lw=1.2, label=f'lambda = {threshold}')
    axes[2].axvline(_P_GAUSS, color=GAUSSIAN_COLOR, ls=':', lw=1, label='Gaussian (0.317)')
    axes[2].axvline(_P_LAPLACE, color=LONG_TAIL_COLOR, ls=':', lw=1, label='Laplace (0.243)')
    axes[2].set_xlabel('P(|g| > sigma)')
    axes[2].set_ylabel('density')
    axes[2].set_title('spread of P(|g| > sigma)')
    axes[2].legend(fontsize=7)
    fig.suptitle(f'{layer.name} ({layer.layer_type}): G_Y per sample vs per channel')
    fig.savefig(path)
    return path


def _histogram_channels(choice, count: int) -> List[int]:
    """Channels to draw: the most clipped long-tailed ones and the most bell-shaped ones."""
    ok = (choice.abs_max > 0) & torch.isfinite(choice.clip_ratio)
    tail = torch.nonzero(ok & ~choice.is_gaussian).flatten()
    gauss = torch.nonzero(ok & choice.is_gaussian).flatten()
    tail = tail[torch.argsort(choice.clip_ratio[tail])].tolist()  # most clipped first
    gauss = gauss[torch.argsort(choice.frac_above_sigma[gauss], descending=True)].tolist()
    half = (count + 1) // 2
    n_tail = min(len(tail), max(half, count - len(gauss)))
    return tail[:n_tail] + gauss[:count - n_tail]


def plot_channel_types(layer: LayerGradients, path: str, threshold: float = 0.3,
                       channels: int = 11) -> str:
    """All channels' class and clip ratio, and histograms of a few with their clip drawn.

    Args:
        layer (LayerGradients): With kept gradients.
        path (str): PNG file to write.
        threshold (float): lambda, drawn on the scatter panel. Defaults to 0.3.
        channels (int): Channel histograms drawn (the grid has ``channels + 1`` panels).
            Defaults to 11.

    Returns:
        str: ``path``.
    """
    if _no_gradient_figure(layer, path, 'channel histogram'):
        return path
    g_cm = channel_major(layer.gradients[-1], layer.channel_dim)  # [C_out, M]
    choice = layer.first_choices[-1]
    ratio = choice.clip_ratio
    picked = _histogram_channels(choice, channels)
    cols = 4
    rows = (len(picked) + 1 + cols - 1) // cols
    fig = _figure(3.2 * cols, 2.6 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    gauss = choice.is_gaussian
    ax = axes[0]
    for mask, color, label in ((gauss, GAUSSIAN_COLOR, 'Gaussian'),
                               (~gauss, LONG_TAIL_COLOR, 'inverted-T')):
        ax.scatter(choice.frac_above_sigma[mask].numpy(), ratio[mask].numpy(), s=8,
                   color=color, label=f'{label} ({int(mask.sum())})')
    ax.axvline(threshold, color='k', lw=1)
    ax.set_xlabel('P(|g| > sigma)')
    ax.set_ylabel('clip / |g|max')
    ax.set_ylim(0, 1.05)
    ax.set_title(f'all {g_cm.shape[0]} channels, {g_cm.shape[1]} values each', fontsize=9)
    ax.legend(fontsize=7, loc='lower right')
    bins = np.linspace(-1.0, 1.0, 81)
    for ax, c in zip(axes[1:], picked):
        is_gauss = bool(gauss[c])
        values = (g_cm[c] / choice.abs_max[c]).numpy()
        ax.hist(values, bins=bins, color=GAUSSIAN_COLOR if is_gauss else LONG_TAIL_COLOR)
        r = float(ratio[c])
        for x in (-r, r):
            ax.axvline(x, color='k', ls='--', lw=1)
        ax.set_yscale('log')
        kind = 'Gaussian' if is_gauss else 'inverted-T'
        ax.set_title(f'ch {c} {kind}: P={float(choice.frac_above_sigma[c]):.3f}, clip {r:.2f}',
                     fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[1 + len(picked):]:
        ax.set_axis_off()
    fig.supxlabel('g / |g|max of the channel (dashed: DAQ clip)', fontsize=9)
    fig.suptitle(f'{layer.name} ({layer.layer_type}): channel classes and clips '
                 f'(blue Gaussian, red inverted-T)')
    fig.savefig(path)
    return path


def _objective_channels(choice) -> List[int]:
    """The most clipped and a median long-tailed channel, and the most bell-shaped one."""
    picked = _histogram_channels(choice, 10**9)
    tail = [c for c in picked if not choice.is_gaussian[c]]
    gauss = [c for c in picked if choice.is_gaussian[c]]
    out = tail[:1] + ([tail[len(tail) // 2]] if len(tail) > 2 else []) + gauss[:1]
    return out or picked[:1]


def plot_clip_objective(layer: LayerGradients, path: str, alpha: float = 3.0,
                        num_bits: int = 8) -> str:
    """Magnitude-weighted error against the clip ratio for a few channels, DAQ's choice marked.

    The line is the histogram model DAQ minimises (:func:`~mmdaq.quantization.histogram_clip.
    objective_curve`, on the scheme's own bins); the dots are the measured error of a real
    quantize-dequantize (:func:`~mmdaq.quantization.magnitude_weighted_error`). Both are
    relative to the error of the abs-max clip (ratio 1).

    Args:
        layer (LayerGradients): With kept gradients.
        path (str): PNG file to write.
        alpha (float): Magnitude weight exponent (the scheme's). Defaults to 3.0.
        num_bits (int): Bit width. Defaults to 8.

    Returns:
        str: ``path``.
    """
    if _no_gradient_figure(layer, path, 'error curve'):
        return path
    g_cm = channel_major(layer.gradients[-1], layer.channel_dim)  # [C_out, M]
    choice = layer.first_choices[-1]
    picked = _objective_channels(choice)
    bins = min(DAQScheme.num_bins, max(64, g_cm.shape[1]))  # as DAQScheme picks them
    ratios, energy = objective_curve(g_cm[picked], alpha, bins, num_bits)  # [B], [K, B]
    measured_at = torch.linspace(0.02, 1.0, 50)
    rows = g_cm[picked]  # [K, M]
    measured = torch.stack([magnitude_weighted_error(rows, u * choice.abs_max[picked], alpha,
                                                     num_bits) for u in measured_at], dim=1)
    # A channel of a value or two is exact at abs-max (error 0): nothing to draw relative to it.
    drawable = ((energy[:, -1] > 0) & (measured[:, -1] > 0)).tolist()
    energy = energy / energy[:, -1:].clamp_min(1e-300)
    measured = measured / measured[:, -1:].clamp_min(1e-30)  # [K, 50]
    fig = _figure(7.5, 4.5)
    ax = fig.subplots()
    colors = ['tab:red', 'tab:orange', 'tab:blue']
    for k, c in enumerate(picked):
        if not drawable[k]:
            continue
        kind = 'Gaussian' if choice.is_gaussian[c] else 'inverted-T'
        color = GAUSSIAN_COLOR if choice.is_gaussian[c] else colors[k % 2]
        ax.plot(ratios.numpy(), energy[k].numpy(), color=color, lw=1.4,
                label=f'ch {c} ({kind}, P={float(choice.frac_above_sigma[c]):.3f})')
        ax.plot(measured_at.numpy(), measured[k].numpy(), 'o', ms=3, color=color, alpha=0.6)
        r = float(choice.clip_ratio[c])
        best = int(torch.argmin(energy[k]))
        ax.plot([r], [float(np.interp(r, ratios.numpy(), energy[k].numpy()))], '*', ms=14,
                color=color, markeredgecolor='k')
        if abs(float(ratios[best]) - r) > 1e-6:
            ax.plot([float(ratios[best])], [float(energy[k, best])], 'x', ms=9, color=color)
    if not any(drawable):
        ax.text(0.5, 0.5, f'{g_cm.shape[1]} value(s) per channel: the abs-max clip quantizes '
                'them exactly,\nno error curve to draw', ha='center', va='center',
                transform=ax.transAxes)
    else:
        ax.set_yscale('log')
        ax.legend(fontsize=8)
    ax.set_xlim(0, 1.02)
    ax.set_xlabel('clip / |g|max')
    ax.set_ylabel('weighted error / error at abs-max')
    ax.set_title(f'{layer.name}: MCS objective (alpha={alpha}); line: histogram model, dots: '
                 'measured,\nstar: DAQ choice, x: objective minimum where DAQ keeps abs-max',
                 fontsize=9)
    fig.savefig(path)
    return path


def plot_overview(summary: Dict[str, Dict], path: str) -> str:
    """Share of Gaussian channels and mean clip ratio of every layer, in model order.

    Args:
        summary (dict): :func:`.grad_dist.summarise` output.
        path (str): PNG file to write.

    Returns:
        str: ``path``.
    """
    names = list(summary)
    x = np.arange(len(names))
    share = [summary[n]['share_gaussian'] for n in names]
    ratio = [summary[n]['mean_clip_ratio'] or float('nan') for n in names]
    fig = _figure(max(8.0, 0.16 * len(names) + 2), 6)
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.bar(x, share, color=GAUSSIAN_COLOR)
    top.set_ylabel('share of Gaussian channels')
    top.set_ylim(0, 1)
    bottom.bar(x, ratio, color=LONG_TAIL_COLOR)
    bottom.set_ylabel('mean clip / |g|max')
    bottom.set_ylim(min(0.9, np.nanmin(ratio) - 0.02) if len(names) else 0, 1.0)
    bottom.set_xticks(x, _short_names(names), rotation=90, fontsize=6)
    fig.suptitle(f'{len(names)} layers: DAQ classification and clipping per layer')
    fig.savefig(path)
    return path


def _short_names(names: Sequence[str]) -> List[str]:
    return [n if len(n) <= 36 else '...' + n[-33:] for n in names]


def render_figures(layers: Dict[str, LayerGradients], out_dir: str, *, threshold: float = 0.3,
                   alpha: float = 3.0) -> Dict[str, List[str]]:
    """The three figures of every layer with kept gradients.

    Returns:
        dict[str, list[str]]: Layer name -> its PNG paths.
    """
    paths = {}
    for name, layer in layers.items():
        if not layer.gradients:
            continue
        base = osp.join(out_dir, name)
        paths[name] = [
            plot_samples_vs_channels(layer, f'{base}_samples_vs_channels.png', threshold),
            plot_channel_types(layer, f'{base}_channel_types.png', threshold),
            plot_clip_objective(layer, f'{base}_clip_objective.png', alpha),
        ]
    return paths
