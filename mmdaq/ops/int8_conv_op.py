"""The INT8 layer as two ``torch.library`` custom ops, so ``torch.compile`` has no graph break.

``mmdaq::int8_conv`` (forward; it also returns the codes of X and their scale, which the
backward keeps) and ``mmdaq::int8_conv_backward`` run the passes of :mod:`.int8_layer`, with
fakes and the autograd formula of :mod:`.layer_op`; :func:`int8_conv` / :func:`int8_linear` are
the public functions of the layer.
"""
from typing import Optional

import torch
from torch import Tensor

from ..quantization.schemes import QuantScheme
from .geometry import ConvGeometry, linear_as_conv
from .int8_layer import int8_conv_backward_pass, int8_conv_forward_pass
from .layer_op import define_layer_ops

_int8_conv = define_layer_ops(
    'int8_conv', int8_conv_forward_pass, int8_conv_backward_pass, ('Tensor x_q', 'Tensor s_x'),
    lambda x: (torch.empty_like(x, dtype=torch.int8), x.new_empty((), dtype=torch.float32)))


def int8_conv(x: Tensor, weight: Tensor, bias: Optional[Tensor], scheme: QuantScheme,
              geo: ConvGeometry, slot: int = 0) -> Tensor:
    """INT8 convolution (1-3 spatial dims) with the scheme's quantizers, as ``mmdaq::int8_conv``.

    Args:
        x (Tensor[N, C_in, *S]): Input.
        weight (Tensor[C_out, C_in/G, *k]): Weight.
        bias (Tensor[C_out], optional): Bias (float).
        scheme (QuantScheme): Quantizers and their state.
        geo (ConvGeometry): Convolution arguments.
        slot (int): Call slot of stateful schemes (see ``QuantScheme.next_call_slot``).

    Returns:
        Tensor[N, C_out, *O].
    """
    y, _, _ = _int8_conv(x, weight, bias, scheme.op_handle, *geo.op_args(), slot)
    return y


def int8_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor], scheme: QuantScheme,
                slot: int = 0) -> Tensor:
    """:func:`int8_conv` as a Linear layer on the last dim: Tensor[*, C_in] -> Tensor[*, C_out]."""
    return linear_as_conv(int8_conv, x, weight, bias, scheme, slot=slot)
