"""Training curves of several mmengine runs: read ``scalars.json``, group seeds, draw bands.

mmengine's ``LocalVisBackend`` writes one JSON object per line to
``<work_dir>/<timestamp>/vis_data/scalars.json`` (a resumed run adds a second timestamp
folder). Training lines carry ``iter`` (and ``epoch`` in epoch-based runs) besides ``step``;
validation lines carry only ``step``, which is the epoch in epoch-based runs and the iteration
otherwise. So a training key (``loss``) is drawn against the iteration and a validation key
(``coco/bbox_mAP``, ``acc/top1``) against its ``step``.

Runs whose labels are equal (by default the work_dir name without a trailing ``seed<k>``) are
one group: drawn as the mean with a band (std or min-max) over the runs, on the steps all of
them logged (or interpolated on their common range).
"""
import glob
import json
import os.path as osp
import re
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

#: A trailing seed marker removed from work_dir names to form labels: ``daq_seed1`` -> ``daq``.
SEED_SUFFIX = re.compile(r'[_\-.]?seed[_\-]?\d+$')
_TIMESTAMP = re.compile(r'^\d{8}_\d{6}$')
SPREADS = ('std', 'minmax')


class Series(NamedTuple):
    """One scalar of one run.

    Attributes:
        x (np.ndarray[T]): Iterations or epochs, ascending.
        y (np.ndarray[T]): Values.
        x_label (str): ``'iteration'`` or ``'epoch'``.
    """
    x: np.ndarray
    y: np.ndarray
    x_label: str


class Band(NamedTuple):
    """Mean and spread of a group of runs on common x values (arrays of shape [T])."""
    x: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    runs: int


def scalar_files(path: str) -> List[str]:
    """The ``scalars.json`` files of a run, oldest first.

    Args:
        path (str): A work_dir (holding ``<timestamp>/vis_data/scalars.json``), one timestamp
            folder of it, or a ``scalars.json`` file.

    Returns:
        list[str]: At least one file.
    """
    if osp.isfile(path):
        return [path]
    own = osp.join(path, 'vis_data', 'scalars.json')
    if osp.isfile(own):
        return [own]
    found = sorted(glob.glob(osp.join(path, '*', 'vis_data', 'scalars.json')))
    if not found:
        raise FileNotFoundError(f'work_dir must hold <timestamp>/vis_data/scalars.json (as '
                                f'mmengine writes it), but {path!r} has none')
    return found


def load_scalars(path: str) -> Dict[str, Series]:
    """Every numeric scalar of a run (see :func:`scalar_files`), by key.

    A step logged twice (a resumed run repeating an iteration) keeps its last value. A
    validation key that training also logs (``time``, ``data_time``) becomes ``val/<key>``.

    Returns:
        dict[str, Series]: By key, e.g. ``'loss'``, ``'lr'``, ``'coco/bbox_mAP'``.
    """
    points: Dict[str, Dict[float, float]] = {}
    labels: Dict[str, str] = {}
    for file in scalar_files(path):
        with open(file) as f:
            lines = [json.loads(line) for line in f if line.strip()]
        by_epoch = any('iter' in d and 'epoch' in d for d in lines)
        train_keys = {k for d in lines if 'iter' in d for k in d}
        for d in lines:
            train = 'iter' in d
            x = d['iter'] if train else d.get('step')
            if x is None:
                continue
            x_label = 'epoch' if by_epoch and not train else 'iteration'
            for key, value in d.items():
                if key in ('step', 'iter', 'epoch') or isinstance(value, bool) \
                        or not isinstance(value, (int, float)):
                    continue
                if not train and key in train_keys:  # 'time', 'data_time' of validation
                    key = f'val/{key}'
                points.setdefault(key, {})[float(x)] = float(value)
                labels[key] = x_label
    out = {}
    for key, values in points.items():
        xs = np.array(sorted(values))
        out[key] = Series(xs, np.array([values[x] for x in xs]), labels[key])
    return out


def match_key(key: str, available: Sequence[str]) -> Optional[str]:
    """``key`` itself if logged, else the one logged key ending in ``'/' + key``; else None.

    Examples:
        >>> match_key('bbox_mAP', ['loss', 'coco/bbox_mAP', 'coco/bbox_mAP_50'])
        'coco/bbox_mAP'
    """
    if key in available:
        return key
    hits = [k for k in available if k.endswith('/' + key)]
    if len(hits) > 1:
        raise ValueError(f'key must name one logged scalar, but {key!r} matches {sorted(hits)}; '
                         f'give the full name')
    return hits[0] if hits else None


