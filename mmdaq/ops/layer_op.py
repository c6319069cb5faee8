"""A quantized layer as a pair of ``torch.library`` custom ops, defined in one place.

:func:`define_layer_ops` turns a layer's two passes (INT8: :mod:`.int8_layer`; ShiftQuant:
:mod:`.shift_layer`) into the ops ``mmdaq::<name>`` and ``mmdaq::<name>_backward``, with fakes
and the autograd formula that connects them::

    forward   (x, weight, bias, scheme, kernel, stride, padding, dilation, groups, slot)
                  -> (y, *saved)
    backward  (grad_y, *saved, weight, scheme, kernel, stride, padding, dilation, groups, slot,
               need_x, need_w, need_b) -> (grad_x, grad_w, grad_b)

``saved`` are what the forward keeps for the backward (the codes of X and their scales, and for
the INT8 layer those of W); the weight parameter is saved too (no copy). A pass may have a
kernel of its own per device type (``device_passes``, e.g. the fused Triton chain of
:mod:`.fused_layer` on CUDA), registered with the op for that dispatch key; the passes given
first serve every other device. The scheme travels as its int handle
(:mod:`mmdaq.quantization.scheme_handles`) and its Python state (clips, counters, statistics)
changes inside the ops, out of the tracer's sight: traced as an autograd.Function, those
mutations were graph breaks (``Mutating a variable from outside the scope of this HOP``), as
ops ``torch.compile`` traces a network of these layers as one graph.

In plain eager mode the layer runs the same passes through an ``autograd.Function`` with the
same autograd formula (:class:`LayerOp`), without the custom op's Python wrappers (redispatch,
argument defaults, alias checks), which on a CPU cost a measurable share of a small layer's
forward + backward (docs/speed_cpu.md). Tracing (``torch.compile``, export), dispatch modes
(fake tensors, op traces), tensor subclasses and functorch transforms get the op itself.
"""
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..quantization.scheme_handles import scheme_from_handle
from .geometry import ConvGeometry
from .im2col import conv_output_size

_GEOMETRY = 'int scheme, int[] kernel, int[] stride, int[] padding, int[] dilation, int groups, ' \
    'int slot'

#: ``saved_fake(x, weight, scheme) -> tuple``: fakes of the saved tensors of a forward on ``x``
#: and ``weight`` with ``scheme`` (a QuantScheme).
SavedFake = Callable[[Tensor, Tensor, object], Tuple[Tensor, ...]]


def define_layer_ops(name: str, forward_pass: Callable, backward_pass: Callable,
                     saved: Sequence[str], saved_fake: SavedFake,
                     device_passes: Optional[Dict[str, Tuple[Callable, Callable]]] = None):
    """Define ``mmdaq::<name>`` and ``mmdaq::<name>_backward`` (module doc) and return the
    forward op.

    Args:
        name (str): Op name in the ``mmdaq`` namespace.
        forward_pass (Callable): ``(x, weight, bias, scheme, geo) -> (y, *saved)``.
        backward_pass (Callable): ``(grad_y, *saved, weight, scheme, geo, slot, need_x, need_w,
            need_b) -> (grad_x, grad_w, grad_b)``, float32 (grad_x also in grad_y's dtype) or
            None where not needed; the op returns grad_x in grad_y's dtype.
        saved (Sequence[str]): Schema names of the saved tensors, e.g. ``('Tensor x_q', ..)``.
        saved_fake (SavedFake): Their fakes.
        device_passes (dict, optional): Device type (``'cuda'``) -> ``(forward_pass,
            backward_pass)`` of that device's kernels, with the signatures above. Defaults to
            None.

    Returns:
        LayerOp: the layer's entry (``op``: the forward op, a ``torch.library.CustomOpDef``).
    """
    outputs = ', '.join(['Tensor'] * (1 + len(saved)))

    def op_forward(run_pass: Callable) -> Callable:
        def forward(x, weight, bias, scheme, kernel, stride, padding, dilation, groups, slot):
            geo = ConvGeometry.from_op_args(kernel, stride, padding, dilation, groups)
            return run_pass(x, weight, bias, scheme_from_handle(scheme), geo)
        return forward

    def op_backward(run_pass: Callable) -> Callable:
        def backward(grad_y, *args):
            *saved, weight, scheme, kernel, stride, padding, dilation, groups, slot = args[:-3]
            geo = ConvGeometry.from_op_args(kernel, stride, padding, dilation, groups)
            return backward_outputs(grad_y, run_pass(grad_y, *saved, weight,
                                                     scheme_from_handle(scheme), geo, slot,
                                                     *args[-3:]))
        return backward

    def forward_fake(x, weight, bias, scheme, kernel, stride, padding, dilation, groups, slot):
        out_size = conv_output_size(x.shape[2:], kernel, stride, padding, dilation)
        y = x.new_empty((x.shape[0], weight.shape[0]) + tuple(out_size))
        return (y, ) + saved_fake(x, weight, scheme_from_handle(scheme))

    def backward_fake(grad_y, x_codes, *args):
        weight, (need_x, need_w, need_b) = args[len(saved) - 1], args[-3:]
        f32 = dict(dtype=torch.float32)
        return (x_codes.new_empty(x_codes.shape, dtype=grad_y.dtype) if need_x else
                grad_y.new_empty(0),
                weight.new_empty(weight.shape, **f32) if need_w else grad_y.new_empty(0),
                weight.new_empty(weight.shape[:1], **f32) if need_b else grad_y.new_empty(0))

    forward_op = torch.library.custom_op(
        f'mmdaq::{name}', op_forward(forward_pass), mutates_args=(),
        schema=f'(Tensor x, Tensor weight, Tensor? bias, {_GEOMETRY}) -> ({outputs})')
    forward_op.register_fake(forward_fake)
    backward_op = torch.library.custom_op(
        f'mmdaq::{name}_backward', op_backward(backward_pass), mutates_args=(),
        schema=f'(Tensor grad_y, {", ".join(saved)}, Tensor weight, {_GEOMETRY}, bool need_x, '
        'bool need_w, bool need_b) -> (Tensor, Tensor, Tensor)')
    backward_op.register_fake(backward_fake)
    forwards = {None: op_forward(forward_pass)}
    backwards = {None: op_backward(backward_pass)}
    for device_type, (device_forward, device_backward) in (device_passes or {}).items():
        forwards[device_type] = op_forward(device_forward)
        backwards[device_type] = op_backward(device_backward)
        forward_op.register_kernel(device_type, forwards[device_type])
        backward_op.register_kernel(device_type, backwards[device_type])
    setup_context, backward = _autograd_formula(backward_op)
    forward_op.register_autograd(backward, setup_context=setup_context)

    def eager_backward(*args):  # the backward op's kernel for the device, called directly
        return backwards.get(args[0].device.type, backwards[None])(*args)

    eager_setup_context, eager_backward_formula = _autograd_formula(eager_backward)

    class EagerLayer(torch.autograd.Function):
        """The op's passes and autograd formula without the op (see :class:`LayerOp`)."""

        # forward(ctx, ...) rather than a separate setup_context: apply() then binds no
        # signature (inspect) per call.
        @staticmethod
        def forward(ctx, x, *args):
            output = forwards.get(x.device.type, forwards[None])(x, *args)
            eager_setup_context(ctx, (x, ) + args, output)
            return output

        backward = staticmethod(eager_backward_formula)

    return LayerOp(forward_op, EagerLayer.apply)


