"""Side-by-side timing of FP32, BF16 (autocast) and DAQ INT8 layers and training iterations.

Used by ``tools/benchmarks/bench_layers.py``. Every comparison runs in one process on one device,
so only ratios are meant to be read across machines. Timings are medians of ``reps`` runs after
``warmup`` runs, taken by :class:`torch.utils.benchmark.Timer` (which synchronises the
accelerator around every timed run) on torch's current number of threads.
"""
import contextlib
import copy
import os.path as osp
import subprocess
from typing import Callable, Dict, Iterator, List, NamedTuple, Tuple

import torch
from torch import Tensor, nn
from torch.utils import benchmark

#: Precisions compared: FP32, BF16 autocast and DAQ INT8 (the model's layers converted).
PRECISIONS = ('fp32', 'bf16', 'daq')


class ConvShape(NamedTuple):
    """One distinct convolution of a network: input shape and conv arguments."""
    input_shape: Tuple[int, ...]
    out_channels: int
    kernel: Tuple[int, ...]
    stride: Tuple[int, ...]
    padding: Tuple[int, ...]
    dilation: Tuple[int, ...]
    groups: int

    def build(self) -> nn.Module:
        """A fresh FP32 ``nn.Conv2d``/``nn.Conv3d`` with these arguments (no bias, as ResNets)."""
        conv = {4: nn.Conv2d, 5: nn.Conv3d}[len(self.input_shape)]
        return conv(self.input_shape[1], self.out_channels, self.kernel, self.stride,
                    self.padding, self.dilation, self.groups, bias=False)

    def label(self) -> str:
        k = 'x'.join(map(str, self.kernel))
        s = self.stride[0]
        return (f'{"x".join(map(str, self.input_shape))} -> {self.out_channels} k{k} s{s}'
                + (f' g{self.groups}' if self.groups > 1 else ''))


def conv_shapes(model: nn.Module, inputs: Tensor) -> List[Tuple[ConvShape, int]]:
    """Distinct convolutions met by one forward of ``model`` and how often each occurs.

    Args:
        model (nn.Module): Any network; its ``nn.Conv2d``/``nn.Conv3d`` modules are recorded.
        inputs (Tensor): The forward's input.

    Returns:
        list[tuple[ConvShape, int]]: In order of first use.
    """
    seen: Dict[ConvShape, int] = {}

    def record(module, args, _output):
        shape = ConvShape(tuple(args[0].shape), module.out_channels, tuple(module.kernel_size),
                          tuple(module.stride), tuple(module.padding), tuple(module.dilation),
                          module.groups)
        seen[shape] = seen.get(shape, 0) + 1

    handles = [m.register_forward_hook(record) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for h in handles:
            h.remove()
    return list(seen.items())


def resnet50_conv_shapes(batch: int, size: int) -> List[Tuple[ConvShape, int]]:
    """Distinct convolutions of ResNet-50 on ``batch x 3 x size x size``.

    mmdet's backbone where mmdet is installed, else torchvision's ``resnet50`` (the same
    convolutions: stride on the 3x3 conv of each bottleneck, "pytorch" style).
    """
    try:
        from mmdet.models.backbones import ResNet
        model = ResNet(depth=50)
    except ImportError:
        from torchvision.models import resnet50
        model = resnet50()
    model.eval()  # mmdet's ResNet.train() returns None, so no chaining
    return conv_shapes(model, torch.zeros(batch, 3, size, size))


def median_time(fn: Callable[[], None], device: torch.device, reps: int, warmup: int) -> float:
    """Median wall time of ``fn()`` in seconds over ``reps`` runs, after ``warmup`` runs.

    Each run is one :meth:`torch.utils.benchmark.Timer.timeit` of a single call (which makes two
    untimed calls of its own first), on ``torch.get_num_threads()`` threads, with ``device``
    current on CUDA so that the timer synchronises it.
    """
    current = torch.cuda.device(device) if device.type == 'cuda' else contextlib.nullcontext()
    with current:
        for _ in range(warmup):
            fn()
        timer = benchmark.Timer(stmt='fn()', globals={'fn': fn},
                                num_threads=torch.get_num_threads())
        runs = [timer.timeit(number=1) for _ in range(reps)]
    return benchmark.Measurement.merge(runs)[0].median


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """Autocast for ``'bf16'``, nothing for ``'fp32'``/``'daq'`` (DAQ lives in the modules)."""
    if precision not in PRECISIONS:
        raise ValueError(f'precision must be one of {PRECISIONS}, but got {precision!r}')
    if precision == 'bf16':
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def prepare(module: nn.Module, precision: str, **daq_options) -> nn.Module:
    """A copy of ``module`` for ``precision``: converted to DAQ for ``'daq'``, else as is.

    The copy is wrapped in ``nn.Sequential`` (conversion replaces children, so a bare layer
    needs a parent); a ``'daq'`` copy without any INT8 layer is an error.
    """
    module = nn.Sequential(copy.deepcopy(module))
    if precision == 'daq':
        from mmdaq.cnn import convert_model, daq_layers
        convert_model(module, **daq_options)
        if not daq_layers(module):
            raise ValueError(f'no layer of {type(module[0]).__name__} could be converted to DAQ')
    return module


def saved_activation_bytes(module: nn.Module, x: Tensor, precision: str) -> int:
    """Bytes of the tensors autograd saves for backward in one forward, parameters excluded."""
    params = {p.data_ptr() for p in module.parameters()}
    total = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal total
        if t.data_ptr() not in params:
            total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with precision_context(precision, x.device):
            module(x)
    return total


def time_layer(module: nn.Module, x: Tensor, precision: str, reps: int = 5,
               warmup: int = 2) -> Dict[str, float]:
    """Forward, backward and forward+backward time (s) of one layer at ``precision``.

    ``module`` must already be prepared (:func:`prepare`). The input requires grad, so the
    backward computes both G_X and G_W, as inside a network.
    """
    x = x.detach().requires_grad_(True)
    with precision_context(precision, x.device):
        grad = torch.randn_like(module(x).float())
    device = x.device

    def forward():
        with precision_context(precision, device):
            module(x)

    def forward_backward():
        with precision_context(precision, device):
            y = module(x)
        y.backward(grad.to(y.dtype))
        x.grad = None
        module.zero_grad(set_to_none=True)

    fwd = median_time(forward, device, reps, warmup)
    both = median_time(forward_backward, device, reps, warmup)
    return {'fwd': fwd, 'bwd': max(both - fwd, 0.0), 'fwd_bwd': both}


def time_train_step(model: nn.Module, loss_fn: Callable[[nn.Module], Tensor], precision: str,
                    device: torch.device, reps: int = 3, warmup: int = 1) -> float:
    """Median time (s) of one training iteration: forward, loss, backward, SGD step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step():
        with precision_context(precision, device):
            loss = loss_fn(model)
        optimizer.zero_grad(set_to_none=True)
        loss.float().backward()
        optimizer.step()

    return median_time(step, device, reps, warmup)


def code_version() -> str:
    """``git describe --always --dirty`` of the mmdaq checkout (for benchmark headers), or
    ``'unknown'`` outside a git checkout."""
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    try:
        return subprocess.run(['git', '-C', root, 'describe', '--always', '--dirty'],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return 'unknown'
