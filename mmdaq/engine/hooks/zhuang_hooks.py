"""Hooks for the low-bit training methods of Zhuang et al. (CVPR 2018; TPAMI extension).

- :class:`ZhuangQuantHook` swaps Conv/Linear layers for low-bit layers (k-bit weights and
  activations, :mod:`mmdaq.cnn.lowbit_layers`) when the run starts;
- :class:`ProgressiveQuantHook` changes their precision during training: two-stage
  optimisation (weights first, activations from ``activation_begin``) and/or progressive
  bit-width decrease (``bits=(32, 16, 8, 4)`` switched at ``milestones``), each stage continuing
  from the weights of the previous one (the switch touches no parameter);
- :class:`StochasticPrecisionHook` quantizes a random share ``p`` of the low-bit layers (or
  residual blocks) in each training iteration and keeps the rest in full precision, ``p``
  rising on a schedule to 1; evaluation always runs the fully quantized network.

Joint knowledge distillation with a full-precision twin is a model wrapper,
:class:`mmdaq.engine.joint_distillation.JointDistillationModel`; ZhuangQuantHook converts its
low-bit model only.
"""
import bisect
import dataclasses
import re
import warnings
from typing import Dict, List, Optional, Sequence

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from torch import nn

from ...cnn import LayerSelection, first_conv, is_prediction_head, lowbit_layers, set_precision
from ...cnn.convert import compile_patterns
from ...cnn.layer_selection import LAYER_TYPES, convert_unless_converted
from ...quantization.lowbit import LowBitConfig, check_bits
from ..joint_distillation import JointDistillationModel

LAYER_POLICIES = ('fp32', 'weights', 'full')


def _unwrap(runner) -> nn.Module:
    return runner.model.module if is_model_wrapper(runner.model) else runner.model


def _check_milestones(milestones: Sequence[int], count: int, what: str) -> tuple:
    """Strictly increasing ints > 0, one fewer than the stages of ``what``."""
    milestones = tuple(milestones)
    if any(isinstance(m, bool) or not isinstance(m, int) for m in milestones) or \
            any(m <= 0 for m in milestones) or \
            any(a >= b for a, b in zip(milestones, milestones[1:])) or len(milestones) != count:
        raise ValueError(f'milestones must be {count} strictly increasing ints > 0 (one per '
                         f'switch between the {what}), but got {list(milestones)}')
    return milestones


def _check_reachable(runner, hook: str, by_epoch: bool, points: Sequence[int]) -> None:
    """Every switch point must fall inside the run, else training ends at another precision."""
    end = runner.max_epochs if by_epoch else runner.max_iters
    late = [p for p in points if p >= end]
    if late:
        unit = 'max_epochs' if by_epoch else 'max_iters'
        raise ValueError(f'{hook} switch points must be < {unit} = {end}, but got {late}; '
                         'shorten the schedule or train longer')


