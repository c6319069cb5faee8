"""Calls each kernel's bad-argument path in a child process and prints which ones crash.

A crash (signal) instead of a clear RuntimeError is a bug; this isolates it where pytest
would stop at the first one::

    python tools/benchmarks/check_error_paths.py
"""
import subprocess
import sys

CASES = {
    'stats float64': 'torch.ops.mmdaq.grad_channel_stats(torch.zeros(2, 3, dtype=torch.float64), '
                     '1, 4, 3.0, 127, True)',
    'stats dim': 'torch.ops.mmdaq.grad_channel_stats(torch.zeros(2, 3), 2, 4, 3.0, 127, True)',
    'stats bins': 'torch.ops.mmdaq.grad_channel_stats(torch.zeros(2, 3), 1, -1, 3.0, 127, True)',
    'stats alpha': 'torch.ops.mmdaq.grad_channel_stats(torch.zeros(2, 3), 1, 4, -1.0, 127, True)',
    'quantize dim': 'torch.ops.mmdaq.quantize_int8(torch.zeros(2, 3), torch.ones(1), 5)',
    'epilogue shape': 'torch.ops.mmdaq.int32_to_channels_first(torch.zeros(4, 3, '
                      'dtype=torch.int32), torch.ones(1), None, [2, 3, 5])',
}


def main() -> None:
    for name, call in CASES.items():
        code = f'import torch, mmdaq.kernels\ntry:\n    {call}\nexcept RuntimeError as e:\n' \
               f'    print("RuntimeError:", str(e).splitlines()[0])\n'
        proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
        result = proc.stdout.strip() or proc.stderr.strip().splitlines()[-1:]
        print(f'{name:<16} rc={proc.returncode:<4} {result}', flush=True)


if __name__ == '__main__':
    main()
