"""UI8: direction-sensitive clipping, the learning-rate factor and the 'ui8' scheme."""
import copy
import math

import pytest
import torch

from mmdaq.quantization import DSGCConfig, cosine_distance, dclrs_factor, direction_sensitive_clip
from mmdaq.quantization.schemes import build_scheme
from mmdaq.testing import laplace


def _rows(seed, shape=(3, 4096)):
    return laplace(shape, torch.Generator().manual_seed(seed))


def test_cosine_distance_invariants():
    g = _rows(0)
    assert torch.allclose(cosine_distance(g, 3.5 * g), torch.zeros(3), atol=1e-6)
    assert torch.allclose(cosine_distance(g, -g), torch.full((3, ), 2.0))
    d = cosine_distance(g, _rows(1))
    assert ((0 <= d) & (d <= 2)).all()
    zero = torch.zeros(1, 8)
    assert cosine_distance(zero, zero).item() == 0.0
    assert cosine_distance(zero, torch.ones(1, 8)).item() == 1.0


def test_dsgc_never_worse_than_abs_max_and_scale_covariant():
    g = _rows(2, (3, 65536))
    g[0, :4] = 40.0  # a few outliers: clipping them keeps the direction of the bulk better
    result = direction_sensitive_clip(g)
    g_max = g.abs().amax(dim=1)
    assert (result.clip <= g_max).all() and (result.clip > 0).all()
    assert result.clip[0] < g_max[0]
    from mmdaq.quantization import fake_quantize
    at_max = cosine_distance(g, fake_quantize(g, g_max, dim=0))
    assert (result.info['cosine_distance'] <= at_max + 1e-7).all()
    scaled = direction_sensitive_clip(g * 2.0**-7)  # power of two: exactly the same search
    torch.testing.assert_close(scaled.clip, result.clip * 2.0**-7)
    bad = g.clone()
    bad[1, 3] = float('nan')
    out = direction_sensitive_clip(bad)
    assert torch.isnan(out.clip[1]) and torch.isnan(out.info['cosine_distance'][1])
    assert torch.isfinite(out.clip[[0, 2]]).all()
    with pytest.raises(ValueError, match='num_candidates must be an int >= 2'):
        DSGCConfig(num_candidates=1)


def test_dclrs_factor_is_the_papers_formula():
    assert dclrs_factor(0.0) == 1.0
    assert dclrs_factor(0.05) == pytest.approx(math.exp(-1.0))
    assert dclrs_factor(0.2) == 0.1  # floor beta from d >= ln(10) / 20 = 0.115
    values = [dclrs_factor(d / 100) for d in range(30)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert dclrs_factor(float('nan')) == 1.0
    with pytest.raises(ValueError, match='beta in'):
        dclrs_factor(0.1, beta=0.0)


def test_ui8_scheme_quantizes_once_for_both_gemms_and_updates_periodically():
    scheme = build_scheme('ui8', update_interval=2, seed=0)
    assert scheme.grad_rounding == 'stochastic'
    g = _rows(3, (4, 6, 5, 5))
    (q_w, s_w), (q_x, s_x) = scheme.quantize_grads(g, dim=1)
    assert q_w is q_x and torch.equal(s_w, s_x.expand(6))  # one INT8 copy of G_Y
    assert scheme._updates == {0: 1}  # one clip update for both GEMMs
    ratio = scheme.clip_ratios[0].clone()
    scheme.quantize_grad_for_weight(g * 4.0)  # not an update step: same ratio, scaled clip
    torch.testing.assert_close(scheme.clip_ratios[0], ratio)
    g3 = g.clone()
    g3[0, 0, 0, 0] = 1e3
    distance = scheme.distances[0].clone()
    scheme.quantize_grad_for_weight(g3)  # update step: searched again
    assert not torch.equal(scheme.distances[0], distance)
    twin = build_scheme('ui8', update_interval=2, seed=0)
    twin.load_state_dict(copy.deepcopy(scheme.state_dict()))
    assert torch.equal(twin.clip_ratios[0], scheme.clip_ratios[0]) and twin._updates == {0: 3}
    assert 0.1 <= scheme.weight_grad_scale() <= 1.0
    assert build_scheme('ui8', lr_scaling=False).weight_grad_scale() == 1.0
    with pytest.raises(ValueError, match='update_interval must be an int >= 1'):
        build_scheme('ui8', update_interval=0)


def test_ui8_layer_scales_the_weight_gradient_by_the_factor():
    from mmdaq.ops.geometry import ConvGeometry
    from mmdaq.ops.int8_conv_op import int8_conv
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, 6, 6, generator=gen)
    w = torch.randn(8, 4, 3, 3, generator=gen)
    b = torch.zeros(8)
    geo = ConvGeometry((3, 3), (1, 1), (1, 1), (1, 1), 1)
    grads = []
    for lr_scaling in (True, False):
        scheme = build_scheme('ui8', seed=0, lr_scaling=lr_scaling)
        xx, ww, bb = (t.clone().requires_grad_() for t in (x, w, b))
        y = int8_conv(xx, ww, bb, scheme, geo)
        y.backward(torch.ones_like(y))
        grads.append((ww.grad, bb.grad, xx.grad, scheme.weight_grad_scale()))
    (gw, gb, gx, factor), (gw_ref, gb_ref, gx_ref, one) = grads
    assert one == 1.0 and 0.1 <= factor <= 1.0
    torch.testing.assert_close(gw, gw_ref * factor)
    torch.testing.assert_close(gb, gb_ref * factor)
    torch.testing.assert_close(gx, gx_ref)  # the input gradient is not scaled


def test_ui8_trains_a_small_net():
    from torch import nn

    from mmdaq import convert_model
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    convert_model(net, method='ui8', update_interval=5, seed=0)
    gen = torch.Generator().manual_seed(1)
    level = torch.randn(32, 3, generator=gen)  # per-image channel levels decide the label
    x = level[:, :, None, None] + 0.5 * torch.randn(32, 3, 8, 8, generator=gen)
    y = (level @ torch.randn(3, 4, generator=gen)).argmax(1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(30):
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses
