"""k-bit weight and activation quantizers of Zhuang et al. (CVPR 2018; TPAMI extension).

The DoReFa-style quantizers the paper uses (notes B.1), with ``L = 2**k - 1`` levels::

    Q_k(z) = round(L z) / L                                     z in [0, 1]
    weights      w_hat = 2 Q_k(tanh(w) / (2 max|tanh(w)|) + 1/2) - 1       in [-1, 1]
    activations  x_hat = Q_k(clip(x, 0, 1))                                 in [0, 1]

The max is over the whole layer tensor. With the ``2 Q - 1`` form the weight levels are
``(2 i - L) / L``: odd multiples of ``1 / L`` with **no zero level** (k = 2 gives
{-1, -1/3, 1/3, 1}). Activation levels are ``i / L``. So a layer's forward is an integer GEMM
of the codes ``x_code = i`` and ``w_code = 2 i - L`` scaled by ``1 / (L_a L_w)``; for k <= 7
both codes fit int8 (:mod:`mmdaq.ops.lowbit_conv`).

Backward (straight-through estimator): the rounding passes its gradient unchanged. The tanh
and max normalisation of the weights is differentiated as usual (DoReFa's reference code does
not stop the gradient through the max). The activation clip passes the gradient only strictly
inside (0, 1). Gradients themselves are not quantized: this is quantization-aware training of
low-bit weights and activations.

``bits = 32`` (:data:`FP_BITS`) means "not quantized": both quantizers return their input
unchanged, so a network at 32 bits is exactly the float network. The straight-through rounding
and the activation quantizer are ``torch.library`` custom ops (``mmdaq::round_ste``,
``mmdaq::activation_quantize``) with their autograd formulas. :class:`LowBitConfig` holds a
layer's options: method ``'zhuang_w4a4'`` of ``convert_model``.
"""
import dataclasses
from typing import Tuple

import torch
from torch import Tensor

from .schemes import register_scheme

#: The bit width that means full precision (identity quantizers).
FP_BITS = 32
#: Largest bit width below :data:`FP_BITS` (Q_16 is exact in float32: 65535 levels).
MAX_LOW_BITS = 16


def check_bits(bits: int, name: str = 'bits') -> int:
    """Validate a bit width: an int in [1, 16], or 32 for full precision; returns it."""
    if isinstance(bits, bool) or not isinstance(bits, int) or \
            not (1 <= bits <= MAX_LOW_BITS or bits == FP_BITS):
        raise ValueError(f'{name} must be an int in [1, {MAX_LOW_BITS}] or {FP_BITS} (full '
                         f'precision), but got {bits!r}')
    return bits


def num_levels(bits: int) -> int:
    """``L = 2**bits - 1``: the largest code of the unsigned k-bit quantizer."""
    return 2**check_bits(bits) - 1


def uniform_quantize(z: Tensor, bits: int) -> Tensor:
    """``Q_k(z) = round((2**k - 1) z) / (2**k - 1)`` (no gradient handling).

    Args:
        z (Tensor[...]): Values, expected in [0, 1] (others are rounded the same way).
        bits (int): k, in [1, 16].

    Returns:
        Tensor[...]: Values on the grid ``{i / (2**k - 1)}``.
    """
    levels = num_levels(bits)
    return torch.round(z * levels) / levels


@torch.library.custom_op('mmdaq::round_ste', mutates_args=())
def _round_ste(z: Tensor, bits: int) -> Tensor:
    """``Q_k`` forward, identity backward (straight-through)."""
    return uniform_quantize(z, bits)


@_round_ste.register_fake
def _round_ste_fake(z: Tensor, bits: int) -> Tensor:
    return torch.empty_like(z)


def _round_ste_backward(ctx, grad: Tensor):
    return grad, None


_round_ste.register_autograd(_round_ste_backward)


@torch.library.custom_op('mmdaq::activation_quantize', mutates_args=())
def _activation_quantize(x: Tensor, bits: int) -> Tuple[Tensor, Tensor]:
    """``(Q_k(clip(x, 0, 1)), 0 < x < 1)``: the codes' values and where the gradient passes
    (a bool mask, 1 byte per value, kept for the backward)."""
    return uniform_quantize(x.clamp(0, 1), bits), (x > 0) & (x < 1)


@_activation_quantize.register_fake
def _activation_quantize_fake(x: Tensor, bits: int) -> Tuple[Tensor, Tensor]:
    return torch.empty_like(x), torch.empty_like(x, dtype=torch.bool)


def _activation_quantize_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(output[1])


def _activation_quantize_backward(ctx, grad: Tensor, _grad_inside):
    inside, = ctx.saved_tensors
    return grad * inside, None


_activation_quantize.register_autograd(_activation_quantize_backward,
                                       setup_context=_activation_quantize_setup)


