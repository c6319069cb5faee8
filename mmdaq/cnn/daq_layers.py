"""DAQ layers: drop-in ``nn.Conv2d`` / ``nn.Conv3d`` / ``nn.Linear`` with INT8 GEMMs.

Each layer is its torch base class (same attributes, same Parameters, same
``state_dict`` keys) plus a quantization scheme (:mod:`mmdaq.quantization.schemes`)
that is not a Parameter or buffer, so checkpoints load strictly into the plain
FP32 model and back. ``quant_enabled = False`` runs the plain float layer (used for
FP32 warm-up). ``_conv_forward(x, weight, bias)`` is routed through INT8 too,
because mmcv's ``ConvModule`` calls it directly for efficient conv-BN evaluation.
"""
from typing import Any, Optional, Tuple

import torch
from torch import Tensor, nn

from ..ops.geometry import ConvGeometry
from ..ops.int8_conv_op import int8_conv, int8_linear
from ..ops.shift_layer import shift_conv, shift_linear
from ..quantization.schemes import SCHEMES, QuantScheme, build_scheme

# What a torch module carries besides Parameters that a swap must keep.
#: scheme.dataflow -> (conv function, linear function) running that scheme's GEMMs.
LAYER_FUNCTIONS = {'int8': (int8_conv, int8_linear), 'shift': (shift_conv, shift_linear)}

_HOOK_ATTRS = ('_forward_hooks', '_forward_hooks_with_kwargs', '_forward_hooks_always_called',
               '_forward_pre_hooks', '_forward_pre_hooks_with_kwargs', '_backward_hooks',
               '_backward_pre_hooks', '_state_dict_hooks', '_state_dict_pre_hooks',
               '_load_state_dict_pre_hooks', '_load_state_dict_post_hooks')


def carry_module_state(old: nn.Module, new: nn.Module) -> None:
    """Give ``new`` the hooks of ``old`` and the instance attributes it lacks (e.g. mmengine's
    ``init_cfg``): what a layer swap must keep besides the Parameters."""
    for name in _HOOK_ATTRS:
        if hasattr(old, name):
            setattr(new, name, getattr(old, name))
    for key, value in vars(old).items():
        if key not in vars(new):
            new.__dict__[key] = value


class DAQLayerMixin:
    """What the three DAQ layers share: the scheme, the switch and the float-to-DAQ swap."""

    quant_scheme: QuantScheme
    quant_enabled: bool

    def _init_quantization(self, method: str, options: dict) -> None:
        scheme = build_scheme(method, **options)
        if not isinstance(scheme, QuantScheme):
            ours = sorted(n for n, cls in SCHEMES.items() if issubclass(cls, QuantScheme))
            raise ValueError(f'method of a DAQ layer must be one of {ours}, but got {method!r}, '
                             f'which has layers of its own: convert_model builds them')
        self.quant_scheme = scheme
        self.quant_enabled = True

    @classmethod
    def from_float(cls, mod: nn.Module, method: str = 'daq', **options: Any) -> nn.Module:
        """A DAQ layer holding the very same Parameter objects as ``mod`` (no copy).

        Hooks and extra attributes of ``mod`` are carried over; no Parameter is added.
        """
        with torch.device('meta'):  # no second weight is allocated
            new = cls(*cls._float_args(mod), method=method, **options)
        new.weight = mod.weight
        new.bias = mod.bias
        carry_module_state(mod, new)
        return new.train(mod.training)

    def _call_slot(self) -> int:
        """Call slot of this forward for the scheme's state (0 when no gradient is tracked)."""
        return self.quant_scheme.next_call_slot() if torch.is_grad_enabled() else 0

    def extra_repr(self) -> str:
        state = 'int8' if self.quant_enabled else 'float (int8 off)'
        return f'{super().extra_repr()}, method={self.quant_scheme.name}, {state}'


def _explicit_padding(conv: nn.modules.conv._ConvNd) -> Tuple[int, ...]:
    """Symmetric zero padding per spatial dim; 'valid'/'same' resolved to numbers."""
    if conv.padding_mode != 'zeros':
        raise ValueError(f"padding_mode must be 'zeros' for a DAQ layer, but got "
                         f'{conv.padding_mode!r}; keep this layer in float')
    if conv.padding == 'valid':
        return (0, ) * len(conv.kernel_size)
    if conv.padding == 'same':
        totals = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
        if any(t % 2 for t in totals):
            raise ValueError("padding='same' must be symmetric for a DAQ layer (odd effective "
                             f'kernel), but got kernel {conv.kernel_size} dilation {conv.dilation}')
        return tuple(t // 2 for t in totals)
    return tuple(conv.padding)


class _DAQConvNd(DAQLayerMixin):
    """Shared by DAQConv2d/3d; ``super()`` here is their torch base (nn.Conv2d / nn.Conv3d)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = 'zeros',
                 device=None, dtype=None, method: str = 'daq', **options: Any) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, device=device, dtype=dtype)
        _explicit_padding(self)
        self._init_quantization(method, options)

    @staticmethod
    def _float_args(conv: nn.modules.conv._ConvNd) -> tuple:
        return (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode)

    def _geometry(self) -> ConvGeometry:
        return ConvGeometry(tuple(self.kernel_size), tuple(self.stride), _explicit_padding(self),
                            tuple(self.dilation), self.groups)

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        if not self.quant_enabled or input.numel() == 0:
            return super()._conv_forward(input, weight, bias)
        conv = LAYER_FUNCTIONS[self.quant_scheme.dataflow][0]
        return conv(input, weight, bias, self.quant_scheme, self._geometry(), self._call_slot())


class DAQConv2d(_DAQConvNd, nn.Conv2d):
    """``nn.Conv2d`` with INT8 forward, weight-gradient and input-gradient GEMMs.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            padding_mode: As ``nn.Conv2d`` (padding_mode must be 'zeros').
        method (str): Quantization method, see :data:`mmdaq.quantization.schemes.SCHEMES`.
            Defaults to 'daq'.
        **options: Options of the method (e.g. ``a=0.8`` for 'daq').

    Examples:
        >>> conv = DAQConv2d(3, 8, 3, padding=1)
        >>> conv(torch.randn(2, 3, 16, 16)).shape
        torch.Size([2, 8, 16, 16])
    """


class DAQConv3d(_DAQConvNd, nn.Conv3d):
    """``nn.Conv3d`` with INT8 GEMMs; arguments as :class:`DAQConv2d`."""


class DAQLinear(DAQLayerMixin, nn.Linear):
    """``nn.Linear`` with INT8 GEMMs (on the last dim of any input).

    Args:
        in_features, out_features, bias: As ``nn.Linear``.
        method (str): Quantization method. Defaults to 'daq'.
        **options: Options of the method.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None,
                 dtype=None, method: str = 'daq', **options: Any) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._init_quantization(method, options)

    @staticmethod
    def _float_args(linear: nn.Linear) -> tuple:
        return (linear.in_features, linear.out_features, linear.bias is not None)

    def forward(self, input: Tensor) -> Tensor:
        if not self.quant_enabled or input.numel() == 0:
            return super().forward(input)
        linear = LAYER_FUNCTIONS[self.quant_scheme.dataflow][1]
        return linear(input, self.weight, self.bias, self.quant_scheme, self._call_slot())
