"""DAQStatsHook: per-layer gradient statistics and histograms to TensorBoard, every N iterations."""
import re
from typing import Any, Dict, List, Optional

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from torch import Tensor, nn

from ...analysis.capture import GradientCapture
from ...analysis.grad_dist import channel_dim_of
from ...quantization.distribution import check_threshold, gradient_statistics
from ...quantization.histogram_clip import objective_clip
from ...quantization.quantize import max_code
from ...quantization.schemes import DAQScheme


@HOOKS.register_module()
class DAQStatsHook(Hook):
    """Write per-layer output-gradient statistics to TensorBoard every ``interval`` iterations.

    On a logging iteration the hook observes the output gradient G_Y of every chosen
    Conv/Linear layer (FP32 or DAQ) through hooks registered in ``before_train_iter`` and
    removed in ``after_train_iter``; G_Y is reduced to per-channel statistics in backward, so no
    full gradient is kept. Other iterations run with no hook at all. Per layer, under
    ``daq_stats/<layer>/``:

    - scalars ``share_gaussian`` (share of bell-shaped channels, DAQ's test) and
      ``clip_ratio`` (mean per-channel clip / abs-max);
    - histograms ``grad`` (up to ``max_values`` G_Y values, sampled uniformly),
      ``clip_ratio`` and ``frac_above_sigma`` (``P(|g| > sigma)``, one value per channel).

    The clip of a DAQ layer is the one its scheme applied in that backward; for any other
    layer it is the clip DAQ's default rule would choose (abs-max for bell-shaped channels,
    the objective minimum for inverted-T ones). A layer called several times per iteration
    pools its calls. Only the main process writes.

    mmengine's visualizer has no histogram API, so everything goes to the SummaryWriter of
    the visualizer's TensorBoard backend (``experiment``); without that backend the hook warns
    once in ``before_train`` and stays idle. Per-layer scalars are not sent to the other
    backends on purpose: ``LocalVisBackend`` would mix them into ``scalars.json``; DAQHook
    already logs the model-wide ``daq/*`` scalars everywhere.

    Args:
        interval (int): Iterations between two records. Defaults to 100.
        layers (str, optional): Regex (``re.search``) of layer names; None takes every
            Conv1d/2d/3d and Linear layer. Defaults to None.
        max_values (int): G_Y values sampled per layer for the ``grad`` histogram; 0 skips
            that histogram. Defaults to 4096.
        threshold (float): lambda of the Gaussian / inverted-T test. Defaults to 0.3.
        alpha (float): Magnitude weight exponent of the clip objective (non-DAQ layers).
            Defaults to 3.0.
        backend (str): Name of the TensorBoard backend in the visualizer. Defaults to
            'TensorboardVisBackend' (the name mmengine gives it unless the config names it).

    Examples:
        >>> custom_hooks = [dict(type='DAQHook'), dict(type='DAQStatsHook', interval=200)]
        >>> visualizer = dict(type='Visualizer',
        ...                   vis_backends=[dict(type='LocalVisBackend'),
        ...                                 dict(type='TensorboardVisBackend')])
    """

    priority = 'BELOW_NORMAL'  # no order needed; after DAQHook (ABOVE_NORMAL) reads clearer

    def __init__(self, interval: int = 100, layers: Optional[str] = None,
                 max_values: int = 4096, threshold: float = 0.3, alpha: float = 3.0,
                 backend: str = 'TensorboardVisBackend') -> None:
        for name, value, low in (('interval', interval, 1), ('max_values', max_values, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f'{name} must be an int >= {low}, but got {value!r}')
        if layers is not None:
            try:
                re.compile(layers)
            except (re.error, TypeError) as e:
                raise ValueError(f'layers must be a regex, but got {layers!r} ({e})')
        check_threshold(threshold)
        DAQScheme(alpha=alpha)  # validates alpha with the scheme's own message
        self.interval = interval
        self.layers = layers
        self.max_values = max_values
        self.threshold = threshold
        self.alpha = alpha
        self.backend = backend
        self._writer = None
        self._capture: Optional[GradientCapture] = None
        self._generator = torch.Generator().manual_seed(0)

    def before_train(self, runner) -> None:
        if not is_main_process():
            return
        backend = runner.visualizer.get_backend(self.backend)
        if backend is None:
            print_log(f'DAQStatsHook: the visualizer has no {self.backend!r} backend; add '
                      f"dict(type='TensorboardVisBackend') to visualizer.vis_backends to record "
                      f'gradient statistics', logger='current', level=30)
            return
        self._writer = backend.experiment

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self._writer is None or not self.every_n_train_iters(runner, self.interval):
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        self._capture = GradientCapture(model, self.layers, keep_input=False,
                                        reduce_grad=self._reduce).__enter__()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        capture, self._capture = self._capture, None
        if capture is None:
            return
        capture.__exit__(None, None, None)
        step = runner.iter + 1
        for name, record in capture.complete().items():
            stats = [call.g_y for call in record.calls]
            applied = self._applied_clip_ratio(record.module, stats)
            self._write(name, stats, applied, step)
        self._writer.flush()

    def _reduce(self, module: nn.Module, g: Tensor) -> Dict[str, Tensor]:
        """Per-channel statistics of one G_Y, computed in backward (Tensor[C_out] each)."""
        dim = channel_dim_of(module)
        g = g.float()
        stats = gradient_statistics(g, dim)
        out = {'abs_max': stats.abs_max, 'frac_above_sigma': stats.frac_above_sigma}
        if getattr(module, 'quant_scheme', None) is None:  # what DAQ's default rule would do
            bins = min(DAQScheme.num_bins, max(64, g.numel() // max(g.shape[dim], 1)))
            clip = objective_clip(g, dim, self.alpha, bins)[2]
            clip = torch.where(stats.frac_above_sigma > self.threshold, stats.abs_max, clip)
            out['clip'] = clip
        if self.max_values:
            flat = g.reshape(-1)
            idx = torch.randint(flat.numel(), (min(self.max_values, flat.numel()), ),
                                generator=self._generator).to(flat.device)
            out['values'] = flat[idx]
        return {k: v.detach().cpu() for k, v in out.items()}

    @staticmethod
    def _applied_clip_ratio(module: nn.Module, stats: List[Dict[str, Tensor]]
                            ) -> Optional[Tensor]:
        """Clip / abs-max of the G_W copy a DAQ layer quantized in this backward (the backward
        of its first call runs last, so the scheme's last scale belongs to call 0)."""
        scheme = getattr(module, 'quant_scheme', None)
        if scheme is None or not getattr(module, 'quant_enabled', False) \
                or scheme.last_grad_weight_scale is None:
            return None
        clip = scheme.last_grad_weight_scale.detach().float().cpu() * max_code(8)
        g_max = stats[0]['abs_max']
        if clip.shape != g_max.shape:
            return None
        return torch.where(g_max > 0, clip / g_max.clamp_min(1e-30), torch.ones_like(clip))

    def _write(self, name: str, stats: List[Dict[str, Tensor]], applied: Optional[Tensor],
               step: int) -> None:
        frac = torch.cat([s['frac_above_sigma'] for s in stats])
        if applied is not None:
            ratio = applied
        elif 'clip' in stats[0]:
            clip = torch.cat([s['clip'] for s in stats])
            g_max = torch.cat([s['abs_max'] for s in stats])
            ratio = torch.where(g_max > 0, clip / g_max.clamp_min(1e-30), torch.ones_like(clip))
        else:  # a DAQ layer running in FP32 (warm-up): nothing was clipped
            ratio = torch.ones_like(frac)
        ratio = ratio[torch.isfinite(ratio)]
        frac = frac[torch.isfinite(frac)]
        tag = f'daq_stats/{name}'
        self._writer.add_scalar(f'{tag}/share_gaussian',
                                float((frac > self.threshold).float().mean()), step)
        self._add_histogram(f'{tag}/frac_above_sigma', frac, step)
        if ratio.numel():
            self._writer.add_scalar(f'{tag}/clip_ratio', float(ratio.mean()), step)
            self._add_histogram(f'{tag}/clip_ratio', ratio, step)
        if self.max_values:
            values = torch.cat([s['values'] for s in stats])
            self._add_histogram(f'{tag}/grad', values[torch.isfinite(values)], step)

    def _add_histogram(self, tag: str, values: Any, step: int) -> None:
        if values.numel():
            self._writer.add_histogram(tag, values.numpy(), step)
