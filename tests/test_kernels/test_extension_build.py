"""The compiled extension's build: its CPU kernels run on torch's threads."""
import pytest
import torch

from mmdaq.kernels import require_extension

pytestmark = pytest.mark.needs_ext


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_kernels_run_on_torchs_threads(two_threads):
    """at::parallel_for is an OpenMP header template: built without -fopenmp (setup.py) every
    kernel of the extension runs on one thread, however many torch uses."""
    ext = require_extension('parallel_threads_used')
    assert ext.parallel_threads_used(64) == 2
    assert ext.parallel_threads_used(1) == 1  # one task: no fork


def test_an_extension_without_an_op_warns_and_registers_no_fake():
    """An extension built from older sources (the op missing) must not break the import of
    mmdaq: no fake is registered for the op, and a warning says to rebuild."""
    from mmdaq.kernels.extension import register_fake_if_built

    def fake(x):
        return x

    with pytest.warns(UserWarning, match='no op mmdaq::no_such_op.*older sources'):
        assert register_fake_if_built('mmdaq::no_such_op')(fake) is fake
