"""INT8 convolutions by oneDNN's u8 x s8 kernels (CPUs with VNNI or AMX), bit-exact.

oneDNN's int8 convolution (``torch.ops.onednn.qconv_pointwise``: implicit GEMM, no im2col,
VNNI ``vpdpbusd``) takes unsigned activations. A symmetric code ``q`` in [-127, 127] is
stored as ``q + 128`` with zero point 128, so oneDNN computes ``sum (u - 128) w = sum q w``
exactly, padding included (it pads with the zero point). Its scales are set to 1, so it writes
``float(acc)``; :func:`~mmdaq.kernels.channels_first_epilogue` then applies our scale and bias
while it lays the result out as NC* (oneDNN writes channels last): the same floats as the
GEMM path, bit for bit (tested).

Not used on AVX2-only CPUs: there oneDNN's u8 x s8 kernels sum pairs in saturating 16-bit
(``vpmaddubsw``), which is not exact for 8-bit codes. The weight is re-packed into oneDNN's
blocked layout on every call (it changes every step), a cost that grows with the weight and
not with the batch, so deep layers at small batches lose; that is why :mod:`.conv_autotune`
picks between this and the GEMM path per shape.
"""
from typing import Optional

import torch
from torch import Tensor

from ..kernels import UINT8_ZERO_POINT as ZERO_POINT
from ..kernels import channels_first_epilogue, int8_channels_last
from .int8_matmul import MAX_CHUNK_K, has_fast_int8_cpu


def _onednn_ops_present() -> bool:
    ops = torch.ops.onednn
    return hasattr(ops, 'qconv_prepack') and hasattr(ops, 'qconv_pointwise')


_AVAILABLE = has_fast_int8_cpu() and _onednn_ops_present()


def onednn_conv_available() -> bool:
    """Whether this CPU and torch build have exact oneDNN int8 convolutions (VNNI/AMX)."""
    return _AVAILABLE


def onednn_conv_supported(x_q: Tensor, w_q: Tensor, geo) -> bool:
    """Whether :func:`int8_conv_onednn` runs this convolution (CPU, 1-3 spatial dims, a
    reduction short enough for exact int32 accumulation)."""
    return (_AVAILABLE and x_q.device.type == 'cpu' and len(geo.kernel) in (1, 2, 3)
            and w_q[0].numel() <= MAX_CHUNK_K and x_q.numel() > 0 and w_q.numel() > 0)


def int8_conv_onednn(x_q: Tensor, w_q: Tensor, scale: Tensor, bias: Optional[Tensor],
                     geo) -> Tensor:
    """``conv(x_q, w_q) * scale (+ bias)`` in float32 by oneDNN, exact integer accumulation.

    Args:
        x_q (Tensor[N, C_in, *S], int8): Input codes (1 to 3 spatial dims).
        w_q (Tensor[C_out, C_in/G, *k], int8): Weight codes.
        scale (Tensor[], float32): Multiplier of the integer result.
        bias (Tensor[C_out], optional): Added after scaling.
        geo (ConvGeometry): Convolution arguments.

    Returns:
        Tensor[N, C_out, *O], float32, contiguous.
    """
    x_u = int8_channels_last(x_q, to_uint8=True)
    c_out = w_q.shape[0]
    # One weight scale for the tensor: with one per channel the pre-pack reads them with an
    # .item() each (two dispatched calls per channel).
    ones = torch.ones(1, dtype=torch.float64)
    zeros = torch.zeros(1, dtype=torch.int64)
    stride, padding, dilation = list(geo.stride), list(geo.padding), list(geo.dilation)
    packed = torch.ops.onednn.qconv_prepack(w_q.contiguous(), ones, 1.0, ZERO_POINT, stride,
                                            padding, dilation, geo.groups, list(x_u.shape))
    acc = torch.ops.onednn.qconv_pointwise(x_u, 1.0, ZERO_POINT, packed, ones, zeros, None,
                                           stride, padding, dilation, geo.groups, 1.0, 0,
                                           torch.float32, 'none', [], '')
    # acc: float(int32 sums), [N, C_out, *O] stored channels last, i.e. [N*L, C_out].
    out_shape = tuple(acc.shape)
    acc_2d = acc.movedim(1, -1).reshape(-1, c_out)
    return channels_first_epilogue(acc_2d, scale, bias, out_shape)
