"""Helpers shared by the test suite (and by users testing their own layers)."""
import pytest
import torch
from torch import Tensor

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')

#: Devices every device-parametrised test runs on; the CUDA one skips without a GPU.
DEVICES = ('cpu', pytest.param('cuda', marks=needs_cuda))


def sqnr(reference: Tensor, approximation: Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: ``20 log10(|ref| / |ref - approx|)``.

    Returns ``inf`` when the two are equal.
    """
    reference = reference.detach().double()
    noise = (reference - approximation.detach().double()).norm()
    if noise == 0:
        return float('inf')
    return float(20 * torch.log10(reference.norm() / noise))
