"""Helpers shared by the test suite (and by users testing their own layers)."""
import importlib.util
import os.path as osp
from types import ModuleType

import pytest
import torch
from torch import Tensor

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')

#: Devices every device-parametrised test runs on; the CUDA one skips without a GPU.
DEVICES = ('cpu', pytest.param('cuda', marks=needs_cuda))


def compile_triton_for_sm90(kernel, types: dict, constexprs: dict, num_warps: int = 4,
                            num_stages: int = 1, config=None):
    """Compile a Triton kernel for a Hopper GPU (sm_90) without one, with Triton's own ptxas.

    Run it in a process without ``TRITON_INTERPRET`` (the interpreter's language helpers do
    not compile). ``types`` maps argument names to Triton types (``'*fp32'``, ``'fp64'``;
    others default to ``'i32'``); ``config`` (a ``triton.Config``) adds its block sizes and
    warps to ``constexprs``. Returns the compiled kernel (``.asm['cubin']``).
    """
    import triton
    from triton.backends.compiler import GPUTarget
    fn = kernel.fn if hasattr(kernel, 'configs') else kernel  # below the autotuner
    if config is not None:
        constexprs = dict(constexprs, **config.kwargs)
        num_warps, num_stages = config.num_warps, config.num_stages
    signature = {name: 'constexpr' if name in constexprs else types.get(name, 'i32')
                 for name in fn.arg_names}
    src = triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    options = dict(num_warps=num_warps, num_stages=num_stages, enable_fp_fusion=False)
    return triton.compile(src, target=GPUTarget('cuda', 90, 32), options=options)


def run_without_triton_interpreter(script: str, timeout: float = 600) -> None:
    """Run ``script`` (a test module's ``__main__``, e.g. compiling kernels with
    :func:`compile_triton_for_sm90`) in a new Python process with ``TRITON_INTERPRET=0``;
    raise an AssertionError with its stderr if it fails."""
    import os
    import subprocess
    import sys
    out = subprocess.run([sys.executable, script], env=dict(os.environ, TRITON_INTERPRET='0'),
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-4000:]


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


def mixed_channel_grad(shape, seed: int) -> Tensor:
    """A gradient with channels of every kind along dim 1 (at least 3 channels).

    Channel 0 and 4+: Laplace; 1: spike-and-slab; 2: all zero; 3 (if present): ReLU-like,
    about 70% exact zeros (some -0.0) and Laplace values.
    """
    g = laplace(shape, torch.Generator().manual_seed(seed))
    g[:, 1] = spike_and_slab(g[:, 1].shape, torch.Generator().manual_seed(seed + 1))
    g[:, 2] = 0.0
    if g.shape[1] > 3:
        keep = torch.rand(g[:, 3].shape, generator=torch.Generator().manual_seed(seed + 2))
        g[:, 3] = torch.where(keep < 0.7, torch.where(keep < 0.1, -0.0, 0.0), g[:, 3])
    return g


def assert_same(got, want) -> None:
    """``got`` equals ``want`` bit for bit (NaN where NaN), through nested dicts, tuples and
    lists of tensors and plain values, each of the same type as its twin; tensors compared on
    CPU, dtype and shape included."""
    assert type(got) is type(want), f'{type(got).__name__} != {type(want).__name__}'
    if isinstance(got, dict):
        assert got.keys() == want.keys()
        for key in got:
            assert_same(got[key], want[key])
    elif isinstance(got, (tuple, list)):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert_same(g, w)
    elif isinstance(got, Tensor):
        torch.testing.assert_close(got.cpu(), want.cpu(), rtol=0, atol=0, equal_nan=True)
    else:
        assert got == want


def load_tool(path: str) -> ModuleType:
    """A script of the repository's ``tools/`` (e.g. ``'tools/benchmarks/roofline.py'``) loaded
    as a module, so that tests call its ``main(argv)``; needs a checkout (editable install)."""
    root = osp.dirname(osp.dirname(osp.abspath(__file__)))
    name = osp.splitext(osp.basename(path))[0] + '_tool'
    spec = importlib.util.spec_from_file_location(name, osp.join(root, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