@HOOKS.register_module()
class ZhuangQuantHook(Hook):
    """Swap Conv2d/Conv3d/Linear layers for k-bit low-bit layers in ``before_run``.

    Like DAQHook the same Parameter objects are kept and the ``state_dict`` keys do not
    change. The DoReFa convention keeps the first and last layers in full precision; the
    unofficial re-implementation quantizes the first layer's weights (not its input, pixels)
    and the classifier: both are options.

    Args:
        bits_w (int): Target weight bit width (1-16, 32 = float). Defaults to 4.
        bits_a (int): Target activation bit width. Defaults to 4.
        quantize_weights (bool): Defaults to True.
        quantize_activations (bool): Defaults to True.
        integer_gemm (bool): Exact int8 forward GEMM when both operands have <= 7 bits.
            Defaults to True.
        scale_weights (bool): Scale the k-bit weights by ``max|w|`` for layers not followed by
            BN (:class:`~mmdaq.cnn.LowBitConfig`; not in the paper). Defaults to False.
        first_layer (str): The model's first conv: 'fp32' (kept float) or 'weights' (k-bit
            weights, float input). Defaults to 'fp32'.
        last_layer (str): The final prediction layers
            (:data:`~mmdaq.cnn.layer_selection.DEFAULT_FP32_HEADS`): 'fp32', 'weights' or
            'full'. Defaults to 'fp32'.
        weights_only (Sequence[str]): Regexes of layers whose *input* stays float whatever the
            stage: inputs that are not ReLU outputs, which the [0, 1] clip would zero where
            negative (FPN output convs, an RPN conv, a first RoI FC). Defaults to ().
        include (Sequence[str]): Regexes of layers to convert; empty means all. Defaults to ().
        exclude (Sequence[str]): Regexes of layers kept in float. Defaults to ().
        layer_types (Sequence[str]): Of 'Conv2d', 'Conv3d', 'Linear'. Defaults to all.
    """

    priority = 'ABOVE_NORMAL'  # convert before EMAHook (NORMAL) copies the model

    def __init__(self, bits_w: int = 4, bits_a: int = 4, quantize_weights: bool = True,
                 quantize_activations: bool = True, integer_gemm: bool = True,
                 scale_weights: bool = False, first_layer: str = 'fp32', last_layer: str = 'fp32',
                 weights_only: Sequence[str] = (), include: Sequence[str] = (),
                 exclude: Sequence[str] = (),
                 layer_types: Sequence[str] = ('Conv2d', 'Conv3d', 'Linear')) -> None:
        self.config = LowBitConfig(bits_w, bits_a, quantize_weights, quantize_activations,
                                   integer_gemm, scale_weights)  # validates
        if first_layer not in LAYER_POLICIES[:2]:
            raise ValueError(f'first_layer must be one of {LAYER_POLICIES[:2]}, but got '
                             f'{first_layer!r}')
        if last_layer not in LAYER_POLICIES:
            raise ValueError(f'last_layer must be one of {LAYER_POLICIES}, but got '
                             f'{last_layer!r}')
        self.selection = LayerSelection(layer_types, include, exclude,
                                        keep_first_conv=first_layer == 'fp32',
                                        keep_heads=last_layer == 'fp32')
        self.first_layer, self.last_layer = first_layer, last_layer
        self.weights_only = compile_patterns(weights_only, 'weights_only')
        self.report = None

    @staticmethod
    def target(model: nn.Module) -> nn.Module:
        """The network to quantize: the low-bit net of a JointDistillationModel, else model."""
        return model.model if isinstance(model, JointDistillationModel) else model

    def convert(self, model: nn.Module):
        """Convert ``model`` in place with this hook's policies; returns the report."""
        report = self.selection.convert(model, LowBitConfig.name,
                                        **dataclasses.asdict(self.config))
        first = first_conv(model)
        for name, layer in lowbit_layers(model).items():
            if name == first or any(p.search(name) for p in self.weights_only) or (
                    self.last_layer == 'weights' and is_prediction_head(name)):
                layer.input_quantizable = False  # pixels, weights_only, the head's policy
        layers = [n for n, m in model.named_modules() if isinstance(m, tuple(LAYER_TYPES.values()))]
        unused = [p.pattern for p in self.weights_only if not any(p.search(n) for n in layers)]
        if unused:
            warnings.warn(f'weights_only patterns {unused} match no Conv2d/Conv3d/Linear layer '
                          f'of {type(model).__name__}; check their spelling', stacklevel=2)
        return report

    def before_run(self, runner) -> None:
        model = self.target(_unwrap(runner))
        report = convert_unless_converted(model, 'ZhuangQuantHook', lowbit_layers, self.convert)
        if report is None:
            return
        self.report = report
        weights_only = sum(not m.input_quantizable for m in lowbit_layers(model).values())
        cfg = self.config
        reasons = self.report.summary().splitlines()[1:]  # one line per reason kept in float
        head = (f'ZhuangQuantHook: {len(self.report.converted)} layers low-bit '
                f'(W{cfg.bits_w}A{cfg.bits_a}, {weights_only} of them with float input), '
                f'{len(self.report.skipped)} kept in float')
        print_log('\n'.join([head] + reasons), logger='current')


