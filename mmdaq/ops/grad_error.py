"""How far an INT8 backward is from float GEMMs on the same operands (the fidelity guard's probe).

The INT8 layer's backward, asked to by its scheme (``scheme.measure_error``), also runs the two
gradient GEMMs in float32 on the dequantized saved input and the float weight and output
gradient, and keeps the relative errors of its INT8 G_W and G_X in ``scheme.last_error``
(tensors: no host sync). It costs one layer's float backward, so the guard asks for it on one
layer at a time, every N iterations.
"""
from typing import Dict, Optional

import torch
from torch import Tensor


def float_grads(grad_y: Tensor, x_hat: Tensor, weight: Tensor, geo, need_x: bool,
                need_w: bool) -> tuple:
    """``(G_X, G_W)`` of a convolution (or Linear, ``geo.kernel == ()``) in float32.

    Args:
        grad_y (Tensor[N, C_out, *O] or Tensor[M, C_out]): Output gradient.
        x_hat (Tensor[N, C_in, *S] or Tensor[M, C_in]): The (dequantized) input.
        weight (Tensor[C_out, C_in/G, *k] or Tensor[C_out, C_in]): Weight.
        geo: The layer's ``ConvGeometry``.
    """
    grad_y, weight = grad_y.float(), weight.float()
    if not geo.kernel:
        return (grad_y @ weight if need_x else None, grad_y.t() @ x_hat if need_w else None)
    grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
        grad_y, x_hat, weight, None, list(geo.stride), list(geo.padding), list(geo.dilation),
        False, [0] * len(geo.kernel), geo.groups, [need_x, need_w, False])
    return grad_x, grad_w


def relative_error(approx: Optional[Tensor], reference: Optional[Tensor]) -> Optional[Tensor]:
    """``||approx - reference|| / ||reference||`` (Tensor[], float32; 0 for a zero reference)."""
    if approx is None or reference is None:
        return None
    norm = reference.norm()
    return torch.where(norm > 0, (approx.float() - reference).norm() / norm.clamp_min(1e-30),
                       torch.zeros_like(norm))


def int8_grad_errors(grad_y: Tensor, x_q: Tensor, s_x: Tensor, weight: Tensor, geo,
                     grad_x: Optional[Tensor], grad_w: Optional[Tensor]) -> Dict[str, Tensor]:
    """Relative errors of the INT8 ``grad_x`` / ``grad_w`` against float GEMMs on the same
    saved operands: ``{'grad_input': Tensor[], 'grad_weight': Tensor[]}`` (those computed)."""
    x_hat = x_q.float() * s_x
    ref_x, ref_w = float_grads(grad_y, x_hat, weight, geo, grad_x is not None, grad_w is not None)
    errors = dict(grad_input=relative_error(grad_x, ref_x),
                  grad_weight=relative_error(grad_w, ref_w))
    return {k: v for k, v in errors.items() if v is not None}
