"""``mmdaq::daq_grad_codes``: DAQ's backward G_Y pass in one compiled op (CPU).

The statistics and objective clip of ``mmdaq::grad_channel_stats``, the distribution test, the
update of DAQ's clip state in place, both INT8 copies (``mmdaq::quantize_int8_pair``) and the
bias gradient. Its reference is ``DAQScheme.quantize_grads`` with its state
(:mod:`mmdaq.quantization.schemes`), which it equals bit for bit (tested in
tests/test_ops/test_grad_codes_cpu.py).
"""
from typing import Tuple

import torch
from torch import Tensor

from .extension import register_fake_if_built, require_extension


@register_fake_if_built('mmdaq::daq_grad_codes')
def _daq_grad_codes_fake(g, dim, num_bins, alpha, threshold, prev_clip, clip_ratio, is_gaussian,
                         has_history, need_bias):
    torch._check(g.dtype == torch.float32 and g.dim() >= 1,
                 lambda: 'daq_grad_codes: g must be a float32 tensor with a channel dim, but got '
                 f'{g.dtype} of shape {tuple(g.shape)}')
    per_channel = g.new_empty((g.shape[dim], ))
    codes = torch.empty_like(g, dtype=torch.int8, memory_format=torch.contiguous_format)
    return (codes, per_channel, torch.empty_like(codes), g.new_empty(()),
            torch.empty_like(per_channel), torch.empty_like(per_channel),
            torch.empty_like(per_channel),
            torch.empty_like(per_channel) if need_bias else g.new_empty((0, )))


def daq_grad_codes(g: Tensor, dim: int, num_bins: int, alpha: float, threshold: float,
                   prev_clip: Tensor, clip_ratio: Tensor, is_gaussian: Tensor, has_history: bool,
                   need_bias: bool) -> Tuple[Tensor, ...]:
    """DAQ's G_Y pass (see the module doc and the schema in csrc/grad_codes.cpp).

    Args:
        g (Tensor[..., C, ...], float32): G_Y, not empty, channels along ``dim``.
        dim (int): Channel dim.
        num_bins (int): Histogram bins at most (``min(num_bins, max(64, values per channel))``
            are used, DAQScheme's rule).
        alpha (float): Magnitude weight exponent of the objective.
        threshold (float): lambda of the distribution test.
        prev_clip, clip_ratio (Tensor[C], float32), is_gaussian (Tensor[C], bool): DAQ's clip
            state of the call slot, updated in place.
        has_history (bool): Whether the state holds an earlier update (kept where the new one
            is not finite) or is new (overwritten).
        need_bias (bool): Also return G_Y summed over all but ``dim``.

    Returns:
        tuple: ``(q_w, s_w, q_x, s_x, g_max, frac_above_sigma, clip, grad_bias)``: the per-channel
        codes (int8, G_Y's shape, row-major) and steps [C], the per-tensor codes and step [],
        the abs-max, ``P(|g| > sigma)`` and clip per channel, the bias gradient ([C], or [0]
        without ``need_bias``).
    """
    require_extension('daq_grad_codes')
    return torch.ops.mmdaq.daq_grad_codes(g, dim, num_bins, alpha, threshold, prev_clip,
                                          clip_ratio, is_gaussian, has_history, need_bias)