@HOOKS.register_module()
class ProgressiveQuantHook(Hook):
    """Two-stage optimisation and progressive bit-width decrease on the low-bit layers.

    At training progress ``t`` (the epoch, or the iteration if ``by_epoch`` is False) the
    layers run at ``bits[i]`` bits for weights and activations, with ``i`` the number of
    ``milestones`` <= t, and quantize their inputs only from ``t >= activation_begin`` (before
    that: weights only, the first stage of two-stage optimisation). ``bits[-1]`` must be the
    target set by ZhuangQuantHook, and every switch must happen inside the run, so training ends
    at the target precision; evaluation outside training (``tools/test.py``) always uses it.

    Args:
        bits (Sequence[int]): Strictly decreasing bit widths, e.g. (32, 16, 8, 4); 32 is full
            precision. Defaults to (4, ): no bit-width decrease.
        milestones (Sequence[int]): Where each next width starts. Defaults to ().
        activation_begin (int): Where activation quantization starts; 0 quantizes activations
            from the start. Defaults to 0.
        by_epoch (bool): Milestones in epochs, else iterations. Defaults to True.

    Examples:
        >>> two_stage = dict(type='ProgressiveQuantHook', activation_begin=4)
        >>> chain = dict(type='ProgressiveQuantHook', bits=(32, 8, 4), milestones=(2, 4))
    """

    def __init__(self, bits: Sequence[int] = (4, ), milestones: Sequence[int] = (),
                 activation_begin: int = 0, by_epoch: bool = True) -> None:
        bits = tuple(bits)
        for b in bits:
            check_bits(b, 'bits')
        if not bits or any(a <= b for a, b in zip(bits, bits[1:])):
            raise ValueError(f'bits must be strictly decreasing bit widths, but got {list(bits)}')
        if isinstance(activation_begin, bool) or not isinstance(activation_begin, int) or \
                activation_begin < 0:
            raise ValueError(f'activation_begin must be an int >= 0, but got '
                             f'{activation_begin!r}')
        self.bits = bits
        self.milestones = _check_milestones(milestones, len(bits) - 1, 'bit widths')
        self.activation_begin = activation_begin
        self.by_epoch = by_epoch
        self._quantize_activations = True
        self._current: Optional[tuple] = None

    def stage(self, progress: int) -> tuple:
        """(bits, quantize_activations) at epoch or iteration ``progress``."""
        bits = self.bits[bisect.bisect_right(self.milestones, progress)]
        return bits, self._quantize_activations and progress >= self.activation_begin

    def before_train(self, runner) -> None:
        layers = lowbit_layers(_unwrap(runner))
        if not layers:
            raise RuntimeError('ProgressiveQuantHook found no low-bit layer: add '
                               'ZhuangQuantHook, which converts the model in before_run')
        targets = {(m.lowbit.bits_w, m.lowbit.bits_a) for m in layers.values()}
        if targets != {(self.bits[-1], self.bits[-1])}:
            raise ValueError(f'bits[-1] must equal the target bits_w and bits_a of '
                             f'ZhuangQuantHook, but got {self.bits[-1]} for targets '
                             f'{sorted(targets)}')
        self._quantize_activations = any(m.lowbit.quantize_activations for m in layers.values())
        points = list(self.milestones) + ([self.activation_begin] if self.activation_begin else [])
        _check_reachable(runner, 'ProgressiveQuantHook', self.by_epoch, points)
        self._current = None

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        bits, quant_a = self.stage(runner.epoch if self.by_epoch else runner.iter)
        if (bits, quant_a) != self._current:
            model = _unwrap(runner)
            set_precision(model, bits_w=bits, bits_a=bits, quantize_activations=quant_a)
            self._current = (bits, quant_a)
            what = f'W{bits}A{bits if quant_a else 32}'
            print_log(f'ProgressiveQuantHook: {what} from iteration {runner.iter + 1}',
                      logger='current')
        runner.message_hub.update_scalar('train/zhuang/bits', float(bits))


