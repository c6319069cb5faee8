"""Which ops a piece of PyTorch code dispatches: counts, host syncs and memory traffic.

:class:`OpTrace` is a dispatch mode that records every op that reaches the dispatcher, with the
shapes, dtypes and bytes of its tensor inputs and outputs. It descends into the Python custom
ops of mmdaq (``mmdaq::int8_conv`` runs Python that dispatches further ops), so what it lists
are the kernels a device would launch; compiled ops (C++ / CUDA kernels) are one record each,
whatever they call inside. It is how the tests count host synchronisations (``.item()``,
``bool(tensor)``, data-dependent shapes) and dispatched ops on CPU, and what
``tools/benchmarks/roofline.py`` turns into predicted times.

Examples:
    >>> with OpTrace() as trace:
    ...     y = torch.ones(3).mul(2).sum().item()
    >>> [r.name for r in trace.records]
    ['aten.ones', 'aten.mul.Tensor', 'aten.sum', 'aten._local_scalar_dense']
    >>> trace.syncs()
    ['aten._local_scalar_dense']
"""
import math
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

#: Ops that make the host wait for the device: a value read back (``.item()``, ``bool(t)``,
#: ``torch.equal``) or an output whose size depends on the data.
SYNC_OPS = frozenset({
    'aten._local_scalar_dense', 'aten.item', 'aten.is_nonzero', 'aten.equal', 'aten.nonzero',
    'aten.masked_select', 'aten.unique', 'aten._unique', 'aten._unique2',
    'aten.unique_consecutive', 'aten.unique_dim', 'aten.allclose'
})

#: Ops that only make a new view or an empty tensor: no kernel launch, no memory traffic.
NO_KERNEL_OPS = frozenset({
    'aten.view', 'aten._unsafe_view', 'aten.reshape', 'aten.permute', 'aten.transpose',
    'aten.t', 'aten.expand', 'aten.as_strided', 'aten.slice', 'aten.select', 'aten.unsqueeze',
    'aten.squeeze', 'aten.detach', 'aten.alias', 'aten.unbind', 'aten.split', 'aten.chunk',
    'aten.movedim', 'aten.empty', 'aten.empty_like', 'aten.empty_strided', 'aten.new_empty',
    'aten.new_empty_strided', 'aten.lift_fresh', 'aten.split_with_sizes', 'aten.narrow',
    'aten.diagonal', 'aten.view_as', 'aten.expand_as', 'aten.set_', 'aten.resize_',
    'aten.is_same_size', 'aten.sym_size', 'aten.sym_stride', 'aten.sym_numel',
    'aten.sym_storage_offset', 'aten.is_contiguous', 'aten.dim', 'aten.size', 'aten.stride',
    'prim.device', 'prim.layout'
})


class TensorMeta(NamedTuple):
    """Shape, dtype and size in bytes of one tensor argument or result."""
    shape: Tuple[int, ...]
    dtype: torch.dtype
    nbytes: int


class OpRecord(NamedTuple):
    """One dispatched op.

    ``name`` is the op without its overload unless the overload is not ``default``
    (``'aten.mm'``, ``'aten.mul.Tensor'``); ``depth`` is 0 for ops called by the traced code and
    1 or more inside a Python custom op of mmdaq (whose own record has ``is_python_op``);
    ``aliases`` is True when every output shares memory with an input (``x.to(x.dtype)``,
    ``x.contiguous()`` of a contiguous ``x``: no kernel ran).
    """
    name: str
    inputs: Tuple[TensorMeta, ...]
    outputs: Tuple[TensorMeta, ...]
    depth: int
    is_python_op: bool
    aliases: bool = False

    @property
    def launches_kernel(self) -> bool:
        """False for Python custom ops (their inner ops launch), view / empty ops and ops that
        returned their input."""
        return not (self.is_python_op or self.aliases
                    or _base_name(self.name) in NO_KERNEL_OPS)

    @property
    def is_sync(self) -> bool:
        return _base_name(self.name) in SYNC_OPS

    @property
    def bytes_read(self) -> int:
        return sum(t.nbytes for t in self.inputs)

    @property
    def bytes_written(self) -> int:
        return sum(t.nbytes for t in self.outputs)


def _base_name(name: str) -> str:
    """'aten.mul.Tensor' -> 'aten.mul'."""
    return '.'.join(name.split('.')[:2])


def _op_name(func) -> str:
    overload = func._overloadname
    base = f'{func.namespace}.{func._opname}'
    return base if overload == 'default' else f'{base}.{overload}'


