"""Tests of mmdaq.quantization.clip_strategies: the registry and the abs-max baseline."""
import pytest
import torch

from mmdaq.quantization import (CLIP_STRATEGIES, ClipResult, MCSConfig, clip_strategies,
                                get_clip_strategy, magnitude_aware_clip, max_clip,
                                register_clip_strategy)

G = torch.tensor([[0.0, 0, 0, 0, 0, 0, 0, -10], [1, -4, 3, -1, 0.5, 2, -3, 1]])


@pytest.fixture
def private_registry(monkeypatch):
    """A copy of the registry for tests that register; the real one is restored afterwards."""
    registry = dict(CLIP_STRATEGIES)
    monkeypatch.setattr(clip_strategies, 'CLIP_STRATEGIES', registry)
    return registry


def test_builtin_strategies():
    assert {'max', 'mcs'} <= set(CLIP_STRATEGIES)
    result = get_clip_strategy('max')(G)
    assert isinstance(result, ClipResult) and result.info == {}
    assert torch.equal(result.clip, torch.tensor([10.0, 4.0]))
    prev = torch.tensor([5.0, 5.0])
    result = get_clip_strategy('mcs')(G, prev)  # config None: the paper's defaults
    clip, is_gaussian = magnitude_aware_clip(G, prev, MCSConfig())
    assert torch.equal(result.clip, clip) and torch.equal(result.info['is_gaussian'], is_gaussian)
    strategy = get_clip_strategy('mcs')
    result = strategy(G, prev, strategy.build_config(k=1.25))
    assert torch.equal(result.clip, magnitude_aware_clip(G, prev, MCSConfig(k=1.25))[0])


def test_max_clip_policy_and_per_tensor_use():
    g = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    g[1] = 0
    g[2, 0] = float('inf')
    clip = max_clip(g)
    assert clip[0] == g[0].abs().max() and clip[1] == 0 and torch.isnan(clip[2])
    per_tensor = max_clip(G.reshape(1, -1))  # one row = one clip for the whole tensor
    assert per_tensor.shape == (1, ) and per_tensor.item() == 10.0


def test_a_new_strategy_slots_in(private_registry):

    @register_clip_strategy('half_max')
    def half_max(g_cm, prev_clip, config):
        return ClipResult(0.5 * max_clip(g_cm), {})

    assert torch.equal(get_clip_strategy('half_max')(G).clip, torch.tensor([5.0, 2.0]))
    assert 'half_max' in private_registry and 'half_max' not in CLIP_STRATEGIES


def test_registry_errors(private_registry):
    with pytest.raises(ValueError,
                       match=r"clip strategy must be one of \['direction_sensitive', 'max', "
                       r"'mcs'.*\], but got 'ui9'"):
        get_clip_strategy('ui9')
    with pytest.raises(ValueError, match=r"name must be a new non-empty string, but got 'mcs'"):
        register_clip_strategy('mcs')
    with pytest.raises(ValueError,
                       match=r"options of clip strategy 'max' must be empty, "
                       r"but got \['k'\]"):
        get_clip_strategy('max').build_config(k=1.0)
    with pytest.raises(TypeError,
                       match="config of clip strategy 'mcs' must be MCSConfig, "
                       'but got dict'):
        get_clip_strategy('mcs')(G, None, dict(k=1.0))
    with pytest.raises(TypeError,
                       match="config of clip strategy 'max' must be None, "
                       'but got MCSConfig'):
        get_clip_strategy('max')(G, None, MCSConfig())
    with pytest.raises(ValueError, match=r'k must be > 0, but got 0'):
        get_clip_strategy('mcs').build_config(k=0)