@HOOKS.register_module()
class StochasticPrecisionHook(Hook):
    """Stochastic precision (TPAMI): each training iteration, quantize a random share p of the
    low-bit units and run the others in full precision; p rises on a schedule to 1.

    A unit is one low-bit layer (``granularity='layer'``) or one residual block: the layers
    whose names share the prefix matched by ``block_pattern`` (``'block'``; layers outside any
    block are units of their own). Exactly ``round(p U)`` of the U units are drawn uniformly
    without replacement, from a generator seeded with ``(seed, iteration)``: runs and resumed
    runs draw the same units, and all ranks agree. Eval mode always runs fully quantized (the
    layers ignore the draw there), and the draw is cleared after each iteration.

    Args:
        milestones (Sequence[int]): Where each next ratio starts (one fewer than ``ratios``).
        ratios (Sequence[float]): Non-decreasing shares in (0, 1], ending at 1. Defaults to
            (0.5, 0.75, 0.875, 1.0) (the notes' staged reading of the paper).
        by_epoch (bool): Milestones in epochs, else iterations. Defaults to True.
        granularity (str): 'layer' or 'block'. Defaults to 'layer'.
        block_pattern (str): Regex whose match ends a block name. Defaults to
            ``r'layer\\d+\\.\\d+'`` (ResNet blocks, ``backbone.layer3.1``).
        seed (int): Seed of the draws. Defaults to 0.
    """

    def __init__(self, milestones: Sequence[int], ratios: Sequence[float] = (0.5, 0.75, 0.875,
                                                                             1.0),
                 by_epoch: bool = True, granularity: str = 'layer',
                 block_pattern: str = r'layer\d+\.\d+', seed: int = 0) -> None:
        ratios = tuple(ratios)
        if not ratios or any(isinstance(r, bool) or not isinstance(r, (int, float)) or
                             not 0 < r <= 1 for r in ratios) or \
                any(a > b for a, b in zip(ratios, ratios[1:])) or ratios[-1] != 1:
            raise ValueError(f'ratios must be non-decreasing shares in (0, 1] ending at 1, but '
                             f'got {list(ratios)}')
        if granularity not in ('layer', 'block'):
            raise ValueError(f"granularity must be 'layer' or 'block', but got {granularity!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f'seed must be an int >= 0, but got {seed!r}')
        try:
            self.block_pattern = re.compile(block_pattern)
        except (re.error, TypeError) as e:
            raise ValueError(f'block_pattern must be a regular expression, but got '
                             f'{block_pattern!r} ({e})') from None
        self.ratios = ratios
        self.milestones = _check_milestones(milestones, len(ratios) - 1, 'ratios')
        self.by_epoch, self.granularity, self.seed = by_epoch, granularity, seed
        self.units: List[List[nn.Module]] = []

    def ratio(self, progress: int) -> float:
        """The scheduled share p at epoch or iteration ``progress``."""
        return self.ratios[bisect.bisect_right(self.milestones, progress)]

    def group_units(self, model: nn.Module) -> List[List[nn.Module]]:
        """The low-bit layers of ``model`` grouped into units, in model order."""
        units: Dict[str, List[nn.Module]] = {}
        for name, layer in lowbit_layers(model).items():
            match = self.block_pattern.search(name) if self.granularity == 'block' else None
            units.setdefault(name[:match.end()] if match else name, []).append(layer)
        return list(units.values())

    def draw(self, iteration: int, ratio: float) -> torch.Tensor:
        """Indices of the units quantized at ``iteration`` (Tensor[round(p U)], int64)."""
        count = int(ratio * len(self.units) + 0.5)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + iteration)
        return torch.randperm(len(self.units), generator=generator)[:count]

    def before_train(self, runner) -> None:
        self.units = self.group_units(_unwrap(runner))
        if not self.units:
            raise RuntimeError('StochasticPrecisionHook found no low-bit layer: add '
                               'ZhuangQuantHook, which converts the model in before_run')
        _check_reachable(runner, 'StochasticPrecisionHook', self.by_epoch, self.milestones)
        print_log(f'StochasticPrecisionHook: {len(self.units)} units ({self.granularity})',
                  logger='current')

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        ratio = self.ratio(runner.epoch if self.by_epoch else runner.iter)
        quantized = set(self.draw(runner.iter, ratio).tolist())
        for index, unit in enumerate(self.units):
            for layer in unit:
                layer.fp_this_iter = index not in quantized
        runner.message_hub.update_scalar('train/zhuang/quantized_ratio',
                                         len(quantized) / len(self.units))

    def _quantize_all(self) -> None:
        for unit in self.units:
            for layer in unit:
                layer.fp_this_iter = False

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._quantize_all()

    def before_val_epoch(self, runner) -> None:
        self._quantize_all()

    def before_test_epoch(self, runner) -> None:
        self._quantize_all()
