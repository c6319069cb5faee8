"""mmdaq: Distribution Adaptive INT8 Quantization for training CNNs, for OpenMMLab."""
from .compat import apply_compat_fixes
from .version import __version__

apply_compat_fixes()

__all__ = ['__version__']
