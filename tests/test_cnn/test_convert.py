import copy

import pytest
import torch
from torch import nn

from mmdaq.cnn import DAQConv2d, DAQConv3d, DAQLinear, convert_model, convert_modules, daq_layers
from mmdaq.testing import sqnr


class _Net(nn.Module):

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8),
                                  nn.ReLU(), nn.Conv2d(8, 16, 1))
        self.video = nn.Conv3d(16, 4, (1, 3, 3), padding=(0, 1, 1))
        self.head = nn.Linear(4, 5)

    def forward(self, x):
        x = self.body(self.stem(x))
        x = self.video(x.unsqueeze(2)).mean(dim=(2, 3, 4))
        return self.head(x)


def test_converts_in_place_keeping_parameters_and_keys():
    torch.manual_seed(0)
    model = _Net()
    params = dict(model.named_parameters())
    keys = list(model.state_dict())
    out = convert_model(model)
    assert out is model
    assert isinstance(model.stem, DAQConv2d) and isinstance(model.video, DAQConv3d)
    assert isinstance(model.head, DAQLinear) and isinstance(model.body[3], DAQConv2d)
    for name, p in model.named_parameters():
        assert p is params[name]  # the very same objects: optimizer and DDP stay valid
    assert len(list(model.parameters())) == len(params)
    assert list(model.state_dict()) == keys


def test_state_dict_loads_strictly_both_ways():
    torch.manual_seed(0)
    fp32, daq = _Net(), convert_model(_Net())
    daq.load_state_dict(fp32.state_dict(), strict=True)
    fp32.load_state_dict(daq.state_dict(), strict=True)
    for (k, a), (_, b) in zip(fp32.state_dict().items(), daq.state_dict().items()):
        assert torch.equal(a, b), k


def test_forward_backward_close_to_fp32():
    torch.manual_seed(0)
    fp32 = _Net()
    daq = convert_model(copy.deepcopy(fp32))
    x = torch.randn(4, 3, 8, 8)
    y32, y8 = fp32(x), daq(x)
    assert y8.shape == y32.shape
    assert sqnr(y32, y8) > 20
    y8.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in daq.parameters())


def test_include_exclude_and_filter_fn():
    report = convert_modules(_Net(), exclude=[r'^stem$', r'^head$'])
    assert sorted(report.converted) == ['body.0', 'body.3', 'video']
    assert report.skipped == {'stem': 'matched by exclude', 'head': 'matched by exclude'}
    report = convert_modules(_Net(), include=[r'^body\.'])
    assert sorted(report.converted) == ['body.0', 'body.3']
    report = convert_modules(_Net(), filter_fn=lambda m, name: not isinstance(m, nn.Linear))
    assert report.skipped == {'head': 'rejected by filter_fn'}
    assert '4 layers INT8, 1 kept in float' in report.summary()


def test_unmatched_pattern_warns_and_bad_options_raise():
    with pytest.warns(UserWarning, match=r"patterns \['backbnoe'\] match no"):
        convert_modules(_Net(), exclude=['backbnoe'])
    with pytest.raises(TypeError, match=r"unknown \['lamda'\]"):
        convert_model(_Net(), lamda=0.3)
    with pytest.raises(ValueError, match="method must be one of"):
        convert_model(_Net(), method='fp8')
    with pytest.raises(ValueError, match='include must be regular expressions'):
        convert_model(_Net(), include=['(unclosed'])
    model = _Net()
    with pytest.raises(TypeError):
        convert_model(model, lamda=0.3)
    assert not daq_layers(model)  # nothing converted before the error


def test_subclasses_and_unsupported_layers_stay_float():

    class WeightStdConv(nn.Conv2d):  # changes the math: must not be converted

        def forward(self, x):
            w = (self.weight - self.weight.mean()) / (self.weight.std() + 1e-5)
            return self._conv_forward(x, w, self.bias)

    class PlainSub(nn.Conv2d):  # same math: convertible
        pass

    model = nn.Sequential(WeightStdConv(3, 4, 3), PlainSub(4, 4, 3),
                          nn.Conv2d(4, 4, 3, padding=1, padding_mode='circular'),
                          nn.ConvTranspose2d(4, 4, 3))
    report = convert_modules(model)
    assert report.converted == ['1']
    assert 'changes the forward' in report.skipped['0']
    assert "padding_mode must be 'zeros'" in report.skipped['2']
    assert '3' not in report.skipped  # not a Conv2d/Conv3d/Linear at all


