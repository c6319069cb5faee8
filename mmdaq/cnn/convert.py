"""Swap the float Conv2d/Conv3d/Linear layers of a model for quantized layers, in place.

One entry point for every method of :data:`mmdaq.quantization.schemes.SCHEMES`: a
:class:`~mmdaq.quantization.schemes.QuantScheme` method gets the DAQ layers
(:mod:`.daq_layers`), ``'zhuang_w4a4'`` (:class:`~mmdaq.quantization.lowbit.LowBitConfig`) the
low-bit layers of Zhuang et al. (:mod:`.lowbit_layers`).
"""
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type

from torch import nn

from ..quantization.lowbit import LowBitConfig
from ..quantization.schemes import build_scheme
from .daq_layers import DAQConv2d, DAQConv3d, DAQLayerMixin, DAQLinear, _explicit_padding
from .lowbit_layers import LOWBIT_CLASSES, LowBitLayerMixin

FilterFn = Callable[[nn.Module, str], bool]

#: float base class -> DAQ class
DAQ_CLASSES: Dict[Type[nn.Module], Type[nn.Module]] = {
    nn.Conv2d: DAQConv2d,
    nn.Conv3d: DAQConv3d,
    nn.Linear: DAQLinear,
}

#: Subclasses known to keep the float math (they only add an empty-input path).
SAFE_SUBCLASSES = frozenset({
    'mmcv.cnn.bricks.wrappers.Conv2d', 'mmcv.cnn.bricks.wrappers.Conv3d',
    'mmcv.cnn.bricks.wrappers.Linear', 'torch.nn.modules.linear.NonDynamicallyQuantizableLinear'
})


