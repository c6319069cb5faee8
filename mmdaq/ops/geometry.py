"""The static arguments of a convolution, and a Linear layer as a convolution without them."""
from typing import Any, Callable, List, NamedTuple, Optional, Sequence, Tuple

from torch import Tensor


class ConvGeometry(NamedTuple):
    """Static arguments of a convolution; all empty tuples for a Linear layer."""
    kernel: Tuple[int, ...]
    stride: Tuple[int, ...]
    padding: Tuple[int, ...]
    dilation: Tuple[int, ...]
    groups: int = 1

    def op_args(self) -> Tuple[List[int], List[int], List[int], List[int], int]:
        """``(kernel, stride, padding, dilation, groups)`` as custom-op arguments (int lists)."""
        return (list(self.kernel), list(self.stride), list(self.padding), list(self.dilation),
                self.groups)

    @classmethod
    def from_op_args(cls, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int],
                     dilation: Sequence[int], groups: int) -> 'ConvGeometry':
        """Inverse of :meth:`op_args`."""
        return cls(tuple(kernel), tuple(stride), tuple(padding), tuple(dilation), groups)


LINEAR_GEOMETRY = ConvGeometry((), (), (), (), 1)


def linear_as_conv(conv: Callable[..., Tensor], x: Tensor, weight: Tensor,
                   bias: Optional[Tensor], *args: Any, **kwargs: Any) -> Tensor:
    """A linear layer on the last dim of ``x``, run by a convolution layer function as a
    convolution without spatial dims: ``conv(x2d, weight, bias, *args, geo=LINEAR_GEOMETRY,
    **kwargs)``.

    Args:
        conv (Callable): Layer function with a ``geo`` (:class:`ConvGeometry`) argument.
        x (Tensor[*, C_in]): Input.
        weight (Tensor[C_out, C_in]): Weight.
        bias (Tensor[C_out], optional): Bias.
        *args, **kwargs: The other arguments of ``conv``.

    Returns:
        Tensor[*, C_out].
    """
    lead = x.shape[:-1]
    x2d = x.reshape(-1, x.shape[-1])  # [M, C_in]
    y = conv(x2d, weight, bias, *args, geo=LINEAR_GEOMETRY, **kwargs)  # [M, C_out]
    return y.reshape(lead + (weight.shape[0], ))
