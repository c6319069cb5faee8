"""DAQ's backward G_Y pass on CPU as one compiled op: the CPU twin of the Triton G_Y pass.

``mmdaq::daq_grad_codes`` (csrc/cpu/grad_codes_cpu.cpp) runs, for G_Y (float32 [N, C, *S]), the
per-channel statistics and objective clip, the distribution test, the update of DAQ's clip
state in place, both INT8 copies and the bias gradient, where the eager path dispatches some
twenty ops (most of them on [C] vectors) from Python per layer and backward. It takes the
state through the interface the fused CUDA chain uses
(:meth:`~mmdaq.quantization.schemes.QuantScheme.fused_grad_rule`, ``fused_clip_state``,
``record_fused_grads``) and gives the codes, scales and state of
``DAQScheme.quantize_grads`` bit for bit (tested).
"""
from typing import Optional

import torch
from torch import Tensor

from ..kernels import compiled_op_available, daq_grad_codes
from ..quantization.schemes import FusedClipState, FusedGradRule, QuantScheme
from .triton_grad_stats import GradCodes


def daq_grad_codes_cpu_applies(g: Tensor, rule: Optional[FusedGradRule],
                               scheme: QuantScheme) -> bool:
    """Whether :func:`daq_grad_codes_cpu` serves this backward: DAQ's objective rule (``rule``
    from ``scheme.fused_grad_rule``), 8-bit copies, a non-empty float32 G_Y on CPU and the
    compiled op built."""
    return (rule is not None and rule.kind == 'objective' and scheme.grad_bits == 8
            and g.device.type == 'cpu' and g.dtype == torch.float32 and g.dim() >= 2
            and g.numel() > 0 and compiled_op_available('daq_grad_codes', g.device))


def daq_grad_codes_cpu(g: Tensor, rule: FusedGradRule, clip_state: FusedClipState,
                       need_bias: bool) -> GradCodes:
    """DAQ's G_Y pass: both INT8 copies of ``g`` and the per-channel results, the clip state
    updated in place.

    Args:
        g (Tensor[N, C, *S] or Tensor[M, C], float32): G_Y on CPU.
        rule (FusedGradRule): DAQ's rule (kind ``'objective'``: threshold, alpha, bins).
        clip_state (FusedClipState): The slot's clip state (``DAQScheme.fused_clip_state``).
        need_bias (bool): Also sum G_Y over all but the channel dim.

    Returns:
        GradCodes: the codes in G_Y's shape and layout (row-major), ``grad_bias`` empty
        without ``need_bias``.
    """
    return GradCodes(*daq_grad_codes(g, 1, rule.num_bins, float(rule.alpha),
                                     float(rule.threshold), clip_state.prev_clip,
                                     clip_state.clip_ratio, clip_state.is_gaussian,
                                     clip_state.has_history, need_bias))
