"""The traffic and launch model behind tools/benchmarks/roofline.py."""
import pytest
import torch
from torch import nn

import mmdaq
from mmdaq.analysis.op_trace import OpTrace
from mmdaq.analysis.roofline import (DEVICES, DeviceModel, Kernel, conv_dims, daq_fused_kernels,
                                     dense_kernels, predict, summarize_ratios, traced_kernels)
from mmdaq.ops.conv_autotune import cpu_conv_kernel
from mmdaq.ops.int8_matmul import int8_matmul_backend


def test_conv_dims_of_a_strided_conv():
    d = conv_dims((8, 64, 56, 56), 128, (3, 3), (2, 2), (1, 1), (1, 1))
    assert (d.l_in, d.l_out, d.k) == (56 * 56, 28 * 28, 9)
    assert d.macs == 8 * 28 * 28 * 128 * 64 * 9
    assert (d.x, d.y, d.w) == (8 * 64 * 56 * 56, 8 * 128 * 28 * 28, 128 * 64 * 9)


def test_dense_and_fused_kernels():
    d = conv_dims((64, 256, 14, 14), 256, (3, 3), (1, 1), (1, 1), (1, 1))
    fp32, bf16, fused = dense_kernels(d, 'fp32'), dense_kernels(d, 'bf16'), daq_fused_kernels(d)
    assert sum(k.flops for k in fp32) == sum(k.flops for k in bf16) == 3 * 2 * d.macs
    assert len(fp32) == 3 and len(bf16) == 6  # autocast's three casts
    assert len(fused) == 10  # the launches of the fused chain (tests/test_ops/test_fused_layer.py)
    assert sum(k.flops for k in fused) == 3 * 2 * d.macs
    # The GEMMs read one-byte codes; the quantization passes read the float tensors instead.
    by_name = {k.name.split()[0]: k.nbytes for k in fused}
    assert by_name['forward'] < fp32[0].nbytes and by_name['wgrad'] < fp32[2].nbytes
    # Between bfloat16 layers the activations and G_Y move in two bytes; W stays float32.
    half = daq_fused_kernels(d, act_bytes=2)
    assert [k.name for k in half] == [k.name for k in fused]
    saved = sum(k.nbytes for k in fused) - sum(k.nbytes for k in half)
    assert saved == 2 * (2 * d.x + d.y + 3 * d.y + d.x)  # X twice, Y, G_Y three times, G_X


def test_predict_takes_the_slower_of_compute_bandwidth_and_launches():
    dev = DeviceModel('toy', fp32_flops=1e12, bf16_flops=2e12, int8_ops=4e12, bandwidth=1e11,
                      efficiency=1.0, launch_s=1e-3, graph_launch_s=1e-6)
    compute = Kernel('mm', 2e12, 1e6, 'fp32')  # 2 s of math, 10 us of traffic
    traffic = Kernel('copy', 0, 1e11, 'fp32')  # 1 s of traffic
    p = predict([compute, traffic], dev)
    assert p.device_s == pytest.approx(3.0) and p.host_s == pytest.approx(2e-3)
    assert p.seconds == pytest.approx(3.0)
    tiny = predict([Kernel('tiny', 1, 1, 'int8')] * 5, dev)
    assert tiny.seconds == pytest.approx(5e-3)  # launch-bound
    assert predict([Kernel('tiny', 1, 1, 'int8')] * 5, dev, graph=True).seconds < 1e-4
    assert DEVICES['h200'].bandwidth > DEVICES['h100'].bandwidth


def test_traced_daq_layer_has_the_three_integer_gemms():
    torch.manual_seed(0)
    conv = mmdaq.convert_model(nn.Conv2d(16, 32, 3, padding=1, bias=False), method='daq')
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    # integer GEMMs also on a CPU without VNNI (whose 'auto' backend is float GEMMs)
    with cpu_conv_kernel('gemm'), int8_matmul_backend('int_mm'):
        conv(x).sum().backward()
        y = conv(x)
        with OpTrace() as trace:
            y = conv(x)
            y.backward(torch.randn_like(y))
    kernels = traced_kernels(trace.records)
    d = conv_dims((2, 16, 8, 8), 32, (3, 3), (1, 1), (1, 1), (1, 1))
    assert sum(k.flops for k in kernels if k.dtype == 'int8') == 3 * 2 * d.macs
    assert len(kernels) > len(daq_fused_kernels(d))  # what fusing has to remove


def test_summarize_ratios():
    s = summarize_ratios([0.5, 2.0, 1.0])
    assert s['median'] == 1.0 and s['geomean'] == pytest.approx(1.0)
