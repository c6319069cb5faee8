"""Per-layer gradient distributions as DAQ sees them: capture, classify, clip, summarise.

:func:`analyse_gradients` runs a few forward/backward passes of a model (no optimizer step,
no change to the model: hooks only, see :class:`~.capture.GradientCapture`) and, for every
output gradient G_Y of the chosen layers, asks the project's DAQ scheme what it would do:
which output channels are bell-shaped (Gaussian) or sharp long-tailed (inverted-T), and which
clip each channel gets. :func:`summarise` turns that into plain numbers (JSON-ready) and
:mod:`.grad_plots` draws it.

G_Y has the layer's output channels on ``dim=1`` for a convolution (Tensor[N, C_out, *S]) and
on the last dim for a Linear layer (Tensor[*, C_out]); the "samples" of the sample-wise view
are the first dim (images, video frames or clips, RoIs).
"""
import dataclasses
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import torch
from torch import Tensor, nn

from ..quantization.distribution import gradient_statistics
from ..quantization.schemes import DAQScheme
from .capture import GradientCapture

LossFn = Callable[[nn.Module, Any], Tensor]


@dataclasses.dataclass
class ChannelChoice:
    """DAQ's per-channel view of one output gradient G_Y.

    Attributes:
        abs_max (Tensor[C_out]): ``max |g|`` per channel.
        frac_above_sigma (Tensor[C_out]): ``P(|g| > sigma)`` per channel (the classifier's input).
        is_gaussian (Tensor[C_out], bool): Bell-shaped (True) or inverted-T (False).
        clip (Tensor[C_out]): The clip the scheme chose per channel.
    """
    abs_max: Tensor
    frac_above_sigma: Tensor
    is_gaussian: Tensor
    clip: Tensor

    @property
    def clip_ratio(self) -> Tensor:
        """``clip / abs_max`` (Tensor[C_out]), 1 for all-zero channels."""
        ok = self.abs_max > 0
        return torch.where(ok, self.clip / self.abs_max.clamp_min(1e-30),
                           torch.ones_like(self.clip))


@dataclasses.dataclass
class LayerGradients:
    """What :func:`analyse_gradients` found for one layer.

    Attributes:
        name (str): Qualified module name.
        layer_type (str): Class name of the module (``'Conv2d'``, ``'DAQConv2d'``, ...).
        channel_dim (int): Channel dim of G_Y: 1 (conv) or -1 (Linear).
        choices (list[ChannelChoice]): One per call per iteration, in order.
        first_choices (list[ChannelChoice]): The choices of the first call of every iteration.
        gradients (list[Tensor]): G_Y (float32, CPU) of the first call of every iteration
            (``gradients[i]`` goes with ``first_choices[i]``); kept only for the layers asked
            for, empty otherwise.
    """
    name: str
    layer_type: str
    channel_dim: int
    choices: List[ChannelChoice] = dataclasses.field(default_factory=list)
    first_choices: List[ChannelChoice] = dataclasses.field(default_factory=list)
    gradients: List[Tensor] = dataclasses.field(default_factory=list)


def channel_dim_of(module: nn.Module) -> int:
    """Output-channel dim of a layer's G_Y: -1 for Linear layers, 1 for convolutions."""
    return -1 if isinstance(module, nn.Linear) else 1


def daq_channel_choice(g: Tensor, dim: int, scheme: DAQScheme, slot: int = 0) -> ChannelChoice:
    """Classify the channels of ``g`` and compute their clips with ``scheme``'s own code.

    Args:
        g (Tensor[N, C_out, *S] or Tensor[*, C_out]): Output gradient G_Y.
        dim (int): Channel dim of ``g``.
        scheme (DAQScheme): The layer's scheme; stateful rules (``'ema'``) keep their history
            per ``slot`` across calls, as in training.
        slot (int): Call slot (the call's index within the iteration). Defaults to 0.

    Returns:
        ChannelChoice: Statistics, classes and clips, on the CPU.
    """
    g = g.float()
    scheme.collect_stats = True
    clip = scheme.grad_weight_clip(g, dim, slot)  # [C_out]
    is_gaussian = scheme.last_stats['is_gaussian']
    scheme.collect_stats = False
    stats = gradient_statistics(g, dim)
    return ChannelChoice(stats.abs_max.cpu(), stats.frac_above_sigma.cpu(),
                         is_gaussian.cpu(), clip.float().cpu())