def _metas(tree: Any) -> Tuple[TensorMeta, ...]:
    leaves, _ = tree_flatten(tree)
    return tuple(
        TensorMeta(tuple(t.shape), t.dtype, t.numel() * t.element_size()) for t in leaves
        if isinstance(t, torch.Tensor))


def _is_python_custom_op(func) -> bool:
    """True for ops defined with ``torch.library.custom_op`` (their kernel is Python code)."""
    from torch._library.custom_ops import _maybe_get_opdef
    return _maybe_get_opdef(f'{func.namespace}::{func._opname}') is not None


class OpTrace(TorchDispatchMode):
    """Record the ops dispatched inside ``with OpTrace() as trace:`` (see the module doc).

    Args:
        namespaces (tuple[str]): Namespaces of Python custom ops to descend into.
            Defaults to ('mmdaq', ).
    """

    def __init__(self, namespaces: Tuple[str, ...] = ('mmdaq', )) -> None:
        super().__init__()
        self.namespaces = tuple(namespaces)
        self.records: List[OpRecord] = []
        self._depth = 0
        self._python_ops: Dict[Any, bool] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        descend = func.namespace in self.namespaces and self._python_ops.setdefault(
            func, _is_python_custom_op(func))
        index = len(self.records)
        self.records.append(OpRecord(_op_name(func), _metas((args, kwargs)), (), self._depth,
                                     descend))
        if descend:
            # Run the op's own kernel (not this mode again) with the mode active, so the ops
            # its Python code dispatches are recorded too.
            device = _first_tensor(args, kwargs).device.type
            keys = torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, device.upper()))
            self._depth += 1
            try:
                with self:
                    out = func.redispatch(keys, *args, **kwargs)
            finally:
                self._depth -= 1
        else:
            out = func(*args, **kwargs)
        self.records[index] = self.records[index]._replace(outputs=_metas(out),
                                                           aliases=_aliases(out, (args, kwargs)))
        return out

    # -- summaries ------------------------------------------------------------------------
    def syncs(self) -> List[str]:
        """Names of the recorded ops that synchronise the host with the device."""
        return [r.name for r in self.records if r.is_sync]

    def kernels(self) -> List[OpRecord]:
        """The records that launch a kernel (views, empties and Python custom ops excluded)."""
        return [r for r in self.records if r.launches_kernel]

    def counts(self) -> Dict[str, int]:
        """Kernel-launching records per op name, most frequent first."""
        counts: Dict[str, int] = {}
        for r in self.kernels():
            counts[r.name] = counts.get(r.name, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _storages(tree: Any) -> set:
    leaves, _ = tree_flatten(tree)
    pointers = set()
    for t in leaves:
        if isinstance(t, torch.Tensor) and t.device.type != 'meta' and t.numel():
            try:
                pointers.add(t.untyped_storage().data_ptr())
            except NotImplementedError:  # opaque tensors (oneDNN's packed weights)
                pointers.add(id(t))
    return pointers


def _aliases(out: Any, inputs: Any) -> bool:
    """True if ``out`` has tensors and all of them share storage with the inputs."""
    produced = _storages(out)
    return bool(produced) and produced <= _storages(inputs)


def _first_tensor(args, kwargs) -> Optional[torch.Tensor]:
    leaves, _ = tree_flatten((args, kwargs))
    for t in leaves:
        if isinstance(t, torch.Tensor):
            return t
    raise ValueError('OpTrace can only descend into ops with a tensor argument')


def matmul_flops(record: OpRecord) -> int:
    """Multiply-adds x 2 of the GEMM-like ops (mm, bmm, addmm, _int_mm, convolution), else 0."""
    name = _base_name(record.name)
    shapes = [t.shape for t in record.inputs]
    if name in ('aten.mm', 'aten._int_mm') and len(shapes) >= 2:
        (m, k), (_, n) = shapes[0], shapes[1]
        return 2 * m * k * n
    if name == 'aten.addmm' and len(shapes) >= 3:
        (m, k), (_, n) = shapes[1], shapes[2]
        return 2 * m * k * n
    if name in ('aten.bmm', 'aten.baddbmm') and len(shapes) >= 2:
        a, b = shapes[-2], shapes[-1]
        return 2 * a[0] * a[1] * a[2] * b[2]
    if name in ('aten.convolution', 'aten.mkldnn_convolution') and len(shapes) >= 2:
        out = record.outputs[0].shape if record.outputs else ()
        w = shapes[1]
        return 2 * math.prod(out) * math.prod(w[1:]) if out else 0
    return 0
