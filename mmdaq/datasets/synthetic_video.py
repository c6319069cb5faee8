"""A seeded synthetic action-recognition dataset: clips of one moving shape.

The class is the pair (shape, motion): a circle or a square that moves left-right, moves
up-down, or grows and shrinks in place, so neither the shape nor the motion alone decides the
label (6 classes, chance 1/6). Paths are triangle waves (back and forth at constant speed) with
random amplitude, phase and speed. Backgrounds are textured (gradient, stripes or blobs, at a
third of their contrast) and every frame gets fresh pixel noise.

Each frame also shows a fading trail of the shape's ``trail`` previous positions (like motion
blur), so the motion is visible in a single frame and a frame-level 2D model such as TSN can
learn it; ``trail=0`` removes the trail, leaving the motion only in the frame order.

Files follow mmaction2's ``RawframeDataset`` layout (``filename_tmpl='img_{:05}.jpg'``,
``start_index=1``)::

    out_dir/
        rawframes/train/clip_00000/img_00001.jpg ...
        rawframes/val/clip_00000/img_00001.jpg ...
        train_list.txt  # lines 'train/clip_00000 <total_frames> <label>'
        val_list.txt
        manifest.json   # generation parameters; written last

Use ``data_prefix=dict(img='<out_dir>/rawframes')`` and ``ann_file='<out_dir>/train_list.txt'``.
"""
import os
import shutil
from typing import Any, Dict, Tuple

import cv2
import numpy as np

from .synthetic_common import (add_noise, check_int, check_size, check_split_args,
                               contrasting_colour, generate_splits, item_rng, random_background,
                               write_image)

SHAPES = ('circle', 'square')
MOTIONS = ('horizontal', 'vertical', 'zoom')
VIDEO_CLASSES = tuple(f'{shape}_{motion}' for shape in SHAPES for motion in MOTIONS)
GENERATOR_VERSION = 4  # bump when the rendering changes, so old datasets are regenerated


def clip_label(shape: str, motion: str) -> int:
    """The class index of a (shape, motion) pair, an index into :data:`VIDEO_CLASSES`."""
    if shape not in SHAPES:
        raise ValueError(f'shape must be one of {SHAPES}, but got {shape!r}')
    if motion not in MOTIONS:
        raise ValueError(f'motion must be one of {MOTIONS}, but got {motion!r}')
    return SHAPES.index(shape) * len(MOTIONS) + MOTIONS.index(motion)


def _trajectory(rng: np.random.Generator, motion: str, num_frames: int, trail: int, height: int,
                width: int) -> Tuple[np.ndarray, np.ndarray]:
    """Centres and sizes at frames ``-trail .. num_frames - 1`` (the trail needs earlier ones).

    Returns:
        tuple: ``centres`` (ndarray[trail + T, 2], float64, ``(x, y)``) and ``sizes``
        (ndarray[trail + T], float64, diameter or side in pixels).
    """
    t = np.arange(-trail, num_frames, dtype=np.float64)
    short = min(height, width)
    cycles = rng.uniform(0.75, 1.25)  # periods per clip: the speed
    # A triangle wave in [-1, 1]: constant speed between the turns, so most frames show a trail.
    wave = 2 / np.pi * np.arcsin(np.sin(2 * np.pi * cycles * t / num_frames
                                        + rng.uniform(0, 2 * np.pi)))
    base = rng.uniform(0.35, 0.45) * short  # large: a 2D CNN from scratch sees it quickly
    sizes = np.full_like(t, base)
    if motion == 'zoom':
        sizes = base * (1.0 + 0.45 * wave)  # 0.55x to 1.45x
        margin = 0.5 * sizes.max() + 1
        centre = [rng.uniform(margin, width - margin), rng.uniform(margin, height - margin)]
        centres = np.tile(centre, (len(t), 1))
    else:
        axis = 0 if motion == 'horizontal' else 1  # 0: x, 1: y
        extent = (width, height)[axis]
        margin = 0.5 * base + 1
        amplitude = rng.uniform(0.7, 1.0) * (extent - 2 * margin) / 2  # at most: edge to edge
        middle = rng.uniform(margin + amplitude, extent - margin - amplitude)
        other = (height, width)[axis]
        centres = np.empty((len(t), 2))
        centres[:, axis] = middle + amplitude * wave
        centres[:, 1 - axis] = rng.uniform(margin, other - margin)
    return centres, sizes


