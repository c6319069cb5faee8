"""The code follows the house style (setup.cfg's flake8 section: 100 columns)."""
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def test_flake8_is_clean():
    pytest.importorskip('flake8')
    result = subprocess.run([sys.executable, '-m', 'flake8', 'mmdaq', 'tools', 'tests', 'setup.py'],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
