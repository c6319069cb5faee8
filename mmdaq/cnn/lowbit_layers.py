"""Low-bit layers of Zhuang et al. (k-bit weights and activations, float gradients).

:class:`LowBitConv2d` / :class:`LowBitConv3d` / :class:`LowBitLinear` are their torch base
classes (same attributes, same Parameter objects, same ``state_dict`` keys) whose forward runs
on quantized operands (:mod:`mmdaq.quantization.lowbit`)::

    y = conv(quantize_activation(x, bits_a), quantize_weight(w, bits_w)) + b

With both operands at k <= 7 bits and ``integer_gemm`` on, the GEMM is the exact integer one of
:mod:`mmdaq.ops.lowbit_conv`; otherwise (8-16 bits, weights only, or ``integer_gemm=False``) it
is the float convolution of the quantized values ("fake quantization"). Both give the same
output up to float32 rounding (tested).

Three switches drive the training recipes of the paper, set by the hooks in
:mod:`mmdaq.engine.hooks.zhuang_hooks`:

- ``layer.lowbit`` (:class:`LowBitConfig`): bit widths and whether weights and activations are
  quantized (two-stage and progressive quantization change it during training);
- ``layer.input_quantizable``: False for layers whose input must stay float whatever the stage
  (an image, or an input that is not a ReLU output: the [0, 1] clip would zero its negatives);
- ``layer.fp_this_iter``: run this layer in full precision for the current *training*
  iteration (stochastic precision); ignored in eval mode, which is always quantized.
"""
import dataclasses
import re
import warnings
from typing import Any, Callable, Dict, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..ops.geometry import ConvGeometry
from ..ops.lowbit_conv import lowbit_int_conv, lowbit_int_linear
from ..quantization.lowbit import FP_BITS, check_bits, quantize_activation, quantize_weight
from .convert import ConversionReport, _compile, daq_class_for
from .daq_layers import DAQConv2d, DAQConv3d, DAQLinear, _explicit_padding, carry_module_state

#: Largest bit width whose codes fit int8 (weight codes reach +-(2**k - 1)).
MAX_INT8_BITS = 7


@dataclasses.dataclass
class LowBitConfig:
    """Precision of one low-bit layer.

    Args:
        bits_w (int): Weight bit width k, 1-16, or 32 for float weights. Defaults to 4.
        bits_a (int): Activation bit width, 1-16, or 32 for float inputs. Defaults to 4.
        quantize_weights (bool): Quantize the weights. Defaults to True.
        quantize_activations (bool): Quantize the layer input (False: the first stage of
            two-stage optimisation). Defaults to True.
        integer_gemm (bool): Run the forward as an exact int8 GEMM when both operands are
            quantized to <= 7 bits; False always uses the float path. Defaults to True.
        scale_weights (bool): Multiply the k-bit weights (in [-1, 1]) by ``max|w|`` (no
            gradient), so a layer keeps the float layer's output scale. Not in the paper, whose
            layers are all followed by BN (which undoes any scale); needed where no BN follows
            (FPN, RPN and RoI heads of detectors). Defaults to False.
    """
    bits_w: int = 4
    bits_a: int = 4
    quantize_weights: bool = True
    quantize_activations: bool = True
    integer_gemm: bool = True
    scale_weights: bool = False

    def __post_init__(self) -> None:
        check_bits(self.bits_w, 'bits_w')
        check_bits(self.bits_a, 'bits_a')
        for name in ('quantize_weights', 'quantize_activations', 'integer_gemm',
                     'scale_weights'):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f'{name} must be a bool, but got {getattr(self, name)!r}')


