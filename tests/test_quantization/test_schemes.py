import copy
import importlib

import pytest
import torch

from mmdaq.quantization.schemes import SCHEMES, build_scheme, register_scheme, scheme_options


def _grad(seed, scale=1.0):
    return torch.randn(4, 6, 5, 5, generator=torch.Generator().manual_seed(seed)) * scale


def test_registry_and_option_errors():
    assert {'per_tensor', 'per_channel', 'daq'} <= set(SCHEMES)
    assert 'a' in scheme_options('daq') and 'a' not in scheme_options('per_tensor')
    with pytest.raises(ValueError, match='method must be one of'):
        build_scheme('ui9')
    with pytest.raises(TypeError, match=r"unknown \['A'\]"):
        build_scheme('daq', A=0.8)
    with pytest.raises(ValueError, match='grad_rounding must be one of'):
        build_scheme('per_tensor', grad_rounding='up')
    with pytest.raises(ValueError, match='clip_interval must be an int >= 1'):
        build_scheme('daq', clip_interval=0)
    with pytest.raises(ValueError, match='long_tail_rule must be one of'):
        build_scheme('daq', long_tail_rule='median')
    with pytest.raises(ValueError, match='must be new'):
        register_scheme('daq')(SCHEMES['daq'])


def test_grad_for_weight_scales_per_method():
    g = _grad(0)
    g[:, 2] *= 100  # one loud channel
    per_tensor = build_scheme('per_tensor').quantize_grad_for_weight(g)[1]
    per_channel = build_scheme('per_channel').quantize_grad_for_weight(g)[1]
    assert per_tensor.shape == per_channel.shape == (6, )
    assert torch.all(per_tensor == per_tensor[0])  # one scale, repeated per channel
    torch.testing.assert_close(per_channel * 127, g.abs().amax(dim=(0, 2, 3)))
    q, s = build_scheme('per_tensor').quantize_grad_for_input(g)
    assert s.dim() == 0 and q.dtype == torch.int8


def test_daq_state_follows_the_paper_update_and_round_trips():
    # threshold 1: every channel counts as long-tailed
    scheme = build_scheme('daq', threshold=1.0, long_tail_rule='ema')
    scheme.quantize_grad_for_weight(_grad(0))
    first = scheme.prev_clip.clone()
    g2 = _grad(1, scale=2.0)
    scheme.quantize_grad_for_weight(g2)
    want = 0.2 * first + 0.8 * g2.abs().amax(dim=(0, 2, 3))
    torch.testing.assert_close(scheme.prev_clip, want)
    twin = build_scheme('daq', threshold=1.0, long_tail_rule='ema')
    twin.load_state_dict(copy.deepcopy(scheme.state_dict()))
    torch.testing.assert_close(twin.prev_clip, scheme.prev_clip)
    twin.load_state_dict({})
    assert twin.prev_clip is None


def test_clip_interval_reuses_clips_and_slots_are_separate():
    scheme = build_scheme('daq', clip_interval=2, long_tail_rule='ema')
    scheme.quantize_grad_for_weight(_grad(0), slot=0)
    kept = scheme.prev_clip.clone()
    scheme.quantize_grad_for_weight(_grad(1, scale=5.0), slot=0)  # not an update step
    torch.testing.assert_close(scheme.prev_clip, kept)
    scheme.quantize_grad_for_weight(_grad(2, scale=50.0), slot=1)
    assert set(scheme.prev_clips) == {0, 1}
    assert scheme.prev_clips[1].max() > 10 * kept.max()


def test_call_slots_restart_after_backward():
    scheme = build_scheme('daq')
    assert [scheme.next_call_slot() for _ in range(3)] == [0, 1, 2]
    scheme.note_backward()
    assert scheme.next_call_slot() == 0


def test_objective_rule_never_exceeds_abs_max():
    scheme = build_scheme('daq', long_tail_rule='objective', alpha=1.0)
    g = torch.randn(64, 6, 8, 8, generator=torch.Generator().manual_seed(3))
    g[0, :, 0, 0] = 12.0  # one moderate outlier in 4096 values per channel: worth clipping
    _, scale = scheme.quantize_grad_for_weight(g)
    assert torch.all(scale * 127 <= g.abs().amax(dim=(0, 2, 3)) + 1e-6)
    assert torch.any(scale * 127 < g.abs().amax(dim=(0, 2, 3)))


def test_objective_rule_is_the_default_and_reuses_ratios_between_updates():
    scheme = build_scheme('daq', clip_interval=2, alpha=1.0)
    assert scheme.long_tail_rule == 'objective'
    g = torch.randn(64, 6, 8, 8, generator=torch.Generator().manual_seed(3))
    g[0, :, 0, 0] = 12.0
    clip = scheme.quantize_grad_for_weight(g)[1] * 127
    ratio = clip / g.abs().amax(dim=(0, 2, 3))
    torch.testing.assert_close(scheme.clip_ratios[0], ratio)
    # Not an update step: the same ratios on a gradient 5x larger (the clip follows the scale).
    clip2 = scheme.quantize_grad_for_weight(g * 5.0)[1] * 127
    torch.testing.assert_close(clip2, clip * 5.0)
    twin = build_scheme('daq', clip_interval=2, alpha=1.0)
    twin.load_state_dict(copy.deepcopy(scheme.state_dict()))
    torch.testing.assert_close(twin.clip_ratios[0], scheme.clip_ratios[0])
    assert twin._updates == scheme._updates


