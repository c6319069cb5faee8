"""The ``'shiftquant'`` scheme: sub-8-bit training with power-of-two group scales.

ShiftQuant (Guo, Liu et al., "Towards Accurate and Efficient Sub-8-Bit Integer Training",
arXiv 2411.10948) groups every GEMM operand along the GEMM's reduction axis, with power-of-two
group scales (:mod:`.shift_quant`), so each GEMM is one integer GEMM with per-index shifts
(:mod:`mmdaq.ops.shift_matmul`). For a conv/linear layer ``Y[NL, C_out] = X[NL, C_in K] W^T``:

==========  ================  =============================  ================================
tensor      sliced along      role of that axis              rounding
==========  ================  =============================  ================================
X           C_in              forward: reduction (shift);    nearest
                              G_W: output columns (scale)
W           C_out             forward: output columns;       nearest
                              G_X: reduction (shift)
G_Y for     N*L (positions)   G_W: reduction (shift)         ``grad_rounding``
G_W
G_Y for     C_out             G_X: reduction (shift)         ``grad_rounding``
G_X
==========  ================  =============================  ================================

An axis that is not reduced in a GEMM takes its power-of-two scale as a multiplier on the
output rows or columns, after the GEMM, so one copy of X and W serves two GEMMs each. G_Y
gets two copies (one per backward GEMM), each grouped along that GEMM's reduction axis.
"""
import dataclasses

from torch import Tensor

from .schemes import QuantScheme, register_scheme
from .shift_quant import ShiftQuantResult, check_num_groups, shift_quantize


@register_scheme('shiftquant')
@dataclasses.dataclass
class ShiftQuantScheme(QuantScheme):
    """ShiftQuant (method ``'shiftquant'``): b-bit codes with power-of-two group scales.

    Every operand of the three GEMMs is grouped along the reduction axis of the GEMM that
    uses it (module doc). The layers run these schemes through
    :func:`mmdaq.ops.shift_layer.shift_conv` (``dataflow = 'shift'``), not the INT8 path.

    The defaults are the paper's ResNet setting: 4-bit weights, activations and gradients
    (the paper reports 0.92 % average loss on 4-bit ResNets; transformers use 6 bits).
    ``num_groups`` = 8 (scales ``s0 .. s0/128``) is our choice, the paper's value was not
    recovered: with 4-bit codes (Q = 7) the accumulator then needs at most
    ``3 + 3 + 7 (+ 7 in G_X, two shifted operands) + log2 K`` bits, and 8 groups cover a
    128x spread of slice magnitudes, common in gradients. Stochastic rounding for the
    gradients (unbiased estimates, the norm in this line of work); nearest for X and W.

    Args:
        weight_bits (int): Bits of W, 2 to 8. Defaults to 4.
        input_bits (int): Bits of X, 2 to 8. Defaults to 4.
        grad_bits (int): Bits of both copies of G_Y, 2 to 8. Defaults to 4.
        num_groups (int): G, distinct power-of-two scales per tensor, 1 to 16; 1 is plain
            per-tensor quantization. Defaults to 8.
        grad_rounding (str): ``'stochastic'`` or ``'nearest'``. Defaults to 'stochastic'.
        seed (int, optional): Seed of the stochastic rounding (reproducible runs). Defaults
            to None (global RNG).

    Examples:
        >>> from mmdaq.quantization.schemes import build_scheme
        >>> scheme = build_scheme('shiftquant', grad_bits=6)
        >>> scheme.quantize_input(torch.randn(2, 3, 4, 4)).shifts.shape
        torch.Size([3])
    """
    weight_bits: int = 4
    input_bits: int = 4
    grad_bits: int = 4
    num_groups: int = 8
    grad_rounding: str = 'stochastic'

    name = 'shiftquant'
    dataflow = 'shift'

    def __post_init__(self) -> None:
        super().__post_init__()  # checks the bit widths
        check_num_groups(self.num_groups)

    def quantize_input(self, x: Tensor) -> ShiftQuantResult:
        """X (Tensor[N, C_in, ...] or [M, C_in]) -> codes with one scale per input channel."""
        return shift_quantize(x, 1, self.num_groups, self.input_bits)

    def quantize_weight(self, w: Tensor) -> ShiftQuantResult:
        """W (Tensor[C_out, C_in/groups, ...]) -> codes with one scale per output channel."""
        return shift_quantize(w, 0, self.num_groups, self.weight_bits)

    def quantize_grad_for_weight(self, g: Tensor, dim: int = 1,
                                 slot: int = 0) -> ShiftQuantResult:
        """G_Y (Tensor[N, C_out, *O]) -> codes of G_Y[N*L, C_out], one scale per position.

        The rows are the reduction axis of the G_W GEMM (channels last, as the layer needs).
        """
        rows = g.movedim(dim, -1).reshape(-1, g.shape[dim])  # [N*L, C_out]
        result = shift_quantize(rows, 0, self.num_groups, self.grad_bits, self.grad_rounding,
                                self._generator(g))
        if self.collect_stats:
            self._note_error(rows, result)
        return result

    def quantize_grad_for_input(self, g: Tensor, slot: int = 0) -> ShiftQuantResult:
        """G_Y (Tensor[N, C_out, *O]) -> codes with one scale per output channel (dim 1)."""
        return shift_quantize(g, 1, self.num_groups, self.grad_input_copy_bits, self.grad_rounding,
                              self._generator(g))

    def quantize_grads(self, g: Tensor, dim: int = 1, slot: int = 0, for_weight: bool = True,
                       for_input: bool = True):
        """Two separate copies: grouped along different axes, they share no reduction."""
        return (self.quantize_grad_for_weight(g, dim, slot) if for_weight else None,
                self.quantize_grad_for_input(g, slot) if for_input else None)

    def _note_error(self, g: Tensor, result: ShiftQuantResult) -> None:
        norm = g.float().norm()
        error = (g.float() - result.dequantize()).norm() / norm if norm > 0 else norm
        self.last_stats = dict(self.last_stats, grad_rel_error=error)
