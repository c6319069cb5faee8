"""Markers shared by the whole suite, skipped in one place (as torchvision's conftest does).

``@pytest.mark.needs_ext``: the test needs the compiled kernels ``mmdaq._ext``.
CUDA tests use ``mmdaq.testing.needs_cuda`` / ``DEVICES``.

Without a GPU, mmdaq's Triton kernels run in Triton's interpreter on CPU tensors: the variable
is set here, before any test module imports triton (a kernel compiled for the GPU backend
cannot be called on CPU tensors).
"""
import os
import shutil

import pytest

if shutil.which('nvidia-smi') is None:
    os.environ.setdefault('TRITON_INTERPRET', '1')


def pytest_configure(config):
    config.addinivalue_line('markers', 'needs_ext: needs the compiled kernels mmdaq._ext')


def pytest_collection_modifyitems(config, items):
    from mmdaq.kernels import is_extension_available
    if is_extension_available():
        return
    skip = pytest.mark.skip(reason='mmdaq._ext not built (tools/install.sh builds it)')
    for item in items:
        if item.get_closest_marker('needs_ext') is not None:
            item.add_marker(skip)
