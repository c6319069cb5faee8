import subprocess
import sys

import pytest

pytest.importorskip('mmaction')


def test_import_mmaction_models_after_mmdaq():
    # A fresh interpreter: the stand-in must be installed by `import mmdaq` alone.
    code = ('import mmdaq, mmaction.models, sys; '
            'from mmaction.registry import MODELS; '
            "assert MODELS.get('Recognizer2D') is not None; "
            "print(sys.modules['mmaction.models.localizers.drn.drn'].DRN)")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 'None'


def test_stub_not_installed_twice():
    import mmdaq  # noqa: F401
    from mmdaq.compat import install_drn_stub
    assert install_drn_stub() is False  # already in sys.modules