def run_label(path: str) -> str:
    """Label of a run: its work_dir name without a trailing seed marker.

    A timestamp folder or a ``scalars.json`` path is labelled by the work_dir above it.

    Examples:
        >>> run_label('work_dirs/faster_rcnn_daq_seed2'), run_label('runs/fp32/20261125_143212')
        ('faster_rcnn_daq', 'fp32')
    """
    path = osp.normpath(path)
    if osp.basename(path) == 'scalars.json':
        path = osp.dirname(osp.dirname(path))  # .../<timestamp>/vis_data/scalars.json
    if _TIMESTAMP.match(osp.basename(path)):
        path = osp.dirname(path)
    return SEED_SUFFIX.sub('', osp.basename(path)) or osp.basename(path)


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over ``window`` points (the first points average fewer)."""
    if window <= 1 or len(y) == 0:
        return y
    sums = np.cumsum(np.insert(y, 0, 0.0))
    idx = np.arange(1, len(y) + 1)
    start = np.maximum(idx - window, 0)
    return (sums[idx] - sums[start]) / (idx - start)


def band(series: Sequence[Series], spread: str = 'std') -> Band:
    """Mean and spread of several runs of one scalar.

    Runs are compared on the union of their x values inside the range they all cover; a
    run without a point there is linearly interpolated (runs with one schedule log the same
    steps, so nothing is interpolated then).

    Args:
        series (Sequence[Series]): One per run, at least one.
        spread (str): ``'std'`` (mean +- population std) or ``'minmax'``. Defaults to 'std'.

    Returns:
        Band: On the common x values.
    """
    if spread not in SPREADS:
        raise ValueError(f'spread must be one of {SPREADS}, but got {spread!r}')
    series = [s for s in series if len(s.x)]
    if not series:
        raise ValueError('series must hold at least one run with points, but got none')
    lo_x = max(s.x[0] for s in series)
    hi_x = min(s.x[-1] for s in series)
    xs = np.unique(np.concatenate([s.x for s in series]))
    xs = xs[(xs >= lo_x) & (xs <= hi_x)]
    ys = np.stack([np.interp(xs, s.x, s.y) for s in series])  # [R, T]
    mean = ys.mean(axis=0)
    if spread == 'std':
        std = ys.std(axis=0)
        low, high = mean - std, mean + std
    else:
        low, high = ys.min(axis=0), ys.max(axis=0)
    return Band(xs, mean, low, high, len(series))


def group_runs(paths: Sequence[str], labels: Optional[Sequence[str]] = None
               ) -> Dict[str, List[Tuple[str, Dict[str, Series]]]]:
    """Load runs and group them by label (given, or :func:`run_label`), in first-seen order.

    Returns:
        dict: label -> list of (path, scalars).
    """
    if labels is not None and len(labels) != len(paths):
        raise ValueError(f'labels must give one label per work_dir ({len(paths)}), but got '
                         f'{len(labels)}')
    groups: Dict[str, List[Tuple[str, Dict[str, Series]]]] = {}
    for i, path in enumerate(paths):
        label = labels[i] if labels is not None else run_label(path)
        groups.setdefault(label, []).append((path, load_scalars(path)))
    return groups


def curve_bands(groups: Dict[str, List[Tuple[str, Dict[str, Series]]]], keys: Sequence[str],
                spread: str = 'std', window: int = 1, strict: bool = True
                ) -> Dict[str, Dict[str, Tuple[Band, str, str]]]:
    """Band of every (key, label) pair.

    Args:
        groups (dict): :func:`group_runs` output.
        keys (Sequence[str]): Scalars, full names or the part after the last ``'/'``.
        spread (str): ``'std'`` or ``'minmax'``. Defaults to 'std'.
        window (int): Moving-average window applied to each run first. Defaults to 1.
        strict (bool): Raise for a key that no run logged (else skip it). Defaults to True.

    Returns:
        dict: key -> label -> (band, full key name, x label). Labels whose runs lack the
        key are left out.
    """
    out: Dict[str, Dict[str, Tuple[Band, str, str]]] = {}
    for key in keys:
        per_label = {}
        for label, runs in groups.items():
            found = [(match_key(key, list(scalars)), scalars) for _, scalars in runs]
            found = [(name, scalars[name]) for name, scalars in found if name is not None]
            if not found:
                continue
            series = [Series(s.x, smooth(s.y, window), s.x_label) for _, s in found]
            per_label[label] = (band(series, spread), found[0][0], found[0][1].x_label)
        if per_label:
            out[key] = per_label
        elif strict:
            logged = sorted({k for runs in groups.values() for _, sc in runs for k in sc})
            raise ValueError(f'keys must be logged by at least one run, but {key!r} is not; '
                             f'logged: {logged}')
    return out


def plot_bands(bands: Dict[str, Dict[str, Tuple[Band, str, str]]], path: str,
               title: Optional[str] = None) -> str:
    """One panel per key, one line per label; a band (or error bars) where it has several runs.

    Args:
        bands (dict): :func:`curve_bands` output.
        path (str): Image file to write (the extension picks the format).
        title (str, optional): Figure title. Defaults to None.

    Returns:
        str: ``path``.
    """
    from matplotlib.figure import Figure
    if not bands:
        raise ValueError('bands must hold at least one key to draw, but got none')
    fig = Figure(figsize=(5.2 * len(bands), 4), dpi=100, layout='constrained')
    axes = fig.subplots(1, len(bands), squeeze=False)[0]
    labels = list(dict.fromkeys(label for per_label in bands.values() for label in per_label))
    colors = {label: f'C{i % 10}' for i, label in enumerate(labels)}
    for ax, (key, per_label) in zip(axes, bands.items()):
        names = set()
        for label, (b, name, x_label) in per_label.items():
            names.add(name)
            text = f'{label} (n={b.runs})' if b.runs > 1 else label
            sparse = len(b.x) <= 20  # e.g. one validation per epoch: markers, error bars
            ax.plot(b.x, b.mean, color=colors[label], label=text, marker='o' if sparse else None,
                    ms=3)
            if b.runs > 1 and sparse:
                ax.errorbar(b.x, b.mean, yerr=[b.mean - b.low, b.high - b.mean], fmt='none',
                            ecolor=colors[label], capsize=3)
            elif b.runs > 1:
                ax.fill_between(b.x, b.low, b.high, color=colors[label], alpha=0.25, lw=0)
            ax.set_xlabel(x_label)
        ax.set_title(' / '.join(sorted(names)))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.savefig(path)
    return path
