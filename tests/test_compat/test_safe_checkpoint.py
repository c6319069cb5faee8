import os
import pickle

import numpy as np
import pytest
import torch

from mmdaq.compat import UnsafeCheckpointError, safe_torch_load

mmengine = pytest.importorskip('mmengine')


class _Payload:
    """Unpickling this calls os.system: a checkpoint must never do that."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


def test_plain_state_dict_loads(tmp_path):
    state = {'w': torch.randn(3, 4), 'step': 3}
    torch.save(state, tmp_path / 'a.pth')
    loaded = safe_torch_load(str(tmp_path / 'a.pth'))
    assert torch.equal(loaded['w'], state['w']) and loaded['step'] == 3


def test_history_buffer_and_numpy_load(tmp_path):
    from mmengine.logging import HistoryBuffer
    buf = HistoryBuffer()
    buf.update(1.5)
    buf.update(2.5)
    ckpt = {'message_hub': {'log_scalars': {'loss': buf}}, 'arr': np.arange(4.0),
            'scalar': np.float64(3.0), 'ints': np.arange(3, dtype=np.int64)}
    torch.save(ckpt, tmp_path / 'b.pth')
    with pytest.raises(pickle.UnpicklingError):  # what plain torch.load does on torch >= 2.6
        torch.load(tmp_path / 'b.pth')
    loaded = safe_torch_load(str(tmp_path / 'b.pth'))
    assert loaded['message_hub']['log_scalars']['loss'].mean() == pytest.approx(2.0)
    np.testing.assert_array_equal(loaded['arr'], np.arange(4.0))
    assert loaded['ints'].dtype == np.int64 and loaded['scalar'] == 3.0


@pytest.mark.parametrize('load', ['safe_torch_load', 'mmengine'])
def test_malicious_payload_is_refused_and_not_run(tmp_path, load):
    marker = tmp_path / 'pwned'
    torch.save({'state_dict': {}, 'meta': _Payload(str(marker))}, tmp_path / 'evil.pth')
    with pytest.raises(UnsafeCheckpointError, match='posix.system|os.system|nt.system'):
        if load == 'safe_torch_load':
            safe_torch_load(str(tmp_path / 'evil.pth'))
        else:
            import mmdaq  # noqa: F401  (patches mmengine's loader)
            # isort: split
            from mmengine.runner.checkpoint import _load_checkpoint
            _load_checkpoint(str(tmp_path / 'evil.pth'), map_location='cpu')
    assert not marker.exists()


def test_getattr_is_guarded(tmp_path):
    class _GetattrPayload:
        def __reduce__(self):
            return (getattr, (str, 'format'))  # harmless here, but getattr is a gadget

    torch.save({'x': _GetattrPayload()}, tmp_path / 'g.pth')
    with pytest.raises(UnsafeCheckpointError, match="attribute 'format'"):
        safe_torch_load(str(tmp_path / 'g.pth'))
