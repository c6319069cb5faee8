"""Every repository path the front page, the Makefile, the configs, the docs and the shell
scripts of tools/ (e.g. the GPU validation run) name is in git.

A path ignored by ``.gitignore`` (``data/`` once hid ``tools/data/``) exists in the checkout
that wrote it but not in a fresh clone; ``git ls-files`` is what a clone gets.
"""
import glob
import os.path as osp
import re
import subprocess

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
#: A repository path: a top-level folder of the project, then a file with an extension.
PATH = re.compile(r'(?<![\w./<-])((?:tools|configs|docs|mmdaq|csrc|tests|requirements)/'
                  r'[A-Za-z0-9_./-]*[A-Za-z0-9_]\.(?:py|sh|md|png|json|cpp|cu|h|txt|log|csv))\b')
#: Files that name repository paths to a reader.
SOURCES = ('README.md', 'Makefile', 'configs/**/*.py', 'configs/**/*.md', 'docs/*.md',
           'tools/**/*.sh')


def tracked_files() -> set:
    try:
        out = subprocess.run(['git', 'ls-files'], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip('not a git checkout')
    return set(out.split())


def named_paths(text: str) -> set:
    return set(PATH.findall(text))


def test_named_paths_finds_paths_in_prose_and_commands():
    text = ('Run `python tools/data/generate_synthetic.py video`, see docs/speed.md and '
            '[a figure](docs/figures/a_b.png); not https://x.org/tools/x.py or <mmdaq>/configs.')
    assert named_paths(text) == {'tools/data/generate_synthetic.py', 'docs/speed.md',
                                 'docs/figures/a_b.png'}


def test_every_named_path_is_tracked():
    tracked = tracked_files()
    missing = {}
    for pattern in SOURCES:
        for source in glob.glob(osp.join(ROOT, pattern), recursive=True):
            with open(source) as f:
                for path in named_paths(f.read()):
                    if path not in tracked:
                        missing.setdefault(osp.relpath(source, ROOT), []).append(path)
    assert not missing, f'paths named but not in git (a fresh clone lacks them): {missing}'
