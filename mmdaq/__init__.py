"""mmdaq: Distribution Adaptive INT8 Quantization for training CNNs, for OpenMMLab."""
from .compat import apply_compat_fixes
from .version import __version__

apply_compat_fixes()

from .cnn import DAQConv2d, DAQConv3d, DAQLinear, convert_model  # noqa: E402

__all__ = ['__version__', 'DAQConv2d', 'DAQConv3d', 'DAQLinear', 'convert_model']
