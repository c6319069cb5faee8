"""Pieces shared by the synthetic detection and video generators.

Only numpy, cv2 and json are used here, so the generators run (and are tested) without the
OpenMMLab stack.
"""
import json
import os
from typing import Any, Callable, Dict, Sequence, Tuple

import cv2
import numpy as np

MANIFEST_NAME = 'manifest.json'
BACKGROUND_KINDS = ('gradient', 'stripes', 'blobs')


def check_int(name: str, value: Any, minimum: int) -> int:
    """Return ``value`` if it is an int >= ``minimum``, else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f'{name} must be an int >= {minimum}, but got {value!r}')
    return int(value)


def check_size(name: str, value: Any, minimum: int) -> Tuple[int, int]:
    """Return ``value`` as ``(H, W)`` if both entries are ints >= ``minimum``."""
    if not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f'{name} must be a pair (H, W) of ints >= {minimum}, but got {value!r}')
    return check_int(f'{name}[0]', value[0], minimum), check_int(f'{name}[1]', value[1], minimum)


def check_image_ext(image_ext: str) -> str:
    """Return the image extension if cv2 writes it losslessly or as JPEG."""
    if image_ext not in ('.jpg', '.png'):
        raise ValueError(f"image_ext must be '.jpg' or '.png', but got {image_ext!r}")
    return image_ext


def check_split_args(num_train: Any, num_val: Any, seed: Any,
                     image_ext: Any) -> Tuple[int, int, int, str]:
    """The arguments every generator takes, checked: split sizes >= 1, seed >= 0, extension."""
    return (check_int('num_train', num_train, 1), check_int('num_val', num_val, 1),
            check_int('seed', seed, 0), check_image_ext(image_ext))


def generate_splits(out_dir: str, params: Dict[str, Any], splits: Dict[str, int],
                    split_complete: Callable[[str, int], bool],
                    write_split: Callable[[str, int], Any], overwrite: bool) -> bool:
    """Reuse the dataset in ``out_dir`` or (re)write it; whether it was written.

    It is reused if every split is complete (``split_complete(split, count)``) and the manifest
    matches ``params``; else every split is written (``write_split(split, count)``, into an
    existing ``out_dir``) and the manifest last, so an interrupted run never matches.
    """
    if not overwrite and all(split_complete(s, n) for s, n in splits.items()) \
            and manifest_matches(out_dir, params):
        return False
    os.makedirs(out_dir, exist_ok=True)
    remove_manifest(out_dir)
    for split, count in splits.items():
        write_split(split, count)
    write_manifest(out_dir, params)
    return True


def item_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random generator of one image or clip.

    Each item has its own stream, so an item's content depends only on ``(seed, split, index)``:
    changing ``num_train`` leaves the validation split unchanged.
    """
    split_code = {'train': 0, 'val': 1}[split]
    return np.random.default_rng([seed, split_code, index])


def manifest_matches(out_dir: str, params: Dict[str, Any]) -> bool:
    """Whether ``out_dir`` holds a finished dataset generated with exactly ``params``.

    The manifest is written last, so an interrupted generation never matches.
    """
    path = os.path.join(out_dir, MANIFEST_NAME)
    if not os.path.isfile(path):
        return False
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, json.JSONDecodeError):
        return False
    # A round trip through json turns tuples into lists: compare in the json form.
    return manifest == json.loads(json.dumps(params))


def write_manifest(out_dir: str, params: Dict[str, Any]) -> None:
    """Write the manifest atomically (write to a temporary file, then rename)."""
    path = os.path.join(out_dir, MANIFEST_NAME)
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(params, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def remove_manifest(out_dir: str) -> None:
    """Remove a stale manifest before files are (re)written."""
    path = os.path.join(out_dir, MANIFEST_NAME)
    if os.path.exists(path):
        os.remove(path)


def random_colour(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random BGR colour.

    Returns:
        ndarray[3], float32: Values in [0, 255].
    """
    return rng.uniform(0, 255, size=3).astype(np.float32)


def random_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A textured background: a linear gradient, sinusoidal stripes or smooth colour blobs.

    Args:
        rng (np.random.Generator): Source of randomness.
        height (int): H.
        width (int): W.

    Returns:
        ndarray[H, W, 3], float32: BGR values in [0, 255].
    """
    kind = BACKGROUND_KINDS[rng.integers(len(BACKGROUND_KINDS))]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    proj = xs * np.cos(angle) + ys * np.sin(angle)  # [H, W]
    if kind == 'gradient':
        t = (proj - proj.min()) / max(float(np.ptp(proj)), 1.0)
    elif kind == 'stripes':
        period = rng.uniform(4.0, 0.25 * min(height, width) + 4.0)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * proj / period + rng.uniform(0, 2 * np.pi))
    else:  # blobs: a coarse random grid upsampled smoothly
        grid = rng.uniform(0, 255, size=(rng.integers(3, 7), rng.integers(3, 7), 3))
        grid = grid.astype(np.float32)
        return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 255)
    c0, c1 = random_colour(rng), random_colour(rng)
    return c0 + t[..., None] * (c1 - c0)  # [H, W, 3]


def contrasting_colour(rng: np.random.Generator, background: np.ndarray, mask: np.ndarray,
                       min_distance: float = 60.0, tries: int = 20) -> np.ndarray:
    """A random colour that stands out against the background pixels under ``mask``.

    The colour whose 10th-percentile distance (L2 in BGR) to those pixels is largest among up to
    ``tries`` candidates is kept; sampling stops early once it exceeds ``min_distance``.

    Args:
        rng (np.random.Generator): Source of randomness.
        background (ndarray[H, W, 3], float32): BGR background.
        mask (ndarray[H, W], bool): Pixels the colour will cover.
        min_distance (float): Distance that is good enough. Defaults to 60.
        tries (int): Maximum number of candidates. Defaults to 20.

    Returns:
        ndarray[3], float32: BGR colour.
    """
    pixels = background[mask]  # [P, 3]
    if len(pixels) > 256:
        pixels = pixels[rng.choice(len(pixels), 256, replace=False)]
    best, best_distance = None, -1.0
    for _ in range(tries):
        colour = random_colour(rng)
        distance = float(np.percentile(np.linalg.norm(pixels - colour, axis=1), 10))
        if distance > best_distance:
            best, best_distance = colour, distance
        if best_distance >= min_distance:
            break
    return best


def add_noise(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    """Add Gaussian pixel noise and convert to uint8.

    Args:
        rng (np.random.Generator): Source of randomness.
        image (ndarray[..., 3], float32): Values in [0, 255].
        sigma (float): Noise standard deviation in grey levels.

    Returns:
        ndarray[..., 3], uint8.
    """
    noisy = image + rng.normal(0.0, sigma, size=image.shape).astype(np.float32)
    return np.rint(noisy.clip(0, 255)).astype(np.uint8)


def write_image(path: str, image: np.ndarray) -> None:
    """Write a BGR uint8 image, raising if cv2 fails (it only returns False)."""
    quality = [cv2.IMWRITE_JPEG_QUALITY, 95] if path.endswith('.jpg') else []
    if not cv2.imwrite(path, image, quality):
        raise OSError(f'cv2.imwrite could not write {path}')
