"""The layout kernels (int8 codes to channels last; G_W's sums into the weight layout) against
their plain-PyTorch references."""
import pytest
import torch

from mmdaq.kernels import (int8_channels_last, int8_channels_last_reference, int8_transposed_weight,
                           int8_transposed_weight_reference, int32_to_weight,
                           int32_to_weight_reference)
from mmdaq.ops.im2col import channels_inner_to_weight, weight_columns


@pytest.mark.needs_ext
# Weight shapes too ([C_out, C_in, *k]: fewer taps than a block, C_in past whole blocks).
@pytest.mark.parametrize('shape', [(2, 5, 7), (2, 3, 5, 6), (1, 17, 3, 4, 5), (3, 130, 9, 70),
                                   (0, 4, 3, 3), (40, 33, 3, 3), (6, 48, 3, 3, 3), (5, 16, 1, 2),
                                   (7, 70, 3, 1, 1), (4, 130, 1, 3, 3), (3, 64, 5), (2, 200, 7),
                                   (3, 65, 2, 3), (2, 70, 3, 3, 3), (3, 66, 11)])
@pytest.mark.parametrize('to_uint8', [False, True])
def test_channels_last_kernel_equals_reference(shape, to_uint8):
    x = torch.randint(-127, 128, shape, generator=torch.Generator().manual_seed(0),
                      dtype=torch.int8)
    got = torch.ops.mmdaq.int8_channels_last(x, to_uint8)
    want = int8_channels_last_reference(x, to_uint8)
    assert got.dtype == (torch.uint8 if to_uint8 else torch.int8) and torch.equal(got, want)
    assert got.numel() == 0 or got.stride() == want.stride()
    assert torch.equal(got.to(torch.int16) - (128 if to_uint8 else 0), x.to(torch.int16))
    assert torch.equal(int8_channels_last(x, to_uint8), want)


@pytest.mark.needs_ext
def test_channels_last_bad_input_is_a_clear_error():
    with pytest.raises(RuntimeError, match='x must be int8'):
        torch.ops.mmdaq.int8_channels_last(torch.zeros(1, 2, 3, 3), True)
    with pytest.raises(RuntimeError, match='1 to 3 spatial dims'):
        torch.ops.mmdaq.int8_channels_last(torch.zeros(2, 3, dtype=torch.int8), False)


# Taps of every compiled width (2, 3, 4, 5, 7, 9, 27) and others, channels past whole blocks.
TRANSPOSED_WEIGHTS = [(6, 4, 3, 3), (5, 130, 3, 1, 1), (3, 70, 1, 3, 3), (4, 66, 3, 3, 3),
                      (7, 5, 2), (2, 64, 4), (3, 9, 5), (4, 65, 7), (2, 3, 11), (3, 2, 2, 3),
                      (40, 33, 1, 1), (5, 130, 1, 1, 1), (6, 1, 1), (0, 4, 3, 3), (4, 0, 3)]


@pytest.mark.parametrize('shape', TRANSPOSED_WEIGHTS)
def test_transposed_weight_kernel_equals_reference_and_the_flip(shape):
    w = torch.randint(-127, 128, shape, generator=torch.Generator().manual_seed(0),
                      dtype=torch.int8)
    got = int8_transposed_weight(w)  # the compiled kernel where built
    want = int8_transposed_weight_reference(w)
    flipped = w.transpose(0, 1).flip(dims=tuple(range(2, w.dim())))
    assert torch.equal(got, flipped) and torch.equal(want, flipped)
    assert got.numel() == 0 or got.stride() == want.stride()
    if w.numel():  # the GEMM operand: a view
        cols = weight_columns(got, 1)
        assert cols.data_ptr() == got.data_ptr() and cols.is_contiguous()


@pytest.mark.needs_ext
def test_transposed_weight_bad_input_is_a_clear_error():
    with pytest.raises(RuntimeError, match='w must be int8'):
        torch.ops.mmdaq.int8_transposed_weight(torch.zeros(2, 3, 3, 3))
    with pytest.raises(RuntimeError, match='1 to 3 spatial dims'):
        torch.ops.mmdaq.int8_transposed_weight(torch.zeros(2, 3, dtype=torch.int8))


@pytest.mark.parametrize('shape', [(6, 4, 3, 3), (5, 7, 2, 3, 1), (8, 3, 5), (16, 16, 1, 1),
                                   (1, 1, 1, 1), (33, 17, 3, 3)])
def test_int32_to_weight_kernel_equals_reference_and_the_float_path(shape):
    g = torch.Generator().manual_seed(0)
    k_c = torch.Size(shape[1:]).numel()
    # Sums beyond 2**24 round on the way to float32: the same rounding on every path.
    acc = torch.randint(-2**31, 2**31 - 1, (shape[0], k_c), generator=g, dtype=torch.int32)
    scale = torch.rand(shape[0], generator=g) * 1e-6
    got = int32_to_weight(acc, scale, shape)
    assert got.dtype == torch.float32 and got.shape == shape and got.is_contiguous()
    assert torch.equal(got, int32_to_weight_reference(acc, scale, shape))
    via_float = channels_inner_to_weight(acc.float() * scale[:, None], shape)
    assert torch.equal(got, via_float)


def test_int32_to_weight_rejects_a_mismatched_shape():
    with pytest.raises(RuntimeError, match='does not hold a weight of shape'):
        int32_to_weight(torch.zeros(4, 10, dtype=torch.int32), torch.ones(4), [4, 3, 3])
    with pytest.raises(RuntimeError, match='scale must be float32 with C_out = 4'):
        int32_to_weight(torch.zeros(4, 9, dtype=torch.int32), torch.ones(3), [4, 3, 3])
