import pytest
import torch
from torch import nn

from mmdaq.analysis.benchmark import (ConvShape, conv_shapes, precision_context, prepare,
                                      saved_activation_bytes, time_layer)


def _net():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 4, 1, stride=2))


def test_conv_shapes_are_distinct_and_counted():
    shapes = conv_shapes(_net(), torch.zeros(2, 3, 16, 16))
    assert [count for _, count in shapes] == [1, 2, 1]
    first, _ = shapes[0]
    assert first == ConvShape((2, 3, 16, 16), 8, (3, 3), (1, 1), (1, 1), (1, 1), 1)
    conv = first.build()
    assert isinstance(conv, nn.Conv2d) and conv.bias is None
    assert shapes[2][0].label() == '2x8x16x16 -> 4 k1x1 s2'


def test_daq_saves_int8_activations_and_times_are_positive():
    conv = nn.Conv2d(16, 16, 3, padding=1, bias=False)
    x = torch.randn(4, 16, 32, 32)
    fp32 = saved_activation_bytes(prepare(conv, 'fp32'), x, 'fp32')
    daq = saved_activation_bytes(prepare(conv, 'daq'), x, 'daq')
    assert fp32 == x.numel() * 4  # the float input; the weight is a parameter
    assert daq < fp32 / 3  # int8 input codes plus the int8 weight copy and scales
    times = time_layer(prepare(conv, 'daq'), x, 'daq', reps=1, warmup=0)
    # No ordering of the timings is asserted: one cold repetition on a shared machine can
    # make the forward alone slower than forward+backward.
    assert times['fwd'] > 0 and times['fwd_bwd'] > 0 and times['bwd'] >= 0


def test_bad_precision_and_unconvertible_module():
    with pytest.raises(ValueError, match='precision must be one of'):
        with precision_context('fp16', torch.device('cpu')):
            pass
    with pytest.raises(ValueError, match='could be converted'):
        prepare(nn.ReLU(), 'daq')


def test_torchvision_stand_in_converts_like_daq_hook():
    pytest.importorskip('torchvision')
    from mmdaq.analysis.torchvision_models import build_torchvision_step, convert_like_daq_hook
    from mmdaq.cnn import daq_layers
    model, loss_fn = build_torchvision_step('tv_tsn_r50', 1, torch.device('cpu'))
    convert_like_daq_hook(model, 'tv_tsn_r50')
    converted = daq_layers(model)
    # ResNet-50 has 53 convs: all but the stem are INT8; the classifier stays FP32.
    assert len(converted) == 52 and 'conv1' not in converted and 'fc' not in converted
    loss = loss_fn(model)
    loss.backward()
    assert torch.isfinite(loss) and model.layer1[0].conv1.weight.grad is not None
