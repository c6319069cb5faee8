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


def laplace(shape, generator: torch.Generator) -> Tensor:
    """Laplace(0, 1) samples (a sharp, long-tailed gradient channel), by inverse CDF."""
    u = torch.rand(shape, generator=generator) - 0.5
    return -torch.sign(u) * torch.log1p(-2 * u.abs())


def spike_and_slab(shape, generator: torch.Generator, slab: float = 0.1) -> Tensor:
    """"Inverted-T" samples: a N(0, 0.05^2) spike, with probability ``slab`` a N(0, 1) value."""
    is_slab = torch.rand(shape, generator=generator) < slab
    return torch.where(is_slab, torch.randn(shape, generator=generator),
                       0.05 * torch.randn(shape, generator=generator))
