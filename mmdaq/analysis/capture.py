"""Capture the inputs and output gradients of Conv/Linear layers, with hooks only.

The model is not changed: a forward hook stores each chosen layer's input X and
registers a tensor hook on its output that stores G_Y = dL/dY when backward
reaches it. Works for any ``nn.Module`` (mmdet detectors, mmaction2 recognizers).
"""
import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type

from torch import Tensor, nn

DEFAULT_TYPES: Tuple[Type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class LayerCall:
    """One call of a layer: its input X (None if not kept) and output gradient G_Y."""

    def __init__(self, x: Optional[Tensor]) -> None:
        self.x = x
        self.g_y: Optional[Any] = None  # G_Y, or what ``reduce_grad`` made of it


class LayerRecord:
    """What one layer saw in the last captured iteration.

    A layer applied several times per iteration (an RPN head on every FPN level) has
    one :class:`LayerCall` per application, in forward order.

    Attributes:
        module (nn.Module): The layer.
        calls (list[LayerCall]): X (Tensor[N, C_in, *S]) and G_Y (Tensor[N, C_out, *O])
            of each call.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.calls: List[LayerCall] = []

    @property
    def x(self) -> Optional[Tensor]:
        """Input of the first call."""
        return self.calls[0].x if self.calls else None

    @property
    def g_y(self) -> Optional[Tensor]:
        """Output gradient of the first call."""
        return self.calls[0].g_y if self.calls else None


class GradientCapture:
    """Context manager recording X and G_Y of the chosen layers.

    Args:
        model (nn.Module): Model to observe.
        pattern (str, optional): Regex (``re.search``) on qualified names. Defaults to None (all).
        layer_types (tuple[type]): Layer classes to observe. Defaults to Conv1d/2d/3d and Linear.
        keep_input (bool): Also keep X (needed to recompute G_W). Defaults to True.
        reduce_grad (Callable[[nn.Module, Tensor], Any], optional): Called in backward with
            the layer and its G_Y; what it returns is stored as ``g_y`` instead of G_Y (e.g.
            per-channel statistics, so that the full gradients are not kept). Defaults to None.

    Examples:
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))
        >>> with GradientCapture(model) as cap:
        ...     model(torch.randn(2, 3, 8, 8)).sum().backward()
        >>> sorted(cap.records), tuple(cap.records['2'].g_y.shape)
        (['0', '2'], (2, 2, 6, 6))
    """

    def __init__(self, model: nn.Module, pattern: Optional[str] = None,
                 layer_types: Sequence[Type[nn.Module]] = DEFAULT_TYPES,
                 keep_input: bool = True,
                 reduce_grad: Optional[Callable[[nn.Module, Tensor], Any]] = None) -> None:
        regex = re.compile(pattern) if pattern else None
        self.records: Dict[str, LayerRecord] = {
            name: LayerRecord(m)
            for name, m in model.named_modules()
            if name and isinstance(m, tuple(layer_types)) and (regex is None or regex.search(name))
        }
        if not self.records:
            raise ValueError(f'pattern must match at least one {[t.__name__ for t in layer_types]}'
                             f' layer of {type(model).__name__}, but got {pattern!r}')
        self.keep_input = keep_input
        self.reduce_grad = reduce_grad
        self._handles: List = []

    def _forward_hook(self, record: LayerRecord):

        def hook(module, inputs, output):
            call = LayerCall(inputs[0].detach() if self.keep_input else None)
            record.calls.append(call)
            if isinstance(output, Tensor) and output.requires_grad:

                def store(grad):
                    grad = grad.detach()
                    call.g_y = grad if self.reduce_grad is None else self.reduce_grad(module, grad)

                output.register_hook(store)

        return hook

    def __enter__(self) -> 'GradientCapture':
        for record in self.records.values():
            record.calls = []
            self._handles.append(record.module.register_forward_hook(self._forward_hook(record)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def complete(self) -> Dict[str, LayerRecord]:
        """The records whose every call has G_Y (and X, if kept)."""
        return {n: r for n, r in self.records.items() if r.calls and all(
            c.g_y is not None and (c.x is not None or not self.keep_input) for c in r.calls)}
