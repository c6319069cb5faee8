"""Where the time of one DAQ INT8 conv goes: torch.profiler over forward + backward.

Prints the operators sorted by device time (CUDA) or CPU time, for one FP32 conv and its
DAQ twin on the same input, so the share of quantization, clip solving, im2col and the INT8
GEMMs in a layer's backward can be read off::

    python tools/benchmarks/profile_daq_layer.py  # 64 -> 64 k3 on 56 x 56, batch 64 on CUDA
    python tools/benchmarks/profile_daq_layer.py --channels 256 --out-channels 64 --kernel 1
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from mmdaq.analysis.benchmark import prepare  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--batch', type=int, default=None, help='default 64 on CUDA, 8 on CPU')
    parser.add_argument('--channels', type=int, default=64)
    parser.add_argument('--out-channels', type=int, default=64)
    parser.add_argument('--size', type=int, default=56)
    parser.add_argument('--kernel', type=int, default=3)
    parser.add_argument('--stride', type=int, default=1)
    parser.add_argument('--rows', type=int, default=18, help='operators listed per table')
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    batch = args.batch or (64 if device.type == 'cuda' else 8)
    if device.type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    conv = nn.Conv2d(args.channels, args.out_channels, args.kernel, args.stride,
                     args.kernel // 2, bias=False).to(device)
    x = torch.randn(batch, args.channels, args.size, args.size, device=device,
                    requires_grad=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda'
                                           else [])
    sort = 'cuda_time_total' if device.type == 'cuda' else 'cpu_time_total'
    for precision in ('fp32', 'daq'):
        module = prepare(conv, precision)
        grad = torch.randn_like(module(x))
        for _ in range(3):  # warm-up: kernels loaded, clip state initialised
            module(x).backward(grad)
        if device.type == 'cuda':
            torch.cuda.synchronize()
        with profile(activities=activities) as prof:
            for _ in range(5):
                module(x).backward(grad)
            if device.type == 'cuda':
                torch.cuda.synchronize()
        print(f'== {precision}: conv {args.channels}->{args.out_channels} k{args.kernel} '
              f's{args.stride} on {batch}x{args.channels}x{args.size}x{args.size}, {device} '
              f'({torch.cuda.get_device_name() if device.type == "cuda" else "cpu"}), '
              f'5 x (forward + backward)')
        print(prof.key_averages().table(sort_by=sort, row_limit=args.rows,
                                        max_name_column_width=60))


if __name__ == '__main__':
    main()
