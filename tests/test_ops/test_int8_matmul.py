import pytest
import torch

from mmdaq.ops.grouped_matmul import grouped_int8_matmul
from mmdaq.ops.int8_matmul import (MAX_CHUNK_K, MAX_FLOAT_EXACT_K, has_fast_int8_cpu, int8_matmul,
                                   int8_matmul_backend, int8_matmul_reference, resolve_backend)
from mmdaq.testing import DEVICES


def _codes(shape, seed, device='cpu'):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-127, 128, shape, generator=g, dtype=torch.int8).to(device)


def test_chunk_limits_cannot_overflow():
    assert MAX_CHUNK_K * 127 * 127 <= 2**31 - 1
    assert MAX_FLOAT_EXACT_K * 127 * 127 <= 2**24


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('backend', ['auto', 'int_mm', 'float_exact'])
@pytest.mark.parametrize('m, k, n', [(1, 1, 1), (17, 33, 9), (64, 1041, 24), (5, 3000, 7)])
def test_matches_integer_reference(device, backend, m, k, n):
    a, b = _codes((m, k), 0, device), _codes((k, n), 1, device)
    out = int8_matmul(a, b, backend=backend)
    assert out.dtype == torch.int32
    assert torch.equal(out.long().cpu(), int8_matmul_reference(a, b).cpu())


@pytest.mark.parametrize('backend', ['int_mm', 'float_exact'])
def test_overflow_probe_long_reduction_extreme_values(backend):
    # K = 2**20 + 3 with every product +-127*127: the exact sum is 16129 * K ~ 1.7e10, far
    # beyond int32. A naive int32 accumulation would wrap around.
    k = (1 << 20) + 3
    a = torch.full((2, k), 127, dtype=torch.int8)
    a[1] = -127
    b = torch.full((k, 3), 127, dtype=torch.int8)
    b[:, 1] = -127
    b[::2, 2] = -127  # alternating signs
    out = int8_matmul(a, b, backend=backend)
    assert out.dtype == torch.int64
    want = torch.tensor([[16129 * k, -16129 * k, -16129], [-16129 * k, 16129 * k, 16129]],
                        dtype=torch.int64)
    assert torch.equal(out, want)


def test_empty_and_bad_inputs():
    assert int8_matmul(_codes((0, 4), 0), _codes((4, 3), 1)).shape == (0, 3)
    with pytest.raises(TypeError, match='must be int8'):
        int8_matmul(torch.zeros(2, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r'needs \[M, K\] @ \[K, N\]'):
        int8_matmul(_codes((2, 3), 0), _codes((4, 2), 1))
    with pytest.raises(ValueError, match='backend must be one of'):
        resolve_backend(torch.device('cpu'), 'magic')


@pytest.mark.parametrize('groups, m, k, n', [(1, 9, 20, 5), (4, 9, 20, 5), (3, 7, 2000, 4)])
def test_grouped_matches_reference(groups, m, k, n):
    a, b = _codes((groups, m, k), 2), _codes((groups, k, n), 3)
    out = grouped_int8_matmul(a, b)
    want = torch.stack([int8_matmul_reference(a[g], b[g]) for g in range(groups)])
    assert torch.equal(out.long(), want)


@pytest.mark.parametrize('backend', ['int_mm', 'float_exact'])
def test_strided_and_transposed_operands_give_the_exact_product(backend):
    if backend == 'int_mm' and not has_fast_int8_cpu():
        pytest.skip('torch._int_mm has no fast CPU kernel here')
    g = torch.Generator().manual_seed(0)
    base = torch.randint(-127, 128, (40, 3, 30), generator=g, dtype=torch.int8)
    a = base[:, 1, :]  # [40, 30] with row stride 90: neither row- nor column-major
    b = torch.randint(-127, 128, (24, 30), generator=g, dtype=torch.int8).t()  # column-major
    for lhs, rhs in ((a, b), (a, b.contiguous()), (a.contiguous(), b[:, ::2])):
        assert torch.equal(int8_matmul(lhs, rhs, backend=backend).long(),
                           int8_matmul_reference(lhs, rhs))


def test_the_auto_backend_can_be_set_for_a_block():
    cpu = torch.device('cpu')
    default = resolve_backend(cpu)
    with int8_matmul_backend('int_mm'):
        assert resolve_backend(cpu) == 'int_mm'
        with int8_matmul_backend('float_exact'):
            assert resolve_backend(cpu) == 'float_exact'
            assert resolve_backend(cpu, 'int_mm') == 'int_mm'  # an explicit backend wins
        assert resolve_backend(cpu) == 'int_mm'
    assert resolve_backend(cpu) == default
    with pytest.raises(ValueError, match='backend must be one of'):
        with int8_matmul_backend('auto'):
            pass
