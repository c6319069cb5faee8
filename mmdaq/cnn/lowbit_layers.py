"""Low-bit layers of Zhuang et al. (k-bit weights and activations, float gradients).

:class:`LowBitConv2d` / :class:`LowBitConv3d` / :class:`LowBitLinear` are their torch base
classes (same attributes, same Parameter objects, same ``state_dict`` keys) whose forward runs
on quantized operands (:mod:`mmdaq.quantization.lowbit`)::

    y = conv(quantize_activation(x, bits_a), quantize_weight(w, bits_w)) + b

With both operands at k <= 7 bits and ``integer_gemm`` on, the GEMM is the exact integer one of
:mod:`mmdaq.ops.lowbit_conv`; otherwise (8-16 bits, weights only, or ``integer_gemm=False``) it
is the float convolution of the quantized values ("fake quantization"). Both give the same
output up to float32 rounding (tested). ``convert_model(model, method='zhuang_w4a4', ...)`` swaps
them in (the options are :class:`~mmdaq.quantization.lowbit.LowBitConfig`'s).

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
from typing import Any, Dict, Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..ops.geometry import ConvGeometry
from ..ops.lowbit_conv import lowbit_int_conv, lowbit_int_linear
from ..quantization.lowbit import FP_BITS, LowBitConfig, quantize_activation, quantize_weight
from .daq_layers import DAQConv2d, DAQConv3d, DAQLinear, _explicit_padding, carry_module_state

#: Largest bit width whose codes fit int8 (weight codes reach +-(2**k - 1)).
MAX_INT8_BITS = 7


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


def lowbit_layers(model: nn.Module) -> Dict[str, nn.Module]:
    """The low-bit layers of ``model`` by qualified name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LowBitLayerMixin)}


def set_precision(model: nn.Module, **changes: Any) -> int:
    """Set :class:`LowBitConfig` fields on every low-bit layer of ``model``; returns the count.

    Examples:
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
        >>> model = convert_model(model, method='zhuang_w4a4', bits_w=8, bits_a=8)
        >>> set_precision(model, bits_w=4, bits_a=4)
        2
    """
    layers = lowbit_layers(model).values()
    for layer in layers:
        layer.lowbit = dataclasses.replace(layer.lowbit, **changes)  # validated
    return len(layers)