def _draw(mask: np.ndarray, shape: str, centre: np.ndarray, size: float) -> None:
    """Fill a circle of diameter ``size`` or an axis-aligned square of side ``size`` into mask."""
    cx, cy = centre
    if shape == 'circle':
        cv2.circle(mask, (int(round(cx)), int(round(cy))), max(1, int(round(size / 2))), 1, -1)
    else:
        half = size / 2
        mask[max(0, int(round(cy - half))):int(round(cy + half)),
             max(0, int(round(cx - half))):int(round(cx + half))] = 1


def render_clip(rng: np.random.Generator, shape: str, motion: str, num_frames: int = 12,
                frame_size: Tuple[int, int] = (64, 64), trail: int = 3,
                noise_sigma: float = 6.0) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """Render one clip.

    Args:
        rng (np.random.Generator): Source of randomness; the clip depends only on its state.
        shape (str): One of :data:`SHAPES`.
        motion (str): One of :data:`MOTIONS`.
        num_frames (int): T. Defaults to 12.
        frame_size (tuple[int, int]): ``(H, W)``. Defaults to (64, 64).
        trail (int): Number of fading earlier positions drawn behind the shape. Defaults to 3.
        noise_sigma (float): Upper bound of the per-frame Gaussian noise sigma. Defaults to 6.

    Returns:
        tuple: ``frames`` (ndarray[T, H, W, 3], uint8, BGR) and a dict with the ground truth:
        ``centres`` (ndarray[T, 2], ``(x, y)`` in pixels), ``sizes`` (ndarray[T]) and
        ``colour`` (ndarray[3], float32, BGR before noise).
    """
    clip_label(shape, motion)  # validates both
    height, width = frame_size
    background = random_background(rng, height, width)  # [H, W, 3] float32
    mean = background.mean(axis=(0, 1))  # [3]
    background = mean + 0.35 * (background - mean)  # low contrast: the shape stays salient
    centres, sizes = _trajectory(rng, motion, num_frames, trail, height, width)
    probe = np.zeros((height, width), np.uint8)
    _draw(probe, shape, centres[trail], sizes[trail])
    colour = contrasting_colour(rng, background, probe.astype(bool), min_distance=100.0)
    sigma = rng.uniform(2.0, noise_sigma)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for i in range(num_frames):
        frame = background.copy()
        for lag in range(trail, -1, -1):  # oldest ghost first, the shape itself last
            mask = np.zeros((height, width), np.uint8)
            _draw(mask, shape, centres[trail + i - lag], sizes[trail + i - lag])
            alpha = 1.0 if lag == 0 else 0.8 * (trail + 1 - lag) / (trail + 1)
            region = mask.astype(bool)
            frame[region] = (1 - alpha) * frame[region] + alpha * colour
        frames[i] = add_noise(rng, frame, sigma)
    return frames, dict(centres=centres[trail:], sizes=sizes[trail:], colour=colour)


