import copy

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