class LowBitLayerMixin:
    """What the three low-bit layers share: the switches, operand quantization and the swap."""

    lowbit: LowBitConfig
    input_quantizable: bool
    fp_this_iter: bool

    def _init_lowbit(self, config: Optional[LowBitConfig], input_quantizable: bool) -> None:
        self.lowbit = config if config is not None else LowBitConfig()
        self.input_quantizable = input_quantizable
        self.fp_this_iter = False

    @classmethod
    def from_float(cls, mod: nn.Module, config: Optional[LowBitConfig] = None,
                   input_quantizable: bool = True) -> nn.Module:
        """A low-bit layer holding the very same Parameter objects as ``mod`` (no copy).

        Hooks and extra attributes of ``mod`` are carried over; no Parameter is added.
        ``config`` is copied (each layer owns its :class:`LowBitConfig`).
        """
        with torch.device('meta'):  # no second weight is allocated
            new = cls(*cls._float_args(mod))
        new.weight, new.bias = mod.weight, mod.bias
        carry_module_state(mod, new)
        new._init_lowbit(dataclasses.replace(config) if config is not None else None,
                         input_quantizable)
        return new.train(mod.training)

    def _operands(self, x: Tensor, w: Tensor):
        """(x_hat, w_hat, w_scale, integer): the operands of this forward, the scale of the
        weight levels (None without ``scale_weights``) and whether the int8 GEMM applies."""
        cfg = self.lowbit
        if self.training and self.fp_this_iter:
            return x, w, None, False
        quant_x = cfg.quantize_activations and self.input_quantizable and cfg.bits_a != FP_BITS
        quant_w = cfg.quantize_weights and cfg.bits_w != FP_BITS
        x_hat = quantize_activation(x, cfg.bits_a) if quant_x else x
        w_hat = quantize_weight(w, cfg.bits_w) if quant_w else w
        w_scale = None
        if quant_w and cfg.scale_weights:
            w_scale = w.detach().abs().max()  # Tensor[], no gradient
            w_hat = w_hat * w_scale
        integer = quant_x and quant_w and cfg.integer_gemm and \
            max(cfg.bits_a, cfg.bits_w) <= MAX_INT8_BITS and x.numel() > 0
        return x_hat, w_hat, w_scale, integer

    def extra_repr(self) -> str:
        cfg = self.lowbit
        w = cfg.bits_w if cfg.quantize_weights else FP_BITS
        a = cfg.bits_a if cfg.quantize_activations and self.input_quantizable else FP_BITS
        return f'{super().extra_repr()}, W{w}A{a}'


class _LowBitConvNd(LowBitLayerMixin):
    """Shared by LowBitConv2d/3d; ``super()`` here is their torch base class."""

    @staticmethod
    def _float_args(conv: nn.modules.conv._ConvNd) -> tuple:
        return (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode)

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        x_hat, w_hat, w_scale, integer = self._operands(input, weight)
        if integer:
            geo = ConvGeometry(tuple(self.kernel_size), tuple(self.stride),
                               _explicit_padding(self), tuple(self.dilation), self.groups)
            return lowbit_int_conv(x_hat, w_hat, bias, self.lowbit.bits_a, self.lowbit.bits_w,
                                   geo, w_scale)
        return super()._conv_forward(x_hat, w_hat, bias)


class LowBitConv2d(_LowBitConvNd, nn.Conv2d):
    """``nn.Conv2d`` on k-bit weights and inputs; build with :meth:`from_float`.

    Examples:
        >>> conv = LowBitConv2d.from_float(nn.Conv2d(3, 8, 3, padding=1))
        >>> conv(torch.rand(2, 3, 16, 16)).shape
        torch.Size([2, 8, 16, 16])
    """


class LowBitConv3d(_LowBitConvNd, nn.Conv3d):
    """``nn.Conv3d`` on k-bit weights and inputs; build with :meth:`from_float`."""


class LowBitLinear(LowBitLayerMixin, nn.Linear):
    """``nn.Linear`` on k-bit weights and inputs (last dim); build with :meth:`from_float`."""

    @staticmethod
    def _float_args(linear: nn.Linear) -> tuple:
        return (linear.in_features, linear.out_features, linear.bias is not None)

    def forward(self, input: Tensor) -> Tensor:
        x_hat, w_hat, w_scale, integer = self._operands(input, self.weight)
        if integer:
            return lowbit_int_linear(x_hat, w_hat, self.bias, self.lowbit.bits_a,
                                     self.lowbit.bits_w, w_scale)
        return F.linear(x_hat, w_hat, self.bias)


#: DAQ class (what :func:`~.convert.daq_class_for` accepts) -> low-bit class.
LOWBIT_CLASSES = {DAQConv2d: LowBitConv2d, DAQConv3d: LowBitConv3d, DAQLinear: LowBitLinear}