def test_shared_module_is_swapped_once_and_hooks_survive():
    conv = nn.Conv2d(3, 3, 1)
    calls = []
    conv.register_forward_hook(lambda m, i, o: calls.append(1))
    model = nn.Sequential(conv, conv)
    convert_model(model)
    assert model[0] is model[1] and isinstance(model[0], DAQConv2d)
    model(torch.randn(1, 3, 4, 4))
    assert len(calls) == 2


def test_bare_layer_and_quant_switch():
    lin = nn.Linear(4, 3)
    daq = convert_model(lin, method='per_tensor')
    assert isinstance(daq, DAQLinear) and daq.weight is lin.weight
    x = torch.randn(2, 4)
    daq.quant_enabled = False
    assert torch.equal(daq(x), lin(x))  # float path is the plain layer
    daq.quant_enabled = True
    assert not torch.equal(daq(x), lin(x))


def test_registered_for_mmcv_builders():
    pytest.importorskip('mmcv')
    from mmcv.cnn import ConvModule, build_conv_layer
    conv = build_conv_layer(dict(type='DAQConv2d', method='per_channel'), 3, 8, 3, padding=1)
    assert isinstance(conv, DAQConv2d) and conv.quant_scheme.name == 'per_channel'
    module = ConvModule(3, 8, 3, padding=1, conv_cfg=dict(type='DAQConv3d'),
                        norm_cfg=dict(type='BN3d'))
    assert isinstance(module.conv, DAQConv3d)
    assert module(torch.randn(1, 3, 2, 6, 6)).shape == (1, 8, 2, 6, 6)


def test_efficient_conv_bn_eval_path_is_int8():
    pytest.importorskip('mmcv')
    from mmcv.cnn import ConvModule
    module = ConvModule(3, 8, 3, padding=1, conv_cfg=dict(type='DAQConv2d'),
                        norm_cfg=dict(type='BN'), efficient_conv_bn_eval=True).eval()
    calls = []
    original = module.conv._conv_forward
    module.conv._conv_forward = lambda *a: calls.append(1) or original(*a)
    x = torch.randn(2, 3, 8, 8)
    module(x)
    assert calls and module.conv.quant_enabled


def test_deepcopy_keeps_scheme_state_separate():
    model = convert_model(_Net())
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    twin = copy.deepcopy(model)
    assert twin.stem.quant_scheme is not model.stem.quant_scheme
    assert torch.equal(twin.stem.quant_scheme.prev_clip, model.stem.quant_scheme.prev_clip)


def test_zhuang_method_converts_to_low_bit_layers_through_the_same_entry_point():
    from mmdaq.cnn import LowBitConv2d, LowBitConv3d, LowBitLayerMixin, LowBitLinear
    model = _Net()
    params = dict(model.named_parameters())
    keys = list(model.state_dict())
    report = convert_modules(model, 'zhuang_w4a4', exclude=[r'^stem$'], bits_w=3, bits_a=5)
    assert report.skipped == {'stem': 'matched by exclude'}
    assert type(model.body[0]) is LowBitConv2d and type(model.video) is LowBitConv3d
    assert type(model.head) is LowBitLinear and not daq_layers(model)
    assert all(p is params[n] for n, p in model.named_parameters())
    assert list(model.state_dict()) == keys
    assert (model.head.lowbit.bits_w, model.head.lowbit.bits_a) == (3, 5)
    assert model.head.lowbit is not model.video.lowbit  # each layer owns its config
    again = convert_modules(model, 'zhuang_w4a4', exclude=[r'^stem$'])
    assert not again.converted and again.skipped['head'] == 'already a low-bit layer'
    layer = convert_model(nn.Linear(4, 2), method='zhuang_w4a4')  # a layer itself
    assert isinstance(layer, LowBitLayerMixin) and layer.lowbit.bits_w == 4
    with pytest.raises(TypeError, match=r"options of method 'zhuang_w4a4' must be among"):
        convert_model(_Net(), method='zhuang_w4a4', a=0.8)


def test_daq_layers_take_only_daq_methods():
    with pytest.raises(ValueError, match=r"method of a DAQ layer must be one of \[.*'daq'.*\], "
                       r"but got 'zhuang_w4a4', which has layers of its own"):
        DAQConv2d(3, 8, 3, method='zhuang_w4a4')
