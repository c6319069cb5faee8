"""The INT8 layer as two ``torch.library`` custom ops, so ``torch.compile`` has no graph break.

``mmdaq::int8_conv`` (forward; it also returns the codes of X and W and their scales, which
the backward keeps) and ``mmdaq::int8_conv_backward`` run the passes of :mod:`.int8_layer`, and
on CUDA those of :mod:`.fused_layer` (the Triton chain where it applies), with fakes and the
autograd formula of :mod:`.layer_op`; :func:`int8_conv` / :func:`int8_linear` are the public
functions of the layer.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from ..quantization.schemes import QuantScheme
from .fused_layer import fused_backward_pass, fused_forward_applies, fused_forward_pass
from .geometry import ConvGeometry, linear_as_conv
from .int8_layer import int8_conv_backward_pass, int8_conv_forward_pass
from .layer_op import define_layer_ops
from .triton_conv import taps_first_weight


def _saved_fake(x: Tensor, weight: Tensor, scheme: QuantScheme) -> Tuple[Tensor, ...]:
    """Fakes of the forward's saved ``(x_q, s_x, w_q, s_w)``: where the fused chain quantizes
    (:func:`~.fused_layer.fused_forward_applies`), X's codes channels last and W's in
    :data:`~.triton_conv.FORWARD_WEIGHT_ORDER`."""
    fmt = torch.channels_last if x.is_cuda and fused_forward_applies(x, weight, scheme) else \
        torch.preserve_format
    s_w_shape = weight.shape[:1] if scheme.weight_scale == 'per_channel' else ()
    w_q = torch.empty_like(weight, dtype=torch.int8, memory_format=torch.contiguous_format)
    if fmt is torch.channels_last:  # W's codes in the order the GEMM kernels read
        w_q = taps_first_weight(w_q)
    return (torch.empty_like(x, dtype=torch.int8, memory_format=fmt),
            x.new_empty((), dtype=torch.float32), w_q,
            weight.new_empty(s_w_shape, dtype=torch.float32))


_int8_conv = define_layer_ops(
    'int8_conv', int8_conv_forward_pass, int8_conv_backward_pass,
    ('Tensor x_q', 'Tensor s_x', 'Tensor w_q', 'Tensor s_w'), _saved_fake,
    device_passes={'cuda': (fused_forward_pass, fused_backward_pass)})


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
    return _int8_conv(x, weight, bias, scheme.op_handle, *geo.op_args(), slot)[0]


def int8_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor], scheme: QuantScheme,
                slot: int = 0) -> Tensor:
    """:func:`int8_conv` as a Linear layer on the last dim: Tensor[*, C_in] -> Tensor[*, C_out]."""
    return linear_as_conv(int8_conv, x, weight, bias, scheme, slot=slot)
