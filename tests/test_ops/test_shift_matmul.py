"""ShiftMM: the shift GEMM against its references, permutation invariance, accumulator guard."""
import pytest
import torch

from mmdaq.ops.shift_matmul import (int32_chunk_k, shift_matmul, shift_matmul_dequantized_reference,
                                    shift_matmul_int_reference, shift_matmul_rearranged_reference,
                                    term_bound)
from mmdaq.quantization import shift_quantize


def _operands(seed, m=5, k=300, n=7, num_groups=4, num_bits=4):
    """a: Tensor[M, K] grouped along K (power-of-two scales); b: per-tensor codes [K, N]."""
    gen = torch.Generator().manual_seed(seed)
    mags = torch.pow(2.0, torch.empty(k).uniform_(-6.0, 0.0, generator=gen))
    a = shift_quantize(torch.randn(m, k, generator=gen) * mags, 1, num_groups, num_bits,
                       'stochastic', gen)
    b = shift_quantize(torch.randn(k, n, generator=gen), 0, 1, num_bits)  # one scale
    return a, b


@pytest.mark.parametrize('backend', ['float_exact', 'int32'])
@pytest.mark.parametrize('num_bits, num_groups', [(4, 8), (6, 4), (8, 8), (8, 1)])
def test_shift_gemm_equals_dequantize_and_rearranged_references(backend, num_bits, num_groups):
    a, b = _operands(num_bits + num_groups, num_groups=num_groups, num_bits=num_bits)
    top = int(a.shifts.max())
    acc = shift_matmul(a.codes, b.codes, top - a.shifts, backend=backend)
    assert acc.dtype == torch.int64
    assert torch.equal(acc, shift_matmul_int_reference(a.codes, b.codes, top - a.shifts))
    as_float = shift_matmul(a.codes, b.codes, top - a.shifts, backend, out_dtype=torch.float64)
    assert as_float.dtype == torch.float64 and torch.equal(as_float, acc.double())
    out = acc.double() * float(a.base_scale) * 2.0**-top * float(b.base_scale)
    dequantized = shift_matmul_dequantized_reference(a.codes, a.scales, b.codes, b.scales)
    rearranged = shift_matmul_rearranged_reference(a.codes, a.scales, b.codes, b.base_scale)
    torch.testing.assert_close(out, dequantized, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out, rearranged, rtol=1e-12, atol=1e-12)


def test_no_rearrangement_needed_permutation_invariance():
    a, b = _operands(1)
    shift = int(a.shifts.max()) - a.shifts
    perm = torch.randperm(a.codes.shape[1], generator=torch.Generator().manual_seed(2))
    assert torch.equal(shift_matmul(a.codes, b.codes, shift),
                       shift_matmul(a.codes[:, perm], b.codes[perm], shift[perm]))


def test_shift_on_either_operand_gives_the_same_result():
    a, b = _operands(3, m=9, n=2)  # M > N: the shift goes onto b's rows
    shift = int(a.shifts.max()) - a.shifts
    wide = shift_matmul(b.codes.t().contiguous(), a.codes.t().contiguous(), shift)  # M < N
    assert torch.equal(wide.t(), shift_matmul(a.codes, b.codes, shift))


def test_accumulator_overflow_guard_with_large_k():
    k = 1 << 15
    gen = torch.Generator().manual_seed(4)
    a = torch.full((2, k), 127, dtype=torch.int8)
    a[1] = torch.randint(-127, 128, (k, ), generator=gen, dtype=torch.int8)
    b = torch.full((k, 3), -127, dtype=torch.int8)
    shift = torch.full((k, ), 7, dtype=torch.int64)
    shift[::2] = 0
    term = term_bound(a, b, shift)
    assert term == 127 * 127 * 128
    # 8-bit codes, 8 groups, K = 2**15: 15 + 7 + 15 > 31 bits; one int32 sum would overflow.
    assert int32_chunk_k(term) < k
    naive = a.int() @ (b.int() << shift.int().unsqueeze(1))
    exact = shift_matmul_int_reference(a, b, shift)
    assert not torch.equal(naive.long(), exact)  # the unguarded int32 sum wrapped
    assert exact.abs().max() > 2**31
    for backend in ('float_exact', 'int32'):
        assert torch.equal(shift_matmul(a, b, shift, backend=backend), exact)
        as_float = shift_matmul(a, b, shift, backend=backend, out_dtype=torch.float64)
        assert torch.equal(as_float, exact.double())  # chunks added exactly in float64


def test_empty_and_invalid_operands():
    z = shift_matmul(torch.zeros(3, 0, dtype=torch.int8), torch.zeros(0, 4, dtype=torch.int8),
                     torch.zeros(0, dtype=torch.int64))
    assert z.shape == (3, 4) and (z == 0).all()
    a = torch.ones(2, 3, dtype=torch.int8)
    with pytest.raises(TypeError, match='shift_matmul operands must be int8'):
        shift_matmul(a.float(), a.t(), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match='shift must be an integer Tensor\\[K\\] with K = 3'):
        shift_matmul(a, a.t(), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match='shift must be >= 0'):
        shift_matmul(a, a.t(), torch.tensor([0, -1, 0]))
    with pytest.raises(ValueError, match='out_dtype must be torch.int64, torch.float32'):
        shift_matmul(a, a.t(), torch.zeros(3, dtype=torch.int64), out_dtype=torch.int32)
    with pytest.raises(ValueError, match='backend must be one of'):
        shift_matmul(a, a.t(), torch.zeros(3, dtype=torch.int64), backend='cuda')
