"""The layer selection the conversion hooks share: stem, heads, layer types, filter_fn."""
import pytest
from torch import nn

from mmdaq.cnn import LayerSelection, daq_layers, first_conv, is_prediction_head, lowbit_layers


def _net():
    net = nn.Sequential(nn.Linear(2, 2), nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 1), nn.Conv3d(8, 8, 1))
    net.fc_cls = nn.Linear(8, 4)
    return net


def reject_conv3d(module, name):
    return not isinstance(module, nn.Conv3d)


@pytest.mark.parametrize('method, layers', [('daq', daq_layers), ('zhuang_w4a4', lowbit_layers)])
def test_selection_reasons_for_every_method(method, layers):
    model = _net()
    assert first_conv(model) == '1' and is_prediction_head('roi_head.bbox_head.fc_cls')
    report = LayerSelection().convert(model, method)
    assert report.converted == ['0', '2', '3'] and sorted(layers(model)) == ['0', '2', '3']
    assert report.skipped == {'1': 'first conv (stem) kept in FP32',
                              'fc_cls': 'final prediction layer kept in FP32'}
    selection = LayerSelection(layer_types=['Conv2d', 'Conv3d'], keep_first_conv=False,
                               keep_heads=False, filter_fn=f'{__name__}.reject_conv3d')
    report = selection.convert(_net(), method)
    assert report.converted == ['1', '2']
    assert report.skipped == {'0': 'layer type not selected', '3': 'rejected by filter_fn',
                              'fc_cls': 'layer type not selected'}


def test_bad_selections_are_clear_errors():
    with pytest.raises(ValueError, match=r"layer_types must be a list from \['Conv2d', "
                       r"'Conv3d', 'Linear'\], but got 'Conv2d'"):
        LayerSelection(layer_types='Conv2d')
    with pytest.raises(ValueError, match='filter_fn must be an importable "module.function" '
                       "path, but got 'nowhere.fn'"):
        LayerSelection(filter_fn='nowhere.fn')
