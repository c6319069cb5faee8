"""DAQHook: turn a model's Conv/Linear layers into INT8 DAQ layers inside an mmengine run."""
from typing import Callable, Dict, Optional, Sequence, Union

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from torch import nn

from ...cnn import LayerSelection, daq_layers
from ...cnn.layer_selection import convert_unless_converted
from ...quantization.schemes import build_scheme
from ..fidelity_guard import FidelityGuard

CKPT_KEY = 'daq_state'
GUARD_KEY = 'daq_guard_state'


@HOOKS.register_module()
class DAQHook(Hook):
    """Swap FP32 Conv2d/Conv3d/Linear layers for DAQ INT8 layers when the run starts.

    Conversion happens in ``before_run``: after the model is built (and DDP-wrapped) and the
    optimizer exists, before weights are initialised and ``load_from`` / ``--resume``
    checkpoints are loaded. The very same Parameter objects are kept, so DDP, the optimizer,
    EMA copies and checkpoints (same keys as the FP32 model) keep working. The clip state of
    the layers is saved under ``checkpoint['daq_state']`` and restored on resume.

    By default the first conv of the model (the stem, which sees raw pixels) and the final
    prediction layers of the heads (:data:`~mmdaq.cnn.layer_selection.DEFAULT_FP32_HEADS`) stay
    in FP32, as in the paper and the INT8-training work it builds on: they are cheap, and their
    inputs/outputs (pixels, logits, box deltas) are the most sensitive to quantization.

    Args:
        method (str): A name of :data:`mmdaq.quantization.schemes.SCHEMES`: 'daq' (the
            paper), 'per_channel', 'per_tensor', 'ui8' or 'shiftquant' (docs/methods.md).
            Defaults to 'daq'.
        layer_types (Sequence[str]): Which of 'Conv2d', 'Conv3d', 'Linear' to convert.
            Defaults to all three.
        include (Sequence[str]): Regexes (``re.search``) of layer names to convert; empty
            means all. Defaults to ().
        exclude (Sequence[str]): Regexes of layer names kept in FP32, added to the defaults.
            Defaults to ().
        keep_first_conv (bool): Keep the first conv of the model in FP32. Defaults to True.
        keep_heads_fp32 (bool): Keep the final prediction layers in FP32. Defaults to True.
        filter_fn (str | Callable, optional): ``filter_fn(module, name) -> bool``, or its
            import path ``'pkg.module.fn'``; False keeps a layer in FP32. Defaults to None.
        warmup_iters (int): Iterations trained in FP32 before INT8 switches on. Defaults to 0.
        stats_interval (int): Iterations between logged quantization statistics; 0 turns
            them off. Defaults to 50.
        guard (dict, optional): Turns on the per-layer fidelity guard with these options of
            :class:`~mmdaq.engine.fidelity_guard.FidelityGuard` (``interval``, ``threshold``,
            ``patience``), e.g. ``dict(interval=50, threshold=0.1)``: every ``interval``
            iterations one INT8 layer's G_W / G_X error against float GEMMs is logged
            (``train/daq/guard_*``), and a layer above ``threshold`` in ``patience`` probes in a
            row moves to 8 bits or FP32, with a log line naming it. Defaults to None (off).
        **options: Options of the method (e.g. ``a=0.8``, ``clip_interval=1`` for 'daq';
            ``forward='fp32'`` or ``weight_scale='per_channel'`` for the INT8 methods).
    """

    priority = 'ABOVE_NORMAL'  # convert before EMAHook (NORMAL) copies the model

    def __init__(self, method: str = 'daq',
                 layer_types: Sequence[str] = ('Conv2d', 'Conv3d', 'Linear'),
                 include: Sequence[str] = (), exclude: Sequence[str] = (),
                 keep_first_conv: bool = True, keep_heads_fp32: bool = True,
                 filter_fn: Union[str, Callable, None] = None, warmup_iters: int = 0,
                 stats_interval: int = 50, guard: Optional[dict] = None, **options) -> None:
        build_scheme(method, **options)  # unknown method or option: error naming it
        self.selection = LayerSelection(layer_types, include, exclude, keep_first_conv,
                                        keep_heads_fp32, filter_fn)
        for name, value in (('warmup_iters', warmup_iters), ('stats_interval', stats_interval)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f'{name} must be an int >= 0, but got {value!r}')
        self.method, self.options = method, options
        self.warmup_iters = warmup_iters
        self.stats_interval = stats_interval
        self.report = None
        self._pending_state: Optional[Dict] = None
        if guard is not None and not isinstance(guard, dict):
            raise ValueError(f'guard must be a dict of FidelityGuard options or None, but got '
                             f'{guard!r}')
        self.guard = None if guard is None else FidelityGuard(**guard)

    # -- conversion ----------------------------------------------------------------------
    @staticmethod
    def _unwrap(runner) -> nn.Module:
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    def convert(self, model: nn.Module):
        """Convert ``model`` in place with this hook's selection; returns the report."""
        return self.selection.convert(model, self.method, **self.options)

    def before_run(self, runner) -> None:
        report = convert_unless_converted(self._unwrap(runner), 'DAQHook', daq_layers,
                                          self.convert)
        if report is not None:
            self.report = report
            print_log(f'DAQHook ({self.method}): {report.summary()}', logger='current')

    # -- FP32 warm-up and statistics -----------------------------------------------------
    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        layers = daq_layers(self._unwrap(runner))
        enabled = runner.iter >= self.warmup_iters
        collect = bool(self.stats_interval) and self.every_n_train_iters(
            runner, self.stats_interval)
        fp32 = self.guard.fp32_layers if self.guard else ()
        for name, layer in layers.items():
            layer.quant_enabled = enabled and name not in fp32
            layer.quant_scheme.collect_stats = collect and enabled
            layer.quant_scheme.last_stats = {}
        if self.guard and enabled:
            self.guard.before_iter(runner.iter, layers)
        if self.warmup_iters and runner.iter == self.warmup_iters:
            print_log(f'DAQHook: FP32 warm-up done, INT8 from iteration {runner.iter + 1}',
                      logger='current')

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        layers = daq_layers(self._unwrap(runner))
        self._sync_clip_state(layers)
        self._log_statistics(runner, layers)
        if self.guard:
            self._log_probe(runner, self.guard.after_iter(layers))

    @staticmethod
    def _log_probe(runner, probe) -> None:
        if probe is None or not probe.errors:
            return
        for key, value in probe.errors.items():
            runner.message_hub.update_scalar(f'train/daq/guard_{key}_error', value)
        if probe.action:
            errors = ', '.join(f'{k} {v:.3g}' for k, v in probe.errors.items())
            print_log(f'DAQHook guard: layer {probe.layer} moved to {probe.action}: relative '
                      f'gradient error {errors} above the threshold in the last probes',
                      logger='current', level=30)

    @staticmethod
    def _sync_clip_state(layers: Dict[str, nn.Module]) -> None:
        """Average the clip state over ranks (one all-reduce per iteration for all layers).

        Each rank quantizes its own gradients, so its clip history would drift from the
        others'; averaging keeps the quantizer state identical on every rank.
        """
        from mmengine.dist import all_reduce, get_world_size
        if get_world_size() < 2:
            return
        entries = [(state, slot) for layer in layers.values()
                   for state in layer.quant_scheme.rank_synced_state() for slot in sorted(state)]
        if not entries:
            return
        flat = torch.cat([state[slot].float() for state, slot in entries])
        all_reduce(flat, op='mean')
        for (state, slot), value in zip(entries, flat.split([s[k].numel() for s, k in entries])):
            state[slot] = value.to(state[slot].device)

    @staticmethod
    def _log_statistics(runner, layers: Dict[str, nn.Module]) -> None:
        stats = [layer.quant_scheme.last_stats for layer in layers.values()
                 if layer.quant_scheme.collect_stats and layer.quant_scheme.last_stats]
        for layer in layers.values():
            layer.quant_scheme.collect_stats = False
        if not stats:
            return
        hub = runner.message_hub
        for key in ('clip_ratio', 'is_gaussian', 'grad_rel_error'):
            values = [s[key].float().mean() for s in stats if key in s]
            if values:
                name = {'is_gaussian': 'share_gaussian'}.get(key, key)
                hub.update_scalar(f'train/daq/{name}', float(torch.stack(values).mean()))

    # -- checkpoints ---------------------------------------------------------------------
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[CKPT_KEY] = {
            name: layer.quant_scheme.state_dict()
            for name, layer in daq_layers(self._unwrap(runner)).items()
        }
        if self.guard:
            checkpoint[GUARD_KEY] = self.guard.state_dict()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get(CKPT_KEY)
        layers = daq_layers(self._unwrap(runner))
        if self.guard and GUARD_KEY in checkpoint:
            self.guard.load_state_dict(checkpoint[GUARD_KEY])
            self.guard.apply(layers)
        if state is None:
            # Only a resumed run expects clip state (load_from starts fresh); mmengine offers
            # no public flag for that, so read runner._resume as mmengine's own EMAHook does.
            resuming = getattr(runner, '_resume', False)
            if layers and resuming and checkpoint.get('meta', {}).get('iter', 0) > \
                    self.warmup_iters:
                print_log('DAQHook: the checkpoint has no DAQ clip state (an FP32 checkpoint?); '
                          'clips restart from the gradients\' abs-max', logger='current',
                          level=30)
            return
        unknown = sorted(set(state) - set(layers))
        if unknown:
            print_log(f'DAQHook: checkpoint DAQ state for layers not converted here: {unknown}',
                      logger='current', level=30)
        for name, layer in layers.items():
            layer.quant_scheme.load_state_dict(state.get(name, {}))