def _long_tailed_grad(seed):
    """G_Y with sharp long-tailed channels (one large value each) and a NaN in channel 5."""
    gen = torch.Generator().manual_seed(seed)
    g = torch.distributions.Laplace(0.0, 1.0).sample((8, 6, 16, 16)) * 0.01
    g[0, :, 0, 0] = torch.randn(6, generator=gen) * 3.0  # one large value per channel
    g[1, 5, 2, 2] = float('nan')
    return g


@pytest.mark.parametrize('method,rounding', [('per_tensor', 'nearest'),
                                             ('per_tensor', 'stochastic'),
                                             ('per_channel', 'nearest'), ('daq', 'nearest'),
                                             ('daq', 'stochastic')])
def test_quantize_grads_equals_separate_quantizations(method, rounding):
    """The shared reductions change no code or scale (incl. a NaN channel)."""
    from mmdaq.quantization.quantize import quantize
    for step, g in enumerate((_long_tailed_grad(0), _long_tailed_grad(1) * 4.0)):
        if step == 0:
            scheme = build_scheme(method, grad_rounding=rounding, seed=3)
            twin = copy.deepcopy(scheme)
        (q_w, s_w), (q_x, s_x) = scheme.quantize_grads(g, dim=1)
        clip = twin.grad_weight_clip(g, dim=1)
        gen = twin._generator(g)
        if clip is None:
            ref_w = quantize(g, rounding=rounding, generator=gen)
            ref_w = (ref_w[0], ref_w[1].expand(6))
        else:
            ref_w = quantize(g, clip=clip, dim=1, rounding=rounding, generator=gen)
        if method == 'per_tensor' and rounding == 'nearest':
            ref_x = (ref_w[0], ref_w[1][0])  # the same copy
        else:
            ref_x = quantize(g, rounding=rounding, generator=gen)
        assert torch.equal(q_w, ref_w[0]) and torch.equal(q_x, ref_x[0])
        torch.testing.assert_close(s_w, ref_w[1], rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(s_x, ref_x[1], rtol=0, atol=0, equal_nan=True)
        assert torch.isnan(s_w[5]) and torch.isnan(s_x)  # the NaN channel is not hidden
        if method != 'per_tensor':  # a scale per channel, from the clip search's abs-max
            assert s_w[:5].unique().numel() == 5
            assert (s_w[:5] * 127 <= abs_max_of(g)[:5] * (1 + 1e-6)).all()
        assert scheme.last_grad_weight_scale is s_w


def abs_max_of(g):
    from mmdaq.quantization import abs_max
    return abs_max(g, dim=1)


@pytest.mark.parametrize('method,passes', [('daq', 0), ('per_channel', 1), ('per_tensor', 1)])
def test_quantize_grads_reduces_g_once(method, passes, monkeypatch):
    """DAQ's clip search yields the abs-max: no further abs-max pass over G_Y; the others
    compute it once (per channel or per tensor) for both copies."""
    quantize_module = importlib.import_module('mmdaq.quantization.quantize')
    schemes_module = importlib.import_module('mmdaq.quantization.schemes')
    calls, uncounted = [], quantize_module.abs_max

    def counted(x, dim=None):
        calls.append(dim)
        return uncounted(x, dim)

    monkeypatch.setattr(quantize_module, 'abs_max', counted)
    monkeypatch.setattr(schemes_module, 'abs_max', counted)
    build_scheme(method).quantize_grads(_long_tailed_grad(0), dim=1)
    assert len(calls) == passes, calls


def test_quantize_rejects_a_data_max_of_the_wrong_shape():
    from mmdaq.quantization.quantize import quantize
    g = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r'data_max must be a float32 Tensor of shape \[3\]'):
        quantize(g, dim=1, data_max=torch.ones(()))
    with pytest.raises(ValueError, match=r'shape \[\].*but got a torch.float64'):
        quantize(g, data_max=torch.ones((), dtype=torch.float64))


def test_a_method_that_overrides_only_grad_weight_clip_keeps_its_clip():
    """The older extension point: its clip is used by the shared-reduction backward."""
    from mmdaq.quantization.schemes import QuantScheme

    class HalfClip(QuantScheme):
        def grad_weight_clip(self, g, dim=1, slot=0):
            return abs_max_of(g) / 2

    g = _grad(0)
    (q_w, s_w), (q_x, s_x) = HalfClip().quantize_grads(g, dim=1)
    torch.testing.assert_close(s_w * 127, abs_max_of(g) / 2)
    assert q_w.abs().max() == 127 and q_x.abs().max() == 127  # clipped codes saturate
    torch.testing.assert_close(s_x * 127, abs_max_of(g).max())


def test_daq_clips_for_its_bit_width():
    """At 4 bits a long-tailed channel is clipped harder than at 8 (a rounding step is 18x
    larger, so cutting the tail pays sooner)."""
    from mmdaq.testing import laplace
    g = laplace((64, 4, 16, 16), torch.Generator().manual_seed(0))
    ratios = {}
    for bits in (8, 4):
        scheme = build_scheme('daq', grad_bits=bits)
        clip, g_max = scheme.grad_weight_clip_and_max(g, dim=1)
        ratios[bits] = (clip / g_max).mean().item()
        q, _ = scheme.quantize_grad_for_weight(g, dim=1)
        assert q.abs().max() == 2**(bits - 1) - 1
    assert ratios[4] < ratios[8] <= 1.0