FilterFn = Callable[[nn.Module, str], bool]


def convert_lowbit(model: nn.Module, *, filter_fn: Optional[FilterFn] = None,
                   include: Sequence[str] = (), exclude: Sequence[str] = (),
                   weights_only: Sequence[str] = (), **options: Any) -> ConversionReport:
    """Replace Conv2d/Conv3d/Linear layers below ``model`` by low-bit layers, in place.

    Which layers can be swapped follows :func:`~.convert.daq_class_for` (the math of the torch
    class, zero padding). The very same Parameter objects are kept and nothing is added to the
    ``state_dict``, so checkpoints load both ways and optimizers stay valid.

    Args:
        model (nn.Module): The model (not itself a layer).
        filter_fn (Callable[[nn.Module, str], bool], optional): False keeps a layer in float.
        include (Sequence[str]): Regexes (``re.search``); if given only matching names are
            converted. Defaults to ().
        exclude (Sequence[str]): Regexes of names kept in float. Defaults to ().
        weights_only (Sequence[str]): Regexes of converted layers whose input always stays
            float (``input_quantizable=False``). Defaults to ().
            A pattern that matches no Conv/Linear layer triggers a warning.
        **options: :class:`LowBitConfig` fields; unknown ones raise.

    Returns:
        ConversionReport: converted names and the reasons others stayed float.
    """
    fields = {f.name for f in dataclasses.fields(LowBitConfig)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise TypeError(f'options must be among {sorted(fields)}, but got unknown {unknown}')
    config = LowBitConfig(**options)
    includes, excludes = _compile(include, 'include'), _compile(exclude, 'exclude')
    float_inputs = _compile(weights_only, 'weights_only')
    report = ConversionReport()
    swapped: Dict[int, nn.Module] = {}
    used = set()
    for name, module in list(model.named_modules(remove_duplicate=False)):
        if not name or not isinstance(module, (nn.Conv2d, nn.Conv3d, nn.Linear)):
            continue
        used.update(p.pattern for p in includes + excludes + float_inputs if p.search(name))
        reason = _skip_reason(module, name, includes, excludes, filter_fn)
        if reason:
            report.skipped[name] = reason
            continue
        new = swapped.get(id(module))
        if new is None:
            daq_cls, reason = daq_class_for(module)
            if daq_cls is None:
                report.skipped[name] = reason
                continue
            quantizable = not any(p.search(name) for p in float_inputs)
            new = swapped[id(module)] = LOWBIT_CLASSES[daq_cls].from_float(
                module, config, quantizable)
        parent, _, child = name.rpartition('.')
        setattr(model.get_submodule(parent), child, new)
        report.converted.append(name)
    unused = [p.pattern for p in includes + excludes + float_inputs if p.pattern not in used]
    if unused:
        warnings.warn(f'include/exclude/weights_only patterns {unused} match no Conv2d/Conv3d/'
                      f'Linear layer of {type(model).__name__}; check their spelling', stacklevel=2)
    return report


def _skip_reason(module: nn.Module, name: str, includes: Sequence[re.Pattern],
                 excludes: Sequence[re.Pattern], filter_fn) -> str:
    if isinstance(module, LowBitLayerMixin):
        return 'already a low-bit layer'
    if includes and not any(p.search(name) for p in includes):
        return 'not matched by include'
    if any(p.search(name) for p in excludes):
        return 'matched by exclude'
    if filter_fn is not None and not filter_fn(module, name):
        return 'rejected by filter_fn'
    return ''


def lowbit_layers(model: nn.Module) -> Dict[str, nn.Module]:
    """The low-bit layers of ``model`` by qualified name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LowBitLayerMixin)}


def set_precision(model: nn.Module, **changes: Any) -> int:
    """Set :class:`LowBitConfig` fields on every low-bit layer of ``model``; returns the count.

    Examples:
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
        >>> _ = convert_lowbit(model, bits_w=8, bits_a=8)
        >>> set_precision(model, bits_w=4, bits_a=4)
        2
    """
    layers = lowbit_layers(model).values()
    for layer in layers:
        layer.lowbit = dataclasses.replace(layer.lowbit, **changes)  # validated
    return len(layers)