def spread_evenly(names: Sequence[str], count: int) -> List[str]:
    """``count`` names spread evenly from the first to the last (all if fewer, none if 0).

    Examples:
        >>> spread_evenly(['a', 'b', 'c', 'd', 'e'], 3)
        ['a', 'c', 'e']
    """
    if count <= 0 or not names:
        return []
    if count >= len(names):
        return list(names)
    if count == 1:
        return [names[len(names) // 2]]
    step = (len(names) - 1) / (count - 1)
    return [names[round(i * step)] for i in range(count)]


def analyse_gradients(model: nn.Module, batches: Iterable[Any], loss_fn: LossFn, *,
                      pattern: Optional[str] = None, keep: int = 4, threshold: float = 0.3,
                      alpha: float = 3.0, long_tail_rule: str = 'objective'
                      ) -> Dict[str, LayerGradients]:
    """Capture G_Y of the chosen layers over ``batches`` and apply DAQ's classifier and clip.

    One forward/backward per batch; gradients of the parameters are dropped after each
    backward and no optimizer step is taken, so every batch sees the same weights.

    Args:
        model (nn.Module): The model (put it in the mode you want, e.g. ``model.train()``).
        batches (Iterable): Batches for ``loss_fn``; one iteration each.
        loss_fn (Callable[[nn.Module, Any], Tensor]): ``loss_fn(model, batch)`` -> scalar loss.
        pattern (str, optional): Regex (``re.search``) on layer names; None analyses every
            Conv1d/2d/3d and Linear layer. Defaults to None.
        keep (int): Number of layers, spread evenly over the analysed ones in model order,
            whose G_Y tensors are kept for plotting (-1: all). Defaults to 4.
        threshold (float): lambda of the distribution test. Defaults to 0.3 (the paper's).
        alpha (float): Magnitude weight exponent of the clip objective. Defaults to 3.0.
        long_tail_rule (str): DAQ's rule for inverted-T channels, ``'objective'`` or
            ``'ema'``. Defaults to 'objective' (the project's default).

    Returns:
        dict[str, LayerGradients]: By layer name, in model order; layers that received no
        gradient are left out.

    Raises:
        ValueError: ``pattern`` matches no layer, or no matched layer received a gradient.
    """
    capture = GradientCapture(model, pattern, keep_input=False)
    order = list(capture.records)
    DAQScheme(threshold=threshold, alpha=alpha, long_tail_rule=long_tail_rule)  # checks options
    schemes: Dict[str, DAQScheme] = {}
    results: Dict[str, LayerGradients] = {}
    kept: Optional[set] = None
    iterations = 0
    for batch in batches:
        with capture:
            loss = loss_fn(model, batch)
            loss.backward()
        model.zero_grad(set_to_none=True)
        iterations += 1
        complete = capture.complete()
        if kept is None:  # decided once the first iteration shows which layers get gradients
            names = [n for n in order if n in complete]
            kept = set(names if keep < 0 else spread_evenly(names, keep))
        for name, record in complete.items():
            dim = channel_dim_of(record.module)
            layer = results.setdefault(
                name, LayerGradients(name, type(record.module).__name__, dim))
            scheme = schemes.setdefault(name, DAQScheme(
                threshold=threshold, alpha=alpha, long_tail_rule=long_tail_rule))
            for slot, call in enumerate(record.calls):
                choice = daq_channel_choice(call.g_y, dim, scheme, slot)
                layer.choices.append(choice)
                if slot == 0:
                    layer.first_choices.append(choice)
                    if name in kept:
                        layer.gradients.append(call.g_y.float().cpu())
            for call in record.calls:
                call.g_y = None  # free the gradient before the next iteration
    if not iterations:
        raise ValueError('batches must yield at least one batch, but got none')
    if not results:
        raise ValueError(f'pattern must match layers that receive a gradient, but none of the '
                         f'{len(order)} layers matching {pattern!r} got one (frozen, or unused '
                         f'by the loss?)')
    return {n: results[n] for n in order if n in results}


def summarise(layers: Dict[str, LayerGradients]) -> Dict[str, Dict[str, Any]]:
    """Per-layer numbers, averaged over all calls and iterations.

    Returns:
        dict: layer name -> ``{'type', 'channels', 'calls', 'share_gaussian',
        'mean_clip_ratio', 'mean_clip_ratio_long_tailed', 'mean_frac_above_sigma'}``
        (``mean_clip_ratio_long_tailed`` is None when no channel was long-tailed).
    """
    out = {}
    for name, layer in layers.items():
        gauss = torch.cat([c.is_gaussian for c in layer.choices])
        ratio = torch.cat([c.clip_ratio for c in layer.choices])
        frac = torch.cat([c.frac_above_sigma for c in layer.choices])
        finite = torch.isfinite(ratio)
        tail = finite & ~gauss
        out[name] = {
            'type': layer.layer_type,
            'channels': int(layer.choices[0].clip.numel()),
            'calls': len(layer.choices),
            'share_gaussian': float(gauss.float().mean()),
            'mean_clip_ratio': float(ratio[finite].mean()) if finite.any() else None,
            'mean_clip_ratio_long_tailed': float(ratio[tail].mean()) if tail.any() else None,
            'mean_frac_above_sigma': float(frac[torch.isfinite(frac)].mean()),
        }
    return out
