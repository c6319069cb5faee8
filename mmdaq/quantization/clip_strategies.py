"""Clip strategies: per-channel clipping rules behind one interface, looked up by name.

A clip strategy maps a channel-major tensor to one clipping value per row::

    fn(g_cm: Tensor[C, M], prev_clip: Optional[Tensor[C]], config) -> ClipResult(clip, info)

``prev_clip`` is the clip the same strategy returned at the previous iteration (``None`` at the
first one); stateless rules ignore it. ``config`` is an instance of the strategy's validated
options dataclass, or ``None`` for rules without options. ``info`` holds per-channel or per-row
diagnostics for logging and for methods that use them (DAQ: ``'is_gaussian'``; UI8 would add its
cosine distance for the learning-rate scaling). Per-tensor rules use one row: ``g.reshape(1, -1)``.

Strategies register themselves in the module that defines them::

    @register_clip_strategy('direction_sensitive', config_cls=DSGCConfig)
    def direction_sensitive_clip(g_cm, prev_clip, config): ...

so adding one is a new module plus one import line in ``mmdaq/quantization/__init__.py``.
Non-finite policy (see :mod:`mmdaq.quantization.quantize`): a row holding NaN/Inf gets a NaN clip.
"""
import dataclasses
from typing import Any, Callable, Dict, NamedTuple, Optional

import torch
from torch import Tensor

from .distribution import _check_channel_major
from .quantize import abs_max


class ClipResult(NamedTuple):
    """Output of a clip strategy.

    Attributes:
        clip (Tensor[C], float32): Clipping value per row; 0 for all-zero rows, NaN for rows
            holding NaN/Inf.
        info (dict[str, Tensor]): Strategy-specific diagnostics, e.g.
            ``{'is_gaussian': Tensor[C], bool}``.
    """
    clip: Tensor
    info: Dict[str, Tensor]


ClipFn = Callable[[Tensor, Optional[Tensor], Any], ClipResult]


@dataclasses.dataclass(frozen=True)
class ClipStrategy:
    """A registered clipping rule.

    Attributes:
        name (str): Registry key, e.g. ``'mcs'``.
        fn (ClipFn): ``fn(g_cm, prev_clip, config) -> ClipResult``.
        config_cls (type, optional): Options dataclass; ``None`` if the rule has no options.
    """
    name: str
    fn: ClipFn
    config_cls: Optional[type] = None

    def build_config(self, **options: Any) -> Any:
        """Build the options dataclass from keyword options (validated by the dataclass)."""
        if self.config_cls is None:
            if options:
                raise ValueError(f'options of clip strategy {self.name!r} must be empty, but got '
                                 f'{sorted(options)}')
            return None
        return self.config_cls(**options)

    def __call__(self,
                 g_cm: Tensor,
                 prev_clip: Optional[Tensor] = None,
                 config: Any = None) -> ClipResult:
        """Run the rule; ``config=None`` means the defaults (the paper's values)."""
        if config is None:
            config = self.build_config()
        elif self.config_cls is None or not isinstance(config, self.config_cls):
            expected = 'None' if self.config_cls is None else self.config_cls.__name__
            raise TypeError(f'config of clip strategy {self.name!r} must be {expected}, '
                            f'but got {type(config).__name__}')
        return self.fn(g_cm, prev_clip, config)


CLIP_STRATEGIES: Dict[str, ClipStrategy] = {}


def register_clip_strategy(name: str,
                           config_cls: Optional[type] = None) -> Callable[[ClipFn], ClipFn]:
    """Decorator adding ``fn`` to :data:`CLIP_STRATEGIES` under ``name``.

    Args:
        name (str): Registry key; must not be taken.
        config_cls (type, optional): Options dataclass of the rule. Defaults to None.

    Returns:
        Callable: The decorator; it returns ``fn`` unchanged.
    """
    if not isinstance(name, str) or not name or name in CLIP_STRATEGIES:
        raise ValueError(f'name must be a new non-empty string, but got {name!r} '
                         f'(taken: {sorted(CLIP_STRATEGIES)})')

    def decorator(fn: ClipFn) -> ClipFn:
        CLIP_STRATEGIES[name] = ClipStrategy(name, fn, config_cls)
        return fn

    return decorator


def get_clip_strategy(name: str) -> ClipStrategy:
    """Look up a registered clip strategy.

    Args:
        name (str): Registry key, e.g. ``'max'`` or ``'mcs'``.

    Returns:
        ClipStrategy: The strategy; call it as ``strategy(g_cm, prev_clip, config)``.
    """
    if name not in CLIP_STRATEGIES:
        raise ValueError(f'clip strategy must be one of {sorted(CLIP_STRATEGIES)}, '
                         f'but got {name!r}')
    return CLIP_STRATEGIES[name]


def max_clip(g_cm: Tensor) -> Tensor:
    """Abs-max clipping: ``s_c = max |g_c|`` (no saturation), the baseline rule.

    Args:
        g_cm (Tensor[C, M], float32/float16/bfloat16): Channel-major data.

    Returns:
        Tensor[C], float32: Abs-max per row; 0 for all-zero rows, NaN for rows with NaN/Inf.
    """
    g_max = abs_max(_check_channel_major(g_cm), dim=0)  # [C]
    return torch.where(torch.isfinite(g_max), g_max, torch.full_like(g_max, float('nan')))


@register_clip_strategy('max')
def _max_clip_strategy(g_cm: Tensor, prev_clip: Optional[Tensor], config: None) -> ClipResult:
    """Registry adapter of :func:`max_clip` (stateless, no options)."""
    return ClipResult(max_clip(g_cm), {})