class LayerOp:
    """A layer's forward op and its eager route: called like the op, it runs
    ``eager(*args)`` (the same passes and autograd formula, as an ``autograd.Function``) where
    only eager kernels would see the call, else the op.

    Args:
        op: The forward op (``torch.library.CustomOpDef``).
        eager (Callable): The ``autograd.Function``'s ``apply``.
    """

    def __init__(self, op, eager: Callable) -> None:
        self.op, self.eager = op, eager

    def __call__(self, x: Tensor, weight: Tensor, bias: Optional[Tensor], *args):
        if eager_route_applies(x, weight, bias):
            return self.eager(x, weight, bias, *args)
        return self.op(x, weight, bias, *args)


#: torch's (private) probes of active dispatch modes and functorch transforms; where this torch
#: lacks one, every call takes the op.
_DISPATCH_MODES = getattr(torch._C, '_len_torch_dispatch_stack', None)
_FUNCTORCH_ACTIVE = getattr(torch._C, '_are_functorch_transforms_active', None)


def eager_route_applies(*tensors: Optional[Tensor]) -> bool:
    """Whether a call on ``tensors`` is plain eager: not traced by ``torch.compile``, under no
    dispatch mode (fake tensors, :class:`~mmdaq.analysis.op_trace.OpTrace`) or functorch
    transform, on CPU or CUDA tensors without ``__torch_function__`` (a parameter counts as a
    plain tensor)."""
    if _DISPATCH_MODES is None or _FUNCTORCH_ACTIVE is None or torch.compiler.is_compiling() \
            or _DISPATCH_MODES() > 0 or _FUNCTORCH_ACTIVE():
        return False
    present = tuple(t for t in tensors if t is not None)
    return not torch.overrides.has_torch_function(present) and \
        all(t.device.type in ('cpu', 'cuda') for t in present)


def _autograd_formula(run_backward: Callable) -> Tuple[Callable, Callable]:
    """``(setup_context, backward)`` of the layer, the backward running ``run_backward`` (the
    backward op, or its kernel): gradients in the dtypes of ``x`` and ``weight``; the bias
    gradient only with a bias."""

    def setup_context(ctx, inputs, output) -> None:
        x, weight, bias, *args = inputs  # args: scheme, kernel, .., groups, slot
        # The saved outputs (codes, scales) get no gradient: no zero tensors of their sizes
        # (an activation-sized memset per layer and backward) are made for them.
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(*output[1:], weight)
        ctx.args = tuple(args)
        ctx.has_bias = bias is not None
        ctx.x_dtype, ctx.w_dtype = x.dtype, weight.dtype

    def backward(ctx, grad_y: Optional[Tensor], *_grad_saved):
        if grad_y is None:  # Y did not reach the loss
            return (None, ) * (3 + len(ctx.args))
        *saved, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        need_b = need_b and ctx.has_bias
        grad_x, grad_w, grad_b = run_backward(grad_y, *saved, weight, *ctx.args, need_x, need_w,
                                              need_b)
        return (grad_x.to(ctx.x_dtype) if need_x else None,
                grad_w.to(ctx.w_dtype) if need_w else None,
                grad_b if need_b else None) + (None, ) * len(ctx.args)

    return setup_context, backward


def backward_outputs(grad_y: Tensor, grads: Sequence[Optional[Tensor]]) -> Tuple[Tensor, ...]:
    """A backward pass's ``(grad_x, grad_w, grad_b)`` as op outputs: ops return tensors, not
    None, so an empty tensor stands for "not needed"; contiguous ones, as the fake says
    (col2im's input gradient is a cropped view of its padded buffer); grad_x in grad_y's dtype,
    which is X's (a no-op where the pass stored it so)."""
    grad_x, *rest = grads
    if grad_x is not None:
        grad_x = grad_x.to(grad_y.dtype)
    return tuple(grad_y.new_empty(0) if g is None else g.contiguous() for g in (grad_x, *rest))
