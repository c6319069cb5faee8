"""Imports point one way: kernels <- quantization <- ops <- cnn <- engine (docs/layout.md)."""
import ast
import glob
import os.path as osp

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
LAYERS = ('kernels', 'quantization', 'ops', 'cnn', 'engine')


def mmdaq_imports(path: str) -> set:
    """The ``mmdaq`` subpackages a module imports (relative imports resolved), at any depth."""
    package = osp.relpath(osp.dirname(path), ROOT).split(osp.sep)  # e.g. ['mmdaq', 'ops']
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            names = base + (node.module.split('.') if node.module else [])
            if not node.module:  # from . import x
                names = names + [node.names[0].name]
            targets = [names]
        elif isinstance(node, ast.Import):
            targets = [a.name.split('.') for a in node.names]
        else:
            continue
        found.update(t[1] for t in targets if len(t) > 1 and t[0] == 'mmdaq')
    return found


@pytest.mark.parametrize('layer', LAYERS)
def test_a_layer_imports_only_the_layers_below(layer):
    above = set(LAYERS[LAYERS.index(layer) + 1:])
    wrong = {}
    for path in glob.glob(osp.join(ROOT, 'mmdaq', layer, '**', '*.py'), recursive=True):
        imported = mmdaq_imports(path)
        # kernels is the bottom: torch and the compiled extension mmdaq._ext only
        bad = imported - {'kernels', '_ext'} if layer == 'kernels' else imported & above
        if bad:
            wrong[osp.relpath(path, ROOT)] = sorted(bad)
    assert not wrong, f'{layer} must not import the layers above it, but: {wrong}'


def test_the_math_calls_kernels_through_their_wrappers():
    calls = [osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'mmdaq', 'quantization',
                                                              '*.py'))
             if 'torch.ops.mmdaq.' in open(p).read()]
    assert not calls, f'quantization must call mmdaq.kernels, not torch.ops.mmdaq: {calls}'


def test_mmdaq_imports_resolves_relative_imports():
    path = osp.join(ROOT, 'mmdaq', 'ops', 'int8_layer.py')
    assert {'kernels', 'quantization'} <= mmdaq_imports(path)
