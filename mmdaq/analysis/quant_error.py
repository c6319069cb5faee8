"""Error of the INT8 gradients of a layer against FP32, per quantization method.

Given a layer's real input X, weight W and output gradient G_Y (captured with
:class:`~.capture.GradientCapture`), :func:`layer_gradient_errors` runs the INT8
layer function of each method (full dataflow: X and W quantized per tensor, G_Y
as the method does) and compares its G_W and G_X with the FP32 ones.
"""
from typing import Dict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cnn.daq_layers import LAYER_FUNCTIONS, _explicit_padding
from ..ops.geometry import LINEAR_GEOMETRY, ConvGeometry
from ..quantization import channel_major, magnitude_weighted_error, max_code
from ..quantization.schemes import QuantScheme

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def layer_geometry(module: nn.Module) -> ConvGeometry:
    """The :class:`ConvGeometry` of a float Conv1d/2d/3d or Linear layer."""
    if isinstance(module, nn.Linear):
        return LINEAR_GEOMETRY
    return ConvGeometry(tuple(module.kernel_size), tuple(module.stride), _explicit_padding(module),
                        tuple(module.dilation), module.groups)


def _fp32_grads(x: Tensor, w: Tensor, g_y: Tensor, geo: ConvGeometry):
    x = x.detach().float().requires_grad_()
    w = w.detach().float().requires_grad_()
    if geo.kernel:
        y = _CONV[len(geo.kernel)](x, w, None, geo.stride, geo.padding, geo.dilation, geo.groups)
    else:
        y = F.linear(x, w)
    y.backward(g_y)
    return x.grad, w.grad


def _quantized_grads(x: Tensor, w: Tensor, g_y: Tensor, geo: ConvGeometry,
                     scheme: QuantScheme, slot: int):
    """G_X, G_W of the layer function of ``scheme``'s dataflow (INT8 or ShiftQuant)."""
    x = x.detach().float().requires_grad_()
    w = w.detach().float().requires_grad_()
    conv, linear = LAYER_FUNCTIONS[scheme.dataflow]
    y = conv(x, w, None, scheme, geo, slot) if geo.kernel else linear(x, w, None, scheme, slot)
    y.backward(g_y)
    return x.grad, w.grad


def _compare(ref: Tensor, approx: Tensor) -> Dict[str, float]:
    ref, approx = ref.double().flatten(), approx.double().flatten()
    power = ref.pow(2).mean()
    rel_mse = (ref - approx).pow(2).mean() / power if power > 0 else torch.tensor(0.0)
    cos = F.cosine_similarity(ref, approx, dim=0)
    return {'rel_mse': float(rel_mse), 'cos': float(cos)}


def layer_gradient_errors(module: nn.Module, x: Tensor, g_y: Tensor,
                          schemes: Dict[str, QuantScheme], alpha: float,
                          slot: int = 0) -> Dict[str, dict]:
    """Gradient errors of one layer for every method.

    Args:
        module (nn.Module): Float Conv1d/2d/3d or Linear layer (its weight is used).
        x (Tensor[N, C_in, *S] or Tensor[*, C_in]): Captured input.
        g_y (Tensor[N, C_out, *O] or Tensor[*, C_out]): Captured output gradient.
        schemes (dict[str, QuantScheme]): Method name -> this layer's scheme (stateful
            schemes keep their state across calls, as in training).
        alpha (float): Magnitude weight of the MCS objective (see
            :func:`~mmdaq.quantization.magnitude_weighted_error`).
        slot (int): Call slot (index of the call within the iteration). Defaults to 0.

    Returns:
        dict: method -> {'mwe': magnitude-weighted error of the G_W copy of G_Y (mean over
        channels, relative to abs-max clipping of each channel; NaN for schemes without a clip
        per output channel, e.g. ShiftQuant's group scales), 'gw_rel_mse', 'gw_cos',
        'gx_rel_mse', 'gx_cos', 'share_gaussian' (DAQ only, else NaN)}.
    """
    geo = layer_geometry(module)
    if not geo.kernel:  # Linear on the last dim
        x, g_y = x.reshape(-1, x.shape[-1]), g_y.reshape(-1, g_y.shape[-1])
    g_y = g_y.float()
    gx_ref, gw_ref = _fp32_grads(x, module.weight, g_y, geo)
    g_cm = channel_major(g_y, 1)  # [C_out, N*L]
    base_mwe = magnitude_weighted_error(g_cm, g_cm.abs().amax(dim=1), alpha)  # [C_out]
    out = {}
    for method, scheme in schemes.items():
        scheme.collect_stats = True
        gx, gw = _quantized_grads(x, module.weight, g_y, geo, scheme, slot)
        if scheme.last_grad_weight_scale is None:  # no clip per output channel (ShiftQuant)
            mwe_rel = float('nan')
        else:
            clip = scheme.last_grad_weight_scale * max_code(8)  # [C_out], what was applied
            mwe = magnitude_weighted_error(g_cm, clip, alpha)
            ok = base_mwe > 0
            mwe_rel = float((mwe[ok] / base_mwe[ok]).mean()) if ok.any() else 1.0
        gw_err, gx_err = _compare(gw_ref, gw), _compare(gx_ref, gx)
        gauss = scheme.last_stats.get('is_gaussian')
        out[method] = {
            'mwe': mwe_rel,
            'gw_rel_mse': gw_err['rel_mse'], 'gw_cos': gw_err['cos'],
            'gx_rel_mse': gx_err['rel_mse'], 'gx_cos': gx_err['cos'],
            'share_gaussian': float(gauss.float().mean()) if gauss is not None else float('nan'),
        }
    return out
