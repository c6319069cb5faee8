"""A traffic and launch model of one convolution's forward + backward on a GPU.

Each kernel costs ``max(flops / peak, bytes / bandwidth)`` on the device, and each launch costs
host time; a layer takes the larger of its device time and its host time (launches are
asynchronous, so the slower side sets the pace). Three ways to run a convolution are modelled:

- ``fp32`` / ``bf16``: cuDNN's three GEMM-like kernels (forward, input gradient, weight
  gradient) on dense operands; ``bf16`` adds autocast's casts of X, W and G_Y.
- ``daq_fused``: the fused Triton chain of :mod:`mmdaq.ops.fused_layer` (the layer's CUDA
  kernels for DAQ, per-channel and per-tensor), ten launches per forward + backward::

      X amax, X codes | W amax, W codes | implicit GEMM (int8 -> int32, scale epilogue) -> Y
      G_Y partial statistics | histogram + clip | both G_Y codes (+ clip state) |
      wgrad implicit GEMM | dgrad implicit GEMM

- ``daq_traced``: whatever kernels :class:`~.op_trace.OpTrace` recorded for the real layer
  (one record per kernel, bytes from its tensors, FLOPs of its GEMMs).

The peaks are the cards' dense datasheet figures times an efficiency, and the host cost per
launch is a constant; ``tools/benchmarks/roofline.py`` prints the predictions beside a
measured run (``docs/benchmarks/h100_2026-11-25/``) and says how well they agree.
"""
import math
from typing import Dict, Iterable, List, NamedTuple, Tuple

from .op_trace import OpRecord, matmul_flops


class DeviceModel(NamedTuple):
    """Peak rates of one GPU (dense, per second) and the cost of one launch.

    The efficiencies scale the peaks (GEMMs and copies reach a fraction of the datasheet):
    ``efficiency`` the bandwidth and, unless given per math type in ``gemm_efficiency``
    (e.g. ``{'bf16': 0.2}``, fitted to a measured run), the compute peaks. ``launch_s`` is the
    host time per kernel launch in eager PyTorch, ``graph_launch_s`` per kernel of a replayed
    CUDA graph.
    """
    name: str
    fp32_flops: float
    bf16_flops: float
    int8_ops: float
    bandwidth: float
    efficiency: float = 0.7
    launch_s: float = 10e-6
    graph_launch_s: float = 2e-6
    gemm_efficiency: Tuple[Tuple[str, float], ...] = ()

    def peak(self, dtype: str) -> float:
        efficiency = dict(self.gemm_efficiency).get(dtype, self.efficiency)
        return {'fp32': self.fp32_flops, 'bf16': self.bf16_flops,
                'int8': self.int8_ops}[dtype] * efficiency

    def kernel_seconds(self, flops: float, nbytes: float, dtype: str) -> float:
        return max(flops / self.peak(dtype), nbytes / (self.bandwidth * self.efficiency))


#: Datasheet figures (SXM, dense: no 2:4 sparsity; FP32 without TF32 runs on the CUDA cores).
DEVICES = {
    'h100': DeviceModel('NVIDIA H100 SXM (HBM3)', 67e12, 989e12, 1979e12, 3.35e12),
    'h200': DeviceModel('NVIDIA H200 SXM (HBM3e)', 67e12, 989e12, 1979e12, 4.8e12),
}


class Kernel(NamedTuple):
    """One modelled kernel: what it is, its FLOPs (or integer ops), bytes moved, and math."""
    name: str
    flops: float
    nbytes: float
    dtype: str  # 'fp32', 'bf16' or 'int8': which peak its FLOPs run at


class ConvDims(NamedTuple):
    """The sizes of one convolution: N, C_in, C_out, input and output positions L_in / L_out,
    kernel volume K and groups G."""
    n: int
    c_in: int
    c_out: int
    l_in: int
    l_out: int
    k: int
    groups: int = 1

    @property
    def macs(self) -> int:
        """Multiply-adds of one of the three GEMMs."""
        return self.n * self.l_out * self.c_out * self.c_in // self.groups * self.k

    @property
    def x(self) -> int:
        return self.n * self.c_in * self.l_in

    @property
    def y(self) -> int:
        return self.n * self.c_out * self.l_out

    @property
    def w(self) -> int:
        return self.c_out * self.c_in // self.groups * self.k


