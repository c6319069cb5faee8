"""The one-pass GEMM epilogue against its plain-PyTorch reference."""
import pytest
import torch

from mmdaq.kernels import channels_first_epilogue, int32_to_channels_first_reference


@pytest.mark.needs_ext
# 16 x 16 blocks on AVX-512 CPUs, the edges elementwise: whole blocks only (2, 64, 8, 4), blocks
# and edges in both dims (3, 70, 9, 9), too few channels for a block (2, 1, 130).
@pytest.mark.parametrize('out_shape', [(2, 5, 3, 4), (3, 70, 9, 9), (1, 17, 2, 3, 5), (6, 33),
                                       (2, 1, 130), (2, 64, 8, 4)])
@pytest.mark.parametrize('per_channel, with_bias', [(False, False), (True, True), (False, True)])
def test_kernel_equals_reference(out_shape, per_channel, with_bias):
    gen = torch.Generator().manual_seed(0)
    n, c = out_shape[:2]
    rows = n * torch.Size(out_shape[2:]).numel()
    acc = torch.randint(-2**30, 2**30, (rows, c), generator=gen, dtype=torch.int32)
    scale = torch.rand(c if per_channel else (), generator=gen) * 1e-6
    bias = torch.randn(c, generator=gen) if with_bias else None
    got = torch.ops.mmdaq.int32_to_channels_first(acc, scale.reshape(-1), bias, list(out_shape))
    want = int32_to_channels_first_reference(acc, scale, bias, out_shape)
    assert got.is_contiguous() and torch.equal(got, want)
    assert torch.equal(channels_first_epilogue(acc, scale, bias, out_shape), want)


@pytest.mark.needs_ext
def test_bad_arguments_are_clear_errors():
    acc = torch.zeros(6, 3, dtype=torch.int32)
    with pytest.raises(RuntimeError, match='acc must be a 2-d int32 or float32 tensor'):
        torch.ops.mmdaq.int32_to_channels_first(acc.double(), torch.ones(1), None, [2, 3, 3])
    with pytest.raises(RuntimeError, match='does not match out_shape'):
        torch.ops.mmdaq.int32_to_channels_first(acc, torch.ones(1), None, [2, 3, 4])
    with pytest.raises(RuntimeError, match='scale must be float32 with 1 or C'):
        torch.ops.mmdaq.int32_to_channels_first(acc, torch.ones(2), None, [2, 3, 3])


@pytest.mark.needs_ext
def test_float_accumulators_give_the_same_floats():
    # oneDNN's convolution writes float(acc): the CPU kernel takes it like the int32 sums.
    gen = torch.Generator().manual_seed(0)
    for c, size in ((7, (3, 4)), (35, (5, 7))):  # elementwise; 16 x 16 blocks and edges
        acc = torch.randint(-2**30, 2**30, (2 * size[0] * size[1], c), generator=gen,
                            dtype=torch.int32)
        scale, bias = torch.rand(c, generator=gen) * 1e-6, torch.randn(c, generator=gen)
        shape = (2, c) + size
        want = torch.ops.mmdaq.int32_to_channels_first(acc, scale, bias, list(shape))
        got = channels_first_epilogue(acc.float(), scale, bias, shape)
        assert torch.equal(got, want)
        assert torch.equal(int32_to_channels_first_reference(acc.float(), scale, bias, shape),
                           want)


def test_other_dtypes_use_the_reference():
    acc = torch.arange(12, dtype=torch.int64).reshape(6, 2)  # int64: K split beyond int32
    out = channels_first_epilogue(acc, torch.tensor(0.5), None, (2, 2, 3))
    torch.testing.assert_close(out, (acc * 0.5).reshape(2, 3, 2).movedim(-1, 1))