@dataclass
class ConversionReport:
    """What :func:`convert_modules` did.

    Attributes:
        converted (list[str]): Qualified names now running quantized (INT8 for the DAQ
            methods).
        skipped (dict[str, str]): Conv/Linear layers left in float, with the reason.
    """
    converted: List[str] = field(default_factory=list)
    skipped: Dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line per reason: how many layers are INT8 and how many stay float, and why."""
        lines = [f'{len(self.converted)} layers INT8, {len(self.skipped)} kept in float']
        reasons: Dict[str, List[str]] = {}
        for name, reason in self.skipped.items():
            reasons.setdefault(reason, []).append(name)
        for reason, names in sorted(reasons.items()):
            shown = ', '.join(names[:4]) + (', ...' if len(names) > 4 else '')
            lines.append(f'  float ({reason}): {len(names)}: {shown}')
        return '\n'.join(lines)


def daq_class_for(module: nn.Module) -> Tuple[Optional[Type[nn.Module]], str]:
    """The DAQ class that can replace ``module``, or (None, reason).

    Exact ``nn.Conv2d``/``nn.Conv3d``/``nn.Linear`` and the subclasses in
    :data:`SAFE_SUBCLASSES` are replaceable; other subclasses only if they override
    neither ``forward`` nor ``_conv_forward`` (their math is the base class's). The DAQ class
    also names the low-bit class (:data:`~.lowbit_layers.LOWBIT_CLASSES`).
    """
    if isinstance(module, DAQLayerMixin):
        return None, 'already a DAQ layer'
    if isinstance(module, LowBitLayerMixin):
        return None, 'already a low-bit layer'
    if isinstance(module, nn.modules.lazy.LazyModuleMixin):
        return None, 'lazy layer not initialised yet'
    for base, daq_cls in DAQ_CLASSES.items():
        if not isinstance(module, base):
            continue
        cls = type(module)
        qualname = f'{cls.__module__}.{cls.__qualname__}'
        if cls is not base and qualname not in SAFE_SUBCLASSES and any(
                getattr(cls, attr, None) is not getattr(base, attr, None)
                for attr in ('forward', '_conv_forward')):
            return None, f'{cls.__name__} changes the forward of {base.__name__}'
        if base is not nn.Linear:
            try:
                _explicit_padding(module)
            except ValueError as e:
                return None, str(e).split(';')[0]
        return daq_cls, ''
    return None, 'not a Conv2d/Conv3d/Linear'


def compile_patterns(patterns: Sequence[str], what: str) -> List[re.Pattern]:
    """Regexes from a user option ``what`` (one string or a sequence); a bad one raises."""
    if isinstance(patterns, str):
        patterns = (patterns, )
    try:
        return [re.compile(p) for p in patterns]
    except re.error as e:
        raise ValueError(f'{what} must be regular expressions, but got {list(patterns)}: {e}')


def _swap_function(method: str, options: Dict[str, Any]) -> Callable[[nn.Module, type], nn.Module]:
    """``swap(module, daq_cls)``: the layer of ``method`` replacing ``module`` (same Parameters).

    Builds the method's options once, so an unknown method or option raises here.
    """
    config = build_scheme(method, **options)
    if isinstance(config, LowBitConfig):  # each layer copies the config in from_float
        return lambda module, daq_cls: LOWBIT_CLASSES[daq_cls].from_float(module, config)
    return lambda module, daq_cls: daq_cls.from_float(module, method, **options)


def convert_modules(model: nn.Module, method: str = 'daq', *, filter_fn: Optional[FilterFn] = None,
                    include: Sequence[str] = (), exclude: Sequence[str] = (),
                    **options: Any) -> ConversionReport:
    """Replace the convertible layers below ``model`` (not ``model`` itself) and report.

    Arguments as :func:`convert_model`. Patterns match with ``re.search`` on qualified
    names; a pattern that matches no Conv/Linear layer triggers a warning.
    """
    swap = _swap_function(method, options)  # validates method and options before any change
    includes = compile_patterns(include, 'include')
    excludes = compile_patterns(exclude, 'exclude')
    used = set()
    report = ConversionReport()
    swapped: Dict[int, nn.Module] = {}  # a module shared under two names is swapped once
    for name, module in list(model.named_modules(remove_duplicate=False)):
        if not name or not isinstance(module, tuple(DAQ_CLASSES)):
            continue
        for p in includes + excludes:
            if p.search(name):
                used.add(p.pattern)
        if includes and not any(p.search(name) for p in includes):
            report.skipped[name] = 'not matched by include'
            continue
        if any(p.search(name) for p in excludes):
            report.skipped[name] = 'matched by exclude'
            continue
        if filter_fn is not None and not filter_fn(module, name):
            report.skipped[name] = 'rejected by filter_fn'
            continue
        new = swapped.get(id(module))
        if new is None:
            daq_cls, reason = daq_class_for(module)
            if daq_cls is None:
                report.skipped[name] = reason
                continue
            new = swapped[id(module)] = swap(module, daq_cls)
        parent_name, _, child = name.rpartition('.')
        setattr(model.get_submodule(parent_name), child, new)
        report.converted.append(name)
    unused = [p.pattern for p in includes + excludes if p.pattern not in used]
    if unused:
        warnings.warn(f'include/exclude patterns {unused} match no Conv2d/Conv3d/Linear layer of '
                      f'{type(model).__name__}; check their spelling', stacklevel=2)
    return report


def convert_model(model: nn.Module, method: str = 'daq', *, filter_fn: Optional[FilterFn] = None,
                  include: Sequence[str] = (), exclude: Sequence[str] = (),
                  **options: Any) -> nn.Module:
    """Convert Conv2d/Conv3d/Linear layers of ``model`` to DAQ layers in place; return it.

    The very same Parameter objects are kept (optimizers and DDP stay valid), no
    Parameter or persistent buffer is added, and ``state_dict`` keys are unchanged,
    so checkpoints load strictly into the float model and back.

    Args:
        model (nn.Module): The model. If it is itself a convertible layer, a new DAQ
            layer sharing its Parameters is returned instead.
        method (str): A name of :data:`mmdaq.quantization.schemes.SCHEMES`: 'daq' (the
            paper), 'per_channel', 'per_tensor', 'ui8', 'shiftquant' (DAQ layers) or
            'zhuang_w4a4' (Zhuang et al.'s low-bit layers). Defaults to 'daq'.
        filter_fn (Callable[[nn.Module, str], bool], optional): Keep a layer in float
            when it returns False for ``(module, qualified_name)``. Defaults to None.
        include (Sequence[str]): Regexes; if given, only matching names are converted.
        exclude (Sequence[str]): Regexes of names kept in float.
        **options: Options of the method (see :func:`mmdaq.quantization.build_scheme`);
            unknown ones raise an error naming them.

    Returns:
        nn.Module: ``model``, converted.

    Examples:
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
        >>> model = convert_model(model, exclude=[r'^0$'])
        >>> [type(m).__name__ for m in model]
        ['Conv2d', 'ReLU', 'DAQConv2d']
    """
    daq_cls, _ = daq_class_for(model)
    if daq_cls is not None and (filter_fn is None or filter_fn(model, '')):
        return _swap_function(method, options)(model, daq_cls)
    convert_modules(model, method, filter_fn=filter_fn, include=include, exclude=exclude,
                    **options)
    return model


def daq_layers(model: nn.Module) -> Dict[str, nn.Module]:
    """The DAQ layers of ``model`` by qualified name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, DAQLayerMixin)}
