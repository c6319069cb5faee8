"""Exact integer GEMMs over convolution groups, on int8 codes.

One group is a plain :func:`~.int8_matmul.int8_matmul`. For several groups
(grouped and depthwise convolutions, where each GEMM is tiny) the groups run as one
batched float GEMM whose result is still exact: float32 while every partial sum of
the reduction stays below 2**24 (K <= 1040), float64 otherwise (exact below 2**53,
i.e. for any K under 5e11).
"""
import torch
from torch import Tensor

from .int8_matmul import MAX_FLOAT_EXACT_K, int8_matmul


def grouped_int8_matmul(a: Tensor, b: Tensor, backend: str = 'auto') -> Tensor:
    """Exact ``a[g] @ b[g]`` for every group g.

    Args:
        a (Tensor[G, M, K], int8): Left operands.
        b (Tensor[G, K, N], int8): Right operands.
        backend (str): Backend of the single-group case (see :func:`int8_matmul`).

    Returns:
        Tensor[G, M, N]: Integer-valued; int32/int64 for one group, float32 (exact) or
        float64 (exact) for several.
    """
    groups, _, k = a.shape
    if groups == 1:
        return int8_matmul(a[0], b[0], backend=backend).unsqueeze(0)
    dtype = torch.float32 if k <= MAX_FLOAT_EXACT_K else torch.float64
    return torch.bmm(a.to(dtype), b.to(dtype))
