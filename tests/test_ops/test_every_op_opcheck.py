"""Every op of the ``mmdaq`` namespace passes ``torch.library.opcheck`` (schema and its mutation
claims, fake kernel, autograd registration, AOT dispatch) in the suite: here, with the sample
arguments of :data:`SAMPLES`, or in the test file :data:`CHECKED_IN` names. A new op without
either fails :func:`test_every_op_is_opchecked`."""
import importlib
import pkgutil
from pathlib import Path

import pytest
import torch

import mmdaq

TESTS = Path(__file__).resolve().parents[1]


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _codes(*shape) -> torch.Tensor:
    return torch.randint(-127, 128, shape, generator=_gen(), dtype=torch.int8)


def _randn(*shape) -> torch.Tensor:
    return torch.randn(shape, generator=_gen())


def _steps(n: int) -> torch.Tensor:
    return torch.rand(n, generator=_gen()) * 0.05 + 0.01


#: op name -> sample argument tuples (CPU), several where an argument picks a different path.
SAMPLES = {
    'clip_to_scale': lambda: [(_steps(4), _steps(4) * 2, 127),
                              (_steps(1)[0], _steps(1)[0] * 0.5, 7)],
    'grad_channel_stats': lambda: [(_randn(2, 3, 4, 4), 1, 16, 3.0, 127, True),
                                   (_randn(5, 6), 1, 8, 0.0, 7, False)],
    'int32_to_channels_first': lambda: [
        (torch.randint(-999, 999, (18, 4), generator=_gen(), dtype=torch.int32), _steps(4),
         _randn(4), [2, 4, 3, 3]),
        (torch.randint(-999, 999, (18, 4), generator=_gen(), dtype=torch.int32), _steps(1),
         None, [2, 4, 9])],
    'int32_to_weight': lambda: [
        (torch.randint(-999, 999, (4, 27), generator=_gen(), dtype=torch.int32), _steps(4),
         [4, 3, 3, 3])],
    'int8_channels_last': lambda: [(_codes(2, 3, 4, 4), False), (_codes(2, 5, 3, 2, 2), True)],
    'int8_transposed_weight': lambda: [(_codes(4, 3, 3, 3), ), (_codes(4, 66, 3, 1, 1), ),
                                       (_codes(5, 3, 1, 1), )],
    'philox_uniform': lambda: [(_randn(5, 7), 3, 0), (_randn(9), 11, 4)],
    'quantize_int8': lambda: [(_randn(2, 3, 4), _steps(3), 1), (_randn(2, 3, 4), _steps(1)[0], 0)],
    'quantize_int8_pair': lambda: [(_randn(2, 3, 4), _steps(3), 1, _steps(1)[0])],
    'quantize_int8_stochastic': lambda: [(_randn(2, 3, 4), _steps(3), 1, 5, 0),
                                         (_randn(6, 2), _steps(1)[0], 0, 5, 8)],
}

#: op name -> the test file that opchecks it (with arguments only that test builds: layer
#: handles, CUDA-only Triton ops, ops whose own test exercises their state arguments).
CHECKED_IN = {
    'activation_quantize': 'test_quantization/test_zhuang.py',
    'round_ste': 'test_quantization/test_zhuang.py',
    'lowbit_int_conv': 'test_quantization/test_zhuang.py',
    'daq_grad_codes': 'test_ops/test_grad_codes_cpu.py',
    'int8_im2col': 'test_ops/test_im2col.py',
    'quantize_per_tensor_int8': 'test_kernels/test_quantize_kernel.py',
    'int8_conv': 'test_ops/test_int8_conv_op.py',
    'int8_conv_backward': 'test_ops/test_int8_conv_op.py',
    'shift_conv': 'test_ops/test_shift_layer.py',
    'shift_conv_backward': 'test_ops/test_shift_layer.py',
    'int8_conv2d_triton': 'test_ops/test_triton_conv_op.py',
    'int8_conv2d_dgrad_triton': 'test_ops/test_triton_conv_op.py',
    'int8_conv2d_wgrad_triton': 'test_ops/test_triton_conv_op.py',
}


def registered_ops() -> set:
    """Names of the ops in the ``mmdaq`` namespace once every mmdaq module is imported."""
    for module in pkgutil.walk_packages(mmdaq.__path__, 'mmdaq.'):
        importlib.import_module(module.name)
    return {name.split('::', 1)[1] for name in torch._C._dispatch_get_all_op_names()
            if name.startswith('mmdaq::')}


def test_every_op_is_opchecked():
    ops = registered_ops()
    unchecked = ops - set(SAMPLES) - set(CHECKED_IN)
    assert not unchecked, f'ops without an opcheck test: {sorted(unchecked)}'
    assert not set(SAMPLES) & set(CHECKED_IN)
    for name, test_file in CHECKED_IN.items():
        call = f'opcheck(torch.ops.mmdaq.{name}.default'
        assert call in (TESTS / test_file).read_text(), f'{test_file} has no {call}'


@pytest.mark.needs_ext
def test_the_compiled_ops_are_registered():
    """The table lists no op that does not exist (a rename would leave a stale entry)."""
    assert set(SAMPLES) <= registered_ops()


@pytest.mark.needs_ext
@pytest.mark.parametrize('name', sorted(SAMPLES))
def test_op_passes_opcheck(name):
    op = getattr(torch.ops.mmdaq, name).default
    for args in SAMPLES[name]():
        torch.library.opcheck(op, args)
