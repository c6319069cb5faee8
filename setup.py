"""Build and install mmdaq, with its INT8 kernels as the extension ``mmdaq._ext``.

The CPU kernels are always built; the CUDA kernels when CUDA is available or
``FORCE_CUDA=1`` (mmcv's convention; set ``TORCH_CUDA_ARCH_LIST`` for the card).
``MMDAQ_SKIP_EXT=1`` installs the pure-Python package only: importing mmdaq then
works, and the first use of a kernel says how to build it.
"""
import glob
import os
import os.path as osp

from setuptools import find_packages, setup

ROOT = osp.dirname(osp.abspath(__file__))


def read_version() -> str:
    scope = {}
    with open(osp.join(ROOT, 'mmdaq', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


def read_requirements(name: str) -> list:
    with open(osp.join(ROOT, 'requirements', name)) as f:
        lines = (line.split('#')[0].strip() for line in f)
        return [line for line in lines if line and not line.startswith('-')]


def make_extensions() -> tuple:
    if os.getenv('MMDAQ_SKIP_EXT', '0') == '1':
        return [], {}
    import torch
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    def rel(pattern):
        return sorted(osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, pattern)))

    sources = rel('csrc/*.cpp') + rel('csrc/cpu/*.cpp')
    # No FMA contraction: the kernels' float results must not depend on the ISA a loop was
    # compiled for (csrc/common/cpu_clones.h). No trapping math: FP exceptions are masked, and
    # without it GCC keeps the quantization loops scalar (it will not if-convert a division
    # that might trap); results are the same IEEE operations either way.
    # -fopenmp: at::parallel_for is OpenMP in torch's CPU builds (a header template); without
    # it the pragma is dropped and every kernel runs on one thread. The runtime it links,
    # libgomp.so.1, is the one torch has loaded already (same soname).
    cxx_flags = ['-O3', '-std=c++17', '-ffp-contract=off', '-fno-trapping-math', '-fopenmp']
    link_flags = ['-fopenmp']
    define_macros = []
    with_cuda = os.getenv('FORCE_CUDA', '0') == '1' or (
        torch.cuda.is_available() and torch.version.cuda is not None)
    if with_cuda:
        sources += rel('csrc/cuda/*.cu')
        define_macros.append(('MMDAQ_WITH_CUDA', None))
        ext = CUDAExtension('mmdaq._ext', sources, define_macros=define_macros,
                            extra_compile_args={'cxx': cxx_flags, 'nvcc': ['-O3', '-std=c++17']},
                            extra_link_args=link_flags)
    else:
        ext = CppExtension('mmdaq._ext', sources, define_macros=define_macros,
                           extra_compile_args={'cxx': cxx_flags}, extra_link_args=link_flags)
    return [ext], {'build_ext': BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = make_extensions()

setup(
    name='mmdaq',
    version=read_version(),
    description='Distribution Adaptive INT8 Quantization for training CNNs, for OpenMMLab',
    long_description=open(osp.join(ROOT, 'README.md')).read() if osp.exists(
        osp.join(ROOT, 'README.md')) else '',
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('tests', 'tests.*', 'configs', 'tools')),
    python_requires='>=3.9',
    # torch.library.custom_op, register_fake and register_autograd need 2.4;
    # torch.serialization.safe_globals with (object, name) pairs (mmdaq.compat) needs 2.6.
    install_requires=['torch>=2.6'],
    extras_require={'openmmlab': read_requirements('runtime.txt'),
                    'tests': read_requirements('tests.txt')},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