def normalize_weight(w: Tensor) -> Tensor:
    """``tanh(w) / (2 max|tanh(w)|) + 1/2``, in [0, 1] (differentiable).

    An all-zero tensor maps to 1/2 everywhere (not NaN).
    """
    t = torch.tanh(w)
    peak = t.abs().max().clamp_min(torch.finfo(t.dtype).tiny)
    return t / (2 * peak) + 0.5


def quantize_weight(w: Tensor, bits: int) -> Tensor:
    """Zhuang et al./DoReFa weight quantizer ``2 Q_k(normalize_weight(w)) - 1`` with STE.

    Args:
        w (Tensor[C_out, ...]): Weight of one layer (the max is over all of it).
        bits (int): k in [1, 16], or 32 for the weight itself.

    Returns:
        Tensor[C_out, ...]: In [-1, 1] on the levels ``(2 i - L) / L``; ``w`` if ``bits`` is 32.

    Examples:
        >>> w_hat = quantize_weight(torch.linspace(-2, 2, 9), 2)
        >>> sorted(set(round(v, 4) for v in w_hat.tolist()))
        [-1.0, -0.3333, 0.3333, 1.0]
    """
    if check_bits(bits) == FP_BITS:
        return w
    return 2 * _round_ste(normalize_weight(w), bits) - 1


def quantize_activation(x: Tensor, bits: int) -> Tensor:
    """Activation quantizer ``Q_k(clip(x, 0, 1))``; gradient passes only for ``0 < x < 1``.

    Args:
        x (Tensor[N, C, ...]): Input of a layer (a ReLU output in the paper's networks).
        bits (int): k in [1, 16], or 32 for ``x`` itself (no clip either).

    Returns:
        Tensor[N, C, ...]: On the grid ``{i / (2**k - 1)}``; ``x`` if ``bits`` is 32.
    """
    if check_bits(bits) == FP_BITS:
        return x
    return _activation_quantize(x, bits)[0]


def activation_codes(x_hat: Tensor, bits: int) -> Tensor:
    """Integer codes ``i`` of quantized activations ``x_hat = i / L`` (int8 for k <= 7).

    Args:
        x_hat (Tensor[...]): Output of :func:`quantize_activation`.
        bits (int): Its k, in [1, 7].

    Returns:
        Tensor[...], int8: Codes in [0, 2**k - 1].
    """
    return torch.round(x_hat.float() * _int8_levels(bits, 'bits_a')).to(torch.int8)


def weight_codes(w_hat: Tensor, bits: int) -> Tensor:
    """Integer codes ``2 i - L`` of quantized weights ``w_hat = (2 i - L) / L`` (int8, k <= 7).

    Args:
        w_hat (Tensor[C_out, ...]): Output of :func:`quantize_weight`.
        bits (int): Its k, in [1, 7].

    Returns:
        Tensor[C_out, ...], int8: Odd codes in [-(2**k - 1), 2**k - 1].
    """
    return torch.round(w_hat.float() * _int8_levels(bits, 'bits_w')).to(torch.int8)


def _int8_levels(bits: int, name: str) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 7:
        raise ValueError(f'{name} must be an int in [1, 7] for int8 codes, but got {bits!r}')
    return 2**bits - 1


@dataclasses.dataclass
class LowBitConfig:
    """Precision of one low-bit layer: the options of method ``'zhuang_w4a4'``.

    Args:
        bits_w (int): Weight bit width k, 1-16, or 32 for float weights. Defaults to 4.
        bits_a (int): Activation bit width, 1-16, or 32 for float inputs. Defaults to 4.
        quantize_weights (bool): Quantize the weights. Defaults to True.
        quantize_activations (bool): Quantize the layer input (False: the first stage of
            two-stage optimisation). Defaults to True.
        integer_gemm (bool): Run the forward as an exact int8 GEMM when both operands are
            quantized to <= 7 bits; False always uses the float path. Defaults to True.
        scale_weights (bool): Multiply the k-bit weights (in [-1, 1]) by ``max|w|`` (no
            gradient), so a layer keeps the float layer's output scale. Not in the paper, whose
            layers are all followed by BN (which undoes any scale); needed where no BN follows
            (FPN, RPN and RoI heads of detectors). Defaults to False.
    """
    bits_w: int = 4
    bits_a: int = 4
    quantize_weights: bool = True
    quantize_activations: bool = True
    integer_gemm: bool = True
    scale_weights: bool = False

    name = 'zhuang_w4a4'

    def __post_init__(self) -> None:
        check_bits(self.bits_w, 'bits_w')
        check_bits(self.bits_a, 'bits_a')
        for name in ('quantize_weights', 'quantize_activations', 'integer_gemm',
                     'scale_weights'):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f'{name} must be a bool, but got {getattr(self, name)!r}')


#: Zhuang et al.'s layers are method 'zhuang_w4a4' of ``convert_model`` (bits by option).
register_scheme(LowBitConfig.name)(LowBitConfig)
