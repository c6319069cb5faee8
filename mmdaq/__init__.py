"""mmdaq: Distribution Adaptive INT8 Quantization for training CNNs, for OpenMMLab."""
from .compat import apply_compat_fixes
from .version import __version__

apply_compat_fixes()

from .cnn import DAQConv2d, DAQConv3d, DAQLinear, convert_model  # noqa: E402

try:  # the OpenMMLab integration needs mmengine; the core does not
    from .engine import DAQHook, DAQStatsHook  # noqa: F401
except ImportError as e:  # pragma: no cover
    if 'mmengine' not in str(e):
        raise

__all__ = ['__version__', 'DAQConv2d', 'DAQConv3d', 'DAQLinear', 'convert_model']