def conv_dims(input_shape: Tuple[int, ...], out_channels: int, kernel: Tuple[int, ...],
              stride: Tuple[int, ...], padding: Tuple[int, ...], dilation: Tuple[int, ...],
              groups: int = 1) -> ConvDims:
    """:class:`ConvDims` of a convolution with these arguments (input Tensor[N, C_in, *S])."""
    spatial = input_shape[2:]
    out = [(s + 2 * p - d * (k - 1) - 1) // st + 1
           for s, k, st, p, d in zip(spatial, kernel, stride, padding, dilation)]
    return ConvDims(input_shape[0], input_shape[1], out_channels, math.prod(spatial),
                    math.prod(out), math.prod(kernel), groups)


def dense_kernels(d: ConvDims, dtype: str) -> List[Kernel]:
    """cuDNN's forward, input-gradient and weight-gradient kernels in ``dtype`` ('fp32' or
    'bf16'); for 'bf16' also autocast's casts (X, W and G_Y from float32, G_W back to it)."""
    e = 4 if dtype == 'fp32' else 2
    flops = 2 * d.macs
    kernels = [
        Kernel('forward', flops, e * (d.x + d.w + d.y), dtype),
        Kernel('grad_input', flops, e * (d.y + d.w + d.x), dtype),
        Kernel('grad_weight', flops, e * (d.x + d.y) + 4 * d.w, dtype),
    ]
    if dtype == 'bf16':
        kernels += [Kernel(f'cast {what}', 0, 6 * size, dtype)
                    for what, size in (('X', d.x), ('W', d.w), ('G_Y', d.y))]
    return kernels


def daq_fused_kernels(d: ConvDims, act_bytes: int = 4) -> List[Kernel]:
    """The ten kernels of the fused chain (module doc; :mod:`mmdaq.ops.fused_layer`), with
    the bytes each moves. Codes are one byte, W and G_W float32; X, Y, G_Y and G_X take
    ``act_bytes`` each (4: float32 training; 2: the layer between bfloat16 layers under autocast,
    its epilogues writing bfloat16). The implicit GEMMs read their int8 operands once (the
    weight gradient unsplit)."""
    ops, a = 2 * d.macs, act_bytes
    return [
        Kernel('X amax partials', 0, a * d.x, 'int8'),
        Kernel('X codes', 0, (a + 1) * d.x, 'int8'),
        Kernel('W amax partials', 0, 4 * d.w, 'int8'),
        Kernel('W codes', 0, 5 * d.w, 'int8'),
        Kernel('forward implicit GEMM + scale epilogue', ops, d.x + d.w + a * d.y, 'int8'),
        Kernel('G_Y partial statistics', 0, a * d.y, 'int8'),
        Kernel('G_Y histogram + clip', 0, a * d.y, 'int8'),
        Kernel('G_Y codes, per channel and per tensor', 0, (a + 2) * d.y, 'int8'),
        Kernel('wgrad implicit GEMM + per-channel epilogue', ops, d.x + d.y + 4 * d.w, 'int8'),
        Kernel('dgrad implicit GEMM + scale epilogue', ops, d.y + d.w + a * d.x, 'int8'),
    ]


def traced_kernels(records: Iterable[OpRecord]) -> List[Kernel]:
    """One :class:`Kernel` per kernel-launching record; integer GEMMs at the INT8 peak, float
    ones at the FP32 peak."""
    kernels = []
    for r in records:
        if not r.launches_kernel:
            continue
        integer = bool(r.inputs) and not r.inputs[0].dtype.is_floating_point
        kernels.append(Kernel(r.name, matmul_flops(r), r.bytes_read + r.bytes_written,
                              'int8' if integer else 'fp32'))
    return kernels


class Prediction(NamedTuple):
    """Predicted seconds of one layer: on the device, on the host, and the step (their max)."""
    device_s: float
    host_s: float
    launches: int

    @property
    def seconds(self) -> float:
        return max(self.device_s, self.host_s)


def predict(kernels: List[Kernel], device: DeviceModel, graph: bool = False) -> Prediction:
    """Device time (sum of the kernels' roofline times) and host time (launches) of a layer;
    ``graph``: launched by a CUDA graph replay."""
    device_s = sum(device.kernel_seconds(k.flops, k.nbytes, k.dtype) for k in kernels)
    per_launch = device.graph_launch_s if graph else device.launch_s
    return Prediction(device_s, per_launch * len(kernels), len(kernels))


def summarize_ratios(ratios: List[float]) -> Dict[str, float]:
    """Median and geometric mean of ratios (both robust to one outlier shape)."""
    ordered = sorted(ratios)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return dict(median=median, geomean=math.exp(sum(map(math.log, ratios)) / len(ratios)))
