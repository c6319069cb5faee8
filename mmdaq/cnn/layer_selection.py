"""Which layers a conversion hook turns to low precision, and why the others stay in float.

The hooks of every method (``DAQHook``, ``ZhuangQuantHook``) select layers the same way: by
type, keeping the model's first conv (the stem, which sees raw pixels) and the final
prediction layers of the heads (:data:`DEFAULT_FP32_HEADS`: logits and box deltas) in float,
then a user ``filter_fn`` and include/exclude patterns; :meth:`LayerSelection.convert` runs
:func:`~.convert.convert_modules` with that selection and says in its report why each layer
left in float stayed there.
"""
import importlib
import re
from typing import Any, Callable, Dict, Optional, Sequence, Union

from torch import nn

from .convert import ConversionReport, FilterFn, convert_modules

#: Final prediction layers of the stock mmdet / mmaction2 heads, kept in FP32 by default.
DEFAULT_FP32_HEADS = (
    r'(^|\.)(rpn_cls|rpn_reg|fc_cls|fc_reg|retina_cls|retina_reg|conv_cls|conv_reg|'
    r'conv_centerness|conv_logits|fcos_cls|fcos_reg)$',
    r'(^|\.)cls_head\.fc2$',  # X3D's head: fc1 (hidden) -> fc2 (logits)
)
_HEADS = tuple(re.compile(p) for p in DEFAULT_FP32_HEADS)

#: The names of ``layer_types`` and their torch classes.
LAYER_TYPES = {'Conv2d': nn.Conv2d, 'Conv3d': nn.Conv3d, 'Linear': nn.Linear}


def first_conv(model: nn.Module) -> Optional[str]:
    """Qualified name of the first Conv2d/Conv3d of ``model`` (its stem), or None."""
    return next((name for name, module in model.named_modules()
                 if isinstance(module, (nn.Conv2d, nn.Conv3d))), None)


def is_prediction_head(name: str) -> bool:
    """Whether ``name`` is a final prediction layer of :data:`DEFAULT_FP32_HEADS`."""
    return any(p.search(name) for p in _HEADS)


def _import_callable(path: str) -> Callable:
    module, _, name = path.rpartition('.')
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(f'filter_fn must be an importable "module.function" path, but got '
                         f'{path!r} ({e})')


def _patterns(patterns: Union[str, Sequence[str]]) -> tuple:
    return tuple([patterns] if isinstance(patterns, str) else patterns)


class LayerSelection:
    """The layers a conversion hook converts, checked once at construction.

    Args:
        layer_types (Sequence[str]): Which of 'Conv2d', 'Conv3d', 'Linear' to convert.
            Defaults to all three.
        include (Sequence[str]): Regexes (``re.search``) of layer names to convert; empty
            means all. Defaults to ().
        exclude (Sequence[str]): Regexes of layer names kept in float. Defaults to ().
        keep_first_conv (bool): Keep the first conv of the model in float. Defaults to True.
        keep_heads (bool): Keep the final prediction layers (:data:`DEFAULT_FP32_HEADS`) in
            float. Defaults to True.
        filter_fn (str | Callable, optional): ``filter_fn(module, name) -> bool``, or its
            import path ``'pkg.module.fn'``; False keeps a layer in float. Defaults to None.
    """

    def __init__(self, layer_types: Sequence[str] = ('Conv2d', 'Conv3d', 'Linear'),
                 include: Sequence[str] = (), exclude: Sequence[str] = (),
                 keep_first_conv: bool = True, keep_heads: bool = True,
                 filter_fn: Union[str, FilterFn, None] = None) -> None:
        unknown = sorted(set(layer_types) - set(LAYER_TYPES))
        if unknown or isinstance(layer_types, str):
            raise ValueError(f'layer_types must be a list from {sorted(LAYER_TYPES)}, but got '
                             f'{layer_types!r}')
        self.layer_types = tuple(LAYER_TYPES[t] for t in layer_types)
        self.include, self.exclude = _patterns(include), _patterns(exclude)
        self.keep_first_conv, self.keep_heads = keep_first_conv, keep_heads
        self.filter_fn = _import_callable(filter_fn) if isinstance(filter_fn, str) else filter_fn

    def convert(self, model: nn.Module, method: str, **options: Any) -> ConversionReport:
        """Convert the selected layers of ``model`` in place to ``method``'s layers.

        Returns:
            ConversionReport: The converted names, and the reason each other layer stayed
            in float.
        """
        first = first_conv(model) if self.keep_first_conv else None
        reasons: Dict[str, str] = {}  # why select() said no, for the report

        def select(module: nn.Module, name: str) -> bool:
            if not isinstance(module, self.layer_types):
                reasons[name] = 'layer type not selected'
            elif name == first:
                reasons[name] = 'first conv (stem) kept in FP32'
            elif self.keep_heads and is_prediction_head(name):
                reasons[name] = 'final prediction layer kept in FP32'
            elif self.filter_fn is not None and not self.filter_fn(module, name):
                reasons[name] = 'rejected by filter_fn'
            return name not in reasons

        # Only the user's patterns are checked for matching nothing, not the default heads.
        report = convert_modules(model, method, filter_fn=select, include=self.include,
                                 exclude=self.exclude, **options)
        report.skipped.update({n: reasons[n] for n in report.skipped if n in reasons})
        return report


def convert_unless_converted(model: nn.Module, owner: str,
                             converted_layers: Callable[[nn.Module], Dict[str, nn.Module]],
                             convert: Callable[[nn.Module], ConversionReport]
                             ) -> Optional[ConversionReport]:
    """``convert(model)`` for a hook's ``before_run``: None if ``converted_layers(model)`` finds
    converted layers already (val / test after train in one process); a RuntimeError naming
    ``owner`` if nothing could be converted."""
    if converted_layers(model):
        return None
    report = convert(model)
    if not report.converted:
        raise RuntimeError(f'{owner} converted no layer of {type(model).__name__}: '
                           f'{report.summary()}')
    return report
