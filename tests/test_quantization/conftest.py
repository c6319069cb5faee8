import pytest
import torch


@pytest.fixture(autouse=True)
def single_intra_op_thread():
    """Run each test on one intra-op thread, then restore the setting.

    The tensors here are tiny; on a small shared machine, waiting for a second busy thread made
    the folder ~10x slower (40 s instead of 4 s).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