def _write_split(out_dir: str, split: str, num_clips: int, seed: int, image_ext: str,
                 render_kwargs: Dict[str, Any]) -> str:
    """Render one split's clips and write its annotation list; return the list's path."""
    split_dir = os.path.join(out_dir, 'rawframes', split)
    if os.path.isdir(split_dir):
        shutil.rmtree(split_dir)  # no stale clips from an earlier, larger dataset
    lines = []
    for index in range(num_clips):
        label = index % len(VIDEO_CLASSES)  # balanced classes
        shape, motion = SHAPES[label // len(MOTIONS)], MOTIONS[label % len(MOTIONS)]
        frames, _ = render_clip(item_rng(seed, split, index), shape, motion, **render_kwargs)
        clip_dir = f'{split}/clip_{index:05d}'
        os.makedirs(os.path.join(out_dir, 'rawframes', clip_dir))
        for t, frame in enumerate(frames):
            write_image(os.path.join(out_dir, 'rawframes', clip_dir, f'img_{t + 1:05d}{image_ext}'),
                        frame)
        lines.append(f'{clip_dir} {len(frames)} {label}\n')
    ann_file = os.path.join(out_dir, f'{split}_list.txt')
    with open(ann_file, 'w') as f:
        f.writelines(lines)
    return ann_file


def generate_video_dataset(out_dir: str, num_train: int = 1200, num_val: int = 120,
                           num_frames: int = 12, frame_size: Tuple[int, int] = (64, 64),
                           seed: int = 0, *, trail: int = 3, image_ext: str = '.jpg',
                           overwrite: bool = False) -> Dict[str, Any]:
    """Generate (or reuse) the synthetic moving-shapes clips as mmaction2 rawframes.

    Generation is deterministic: the same arguments give byte-identical files. If ``out_dir``
    already holds a finished dataset made with the same arguments (its ``manifest.json``
    matches), nothing is written. Labels cycle through the classes, so splits are balanced.

    Args:
        out_dir (str): Dataset root, e.g. ``'data/synthetic_clips'``.
        num_train (int): Number of training clips. Defaults to 1200.
        num_val (int): Number of validation clips. Defaults to 120.
        num_frames (int): Frames per clip (T). Defaults to 12.
        frame_size (tuple[int, int]): ``(H, W)`` of every frame. Defaults to (64, 64).
        seed (int): Seed of the numpy generators. Defaults to 0.
        trail (int): Fading earlier positions drawn in each frame (0: none). Defaults to 3.
        image_ext (str): ``'.jpg'`` or ``'.png'`` (lossless). Defaults to ``'.jpg'``.
        overwrite (bool): Regenerate even if the manifest matches. Defaults to False.

    Returns:
        dict: ``data_root``, ``classes``, ``filename_tmpl``, ``generated`` (False if the files
        were reused) and per split (``'train'``, ``'val'``) a dict with ``ann_file``,
        ``frame_root`` (the ``data_prefix`` of ``RawframeDataset``) and ``num_clips``.

    Examples:
        >>> import tempfile
        >>> info = generate_video_dataset(tempfile.mkdtemp(), num_train=6, num_val=6,
        ...                               num_frames=4, frame_size=(32, 32))
        >>> len(info['classes']), info['filename_tmpl']
        (6, 'img_{:05}.jpg')
    """
    num_train, num_val, seed, image_ext = check_split_args(num_train, num_val, seed, image_ext)
    num_frames = check_int('num_frames', num_frames, 1)
    frame_size = check_size('frame_size', frame_size, 16)
    trail = check_int('trail', trail, 0)
    params = dict(kind='video', version=GENERATOR_VERSION, num_train=num_train, num_val=num_val,
                  num_frames=num_frames, frame_size=list(frame_size), seed=seed, trail=trail,
                  image_ext=image_ext, classes=list(VIDEO_CLASSES))
    out_dir = os.path.abspath(out_dir)
    splits = dict(train=num_train, val=num_val)
    info = dict(data_root=out_dir, classes=VIDEO_CLASSES, filename_tmpl='img_{:05}' + image_ext)
    for split, num_clips in splits.items():
        info[split] = dict(ann_file=os.path.join(out_dir, f'{split}_list.txt'),
                           frame_root=os.path.join(out_dir, 'rawframes'), num_clips=num_clips)

    def split_complete(split: str, num_clips: int) -> bool:
        split_dir = os.path.join(out_dir, 'rawframes', split)
        return (os.path.isfile(info[split]['ann_file']) and os.path.isdir(split_dir)
                and len(os.listdir(split_dir)) == num_clips)

    def write_split(split: str, num_clips: int) -> None:
        _write_split(out_dir, split, num_clips, seed, image_ext, render_kwargs)

    render_kwargs = dict(num_frames=num_frames, frame_size=frame_size, trail=trail)
    generated = generate_splits(out_dir, params, splits, split_complete, write_split, overwrite)
    return dict(info, generated=generated)
