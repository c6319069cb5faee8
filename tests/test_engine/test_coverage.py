"""DAQHook's conversion on the stock mmdet / mmaction2 models: share of INT8 layers, finite step."""
import pytest

pytest.importorskip('mmdet')
pytest.importorskip('mmaction')

from mmdaq.engine.coverage import COVERAGE_MODELS, conversion_coverage  # noqa: E402

# FP32 by design: the stem conv and the final prediction layers (one cls + one reg per head).
EXPECTED_FP32 = {'faster_rcnn': 5, 'retinanet': 3, 'mask_rcnn': 6, 'fcos': 4, 'cascade_rcnn': 9,
                 'tsn': 2, 'i3d': 2, 'tsm': 2, 'slowfast': 2, 'x3d': 2}


@pytest.mark.parametrize('key', list(COVERAGE_MODELS))
def test_stock_model_converts_and_trains_one_step(key):
    result = conversion_coverage(key)
    assert result['finite'], result['loss']
    assert result['layers'] - result['int8'] == EXPECTED_FP32[key], result['skipped']
    reasons = set(result['skipped'].values())
    assert reasons <= {'first conv (stem) kept in FP32', 'final prediction layer kept in FP32'}
    assert result['share'] >= 0.85
