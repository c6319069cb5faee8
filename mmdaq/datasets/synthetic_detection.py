"""A seeded synthetic detection dataset of coloured shapes, written in COCO format.

Every image has a textured background (gradient, stripes or smooth blobs), one to
``max_objects`` shapes of random class, size, colour and placement, and Gaussian pixel noise.
Shapes may overlap (later shapes hide earlier ones).

Occlusion policy: the annotated box is the tight box around the *visible* pixels of a shape,
computed from a per-pixel instance map while painting. A placement is rejected (and resampled) if
it would leave any shape with less than ``min_visible`` of its own area visible, so every painted
shape is annotated and no annotation is mostly hidden. Outlined rectangles are see-through: their
hollow interior shows what lies behind. Shapes never cross the image border.

The files follow mmdet's stock ``CocoDataset`` layout::

    out_dir/
        train/000001.jpg ...
        val/000001.jpg ...
        annotations/instances_train.json
        annotations/instances_val.json
        manifest.json  # generation parameters; written last

COCO boxes are ``[x, y, w, h]`` in pixels covering columns ``x .. x + w - 1``; ``area`` is
``w * h`` (there are no segmentations, so the box area decides COCO's small/medium/large split).
"""
import json
import os
import shutil
from typing import Any, Dict, List, Tuple

import cv2
import numpy as np

from .synthetic_common import (add_noise, check_int, check_size, check_split_args,
                               contrasting_colour, generate_splits, item_rng, random_background,
                               write_image)

SHAPE_CLASSES = ('rectangle', 'outlined_rectangle', 'ellipse', 'triangle', 'cross')
SHAPE_PALETTE = [(220, 20, 60), (0, 130, 200), (60, 180, 75), (245, 130, 48), (145, 30, 180)]
GENERATOR_VERSION = 1  # bump when the rendering changes, so old datasets are regenerated


def _shape_mask(rng: np.random.Generator, shape: str, height: int, width: int,
                size: int) -> np.ndarray:
    """Draw one shape of about ``size`` pixels, wholly inside the image, as a mask.

    Args:
        rng (np.random.Generator): Source of randomness.
        shape (str): One of :data:`SHAPE_CLASSES`.
        height (int): H.
        width (int): W.
        size (int): Extent of the shape's longer side in pixels.

    Returns:
        ndarray[H, W], bool.
    """
    short_side = max(4, int(size * rng.uniform(0.6, 1.0)))
    w, h = (size, short_side) if rng.random() < 0.5 else (short_side, size)
    x0 = int(rng.integers(0, width - w + 1))
    y0 = int(rng.integers(0, height - h + 1))
    cx, cy = x0 + (w - 1) / 2, y0 + (h - 1) / 2
    mask = np.zeros((height, width), np.uint8)
    if shape == 'rectangle':
        mask[y0:y0 + h, x0:x0 + w] = 1
    elif shape == 'outlined_rectangle':
        t = max(2, int(round(min(w, h) * rng.uniform(0.1, 0.18))))  # border thickness
        mask[y0:y0 + h, x0:x0 + w] = 1
        mask[y0 + t:y0 + h - t, x0 + t:x0 + w - t] = 0
    elif shape == 'ellipse':
        cv2.ellipse(mask, (int(round(cx)), int(round(cy))), (w // 2, h // 2), 0, 0, 360, 1, -1)
    elif shape == 'triangle':
        radius = min(w, h) / 2
        angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2, 4]) * np.pi / 3
        points = np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], axis=1)
        cv2.fillPoly(mask, [np.rint(points).astype(np.int32)], 1)
    elif shape == 'cross':  # a plus sign tilted by up to 25 degrees
        arm = rng.uniform(0.25, 0.4) / 2
        unit = np.array([(-arm, -.5), (arm, -.5), (arm, -arm), (.5, -arm), (.5, arm), (arm, arm),
                         (arm, .5), (-arm, .5), (-arm, arm), (-.5, arm), (-.5, -arm),
                         (-arm, -arm)])  # [12, 2]
        theta = np.deg2rad(rng.uniform(-25, 25))
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        side = min(w, h) / np.sqrt(1 + abs(np.sin(2 * theta)))  # keeps the tilted cross inside
        points = (unit * side) @ rot.T + (cx, cy)
        cv2.fillPoly(mask, [np.rint(points).astype(np.int32)], 1)
    else:
        raise ValueError(f'shape must be one of {SHAPE_CLASSES}, but got {shape!r}')
    return mask.astype(bool)


def _visible_enough(instances: np.ndarray, areas: List[int], new_mask: np.ndarray,
                    min_visible: float) -> bool:
    """Whether painting ``new_mask`` on top keeps every earlier shape ``min_visible`` visible."""
    hidden_ids, hidden_counts = np.unique(instances[new_mask], return_counts=True)
    for instance_id, count in zip(hidden_ids, hidden_counts):
        if instance_id == 0:  # background
            continue
        visible = np.count_nonzero(instances == instance_id) - count
        if visible < min_visible * areas[instance_id - 1]:
            return False
    return True


def render_detection_image(rng: np.random.Generator, image_size: Tuple[int, int] = (128, 128),
                           max_objects: int = 4, scale_range: Tuple[float, float] = (0.2, 0.55),
                           min_visible: float = 0.5,
                           noise_sigma: float = 6.0) -> Tuple[np.ndarray, np.ndarray, List[dict]]:
    """Render one image with its instance map and annotations.

    Args:
        rng (np.random.Generator): Source of randomness; the result depends only on its state.
        image_size (tuple[int, int]): ``(H, W)``. Defaults to (128, 128).
        max_objects (int): At most this many shapes (at least one). Defaults to 4.
        scale_range (tuple[float, float]): Range of a shape's longer side as a fraction of
            ``min(H, W)``. Defaults to (0.2, 0.55).
        min_visible (float): Smallest visible fraction of a shape's own area. Defaults to 0.5.
        noise_sigma (float): Upper bound of the Gaussian pixel noise sigma. Defaults to 6.

    Returns:
        tuple: ``image`` (ndarray[H, W, 3], uint8, BGR), ``instances`` (ndarray[H, W], int32;
        0 for background, ``k + 1`` for the k-th annotation) and ``annotations``: a list of dicts
        with ``label`` (int index into :data:`SHAPE_CLASSES`), ``bbox`` (``[x, y, w, h]`` of the
        visible pixels) and ``colour`` (BGR floats before noise).
    """
    height, width = image_size
    image = random_background(rng, height, width)  # [H, W, 3] float32
    instances = np.zeros((height, width), np.int32)
    areas, labels, colours = [], [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        label = int(rng.integers(len(SHAPE_CLASSES)))
        for _attempt in range(10):
            size = int(rng.uniform(*scale_range) * min(height, width))
            mask = _shape_mask(rng, SHAPE_CLASSES[label], height, width, max(size, 6))
            if _visible_enough(instances, areas, mask, min_visible):
                break
        else:
            continue  # no placement keeps the others visible: drop this shape
        colour = contrasting_colour(rng, image, mask)
        image[mask] = colour
        instances[mask] = len(areas) + 1
        areas.append(int(mask.sum()))
        labels.append(label)
        colours.append(colour)
    image = add_noise(rng, image, rng.uniform(0, noise_sigma))
    annotations = []
    for k, (label, colour) in enumerate(zip(labels, colours)):
        ys, xs = np.nonzero(instances == k + 1)
        x0, y0 = int(xs.min()), int(ys.min())
        bbox = [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]
        annotations.append(dict(label=label, bbox=bbox, colour=colour.tolist()))
    return image, instances, annotations


def _coco_categories() -> List[dict]:
    """COCO categories with ids 1..K in :data:`SHAPE_CLASSES` order."""
    return [dict(id=k + 1, name=name, supercategory='shape')
            for k, name in enumerate(SHAPE_CLASSES)]


def _write_split(out_dir: str, split: str, num_images: int, seed: int, image_ext: str,
                 render_kwargs: Dict[str, Any]) -> str:
    """Render one split into ``out_dir/<split>/`` and write its COCO json; return the json path."""
    image_dir = os.path.join(out_dir, split)
    if os.path.isdir(image_dir):
        shutil.rmtree(image_dir)  # no stale images from an earlier, larger dataset
    os.makedirs(image_dir)
    images, annotations = [], []
    for index in range(num_images):
        image, _, objects = render_detection_image(item_rng(seed, split, index), **render_kwargs)
        image_id = index + 1
        file_name = f'{image_id:06d}{image_ext}'
        write_image(os.path.join(image_dir, file_name), image)
        images.append(dict(id=image_id, file_name=file_name, height=image.shape[0],
                           width=image.shape[1]))
        for obj in objects:
            w, h = obj['bbox'][2:]
            annotations.append(dict(id=len(annotations) + 1, image_id=image_id,
                                    category_id=obj['label'] + 1, bbox=obj['bbox'], area=w * h,
                                    iscrowd=0))
    coco = dict(info=dict(description=f'mmdaq synthetic shapes ({split})',
                          version=str(GENERATOR_VERSION)),
                licenses=[], images=images, annotations=annotations, categories=_coco_categories())
    ann_file = os.path.join(out_dir, 'annotations', f'instances_{split}.json')
    with open(ann_file, 'w') as f:
        json.dump(coco, f)
    return ann_file


def generate_detection_dataset(out_dir: str, num_train: int = 1000, num_val: int = 200,
                               image_size: Tuple[int, int] = (128, 128), seed: int = 0, *,
                               max_objects: int = 4, min_visible: float = 0.5,
                               image_ext: str = '.jpg', overwrite: bool = False) -> Dict[str, Any]:
    """Generate (or reuse) the synthetic shapes detection dataset in COCO format.

    Generation is deterministic: the same arguments give byte-identical files. If ``out_dir``
    already holds a finished dataset made with the same arguments (its ``manifest.json``
    matches), nothing is written.

    Args:
        out_dir (str): Dataset root, e.g. ``'data/synthetic_shapes'``.
        num_train (int): Number of training images. Defaults to 1000.
        num_val (int): Number of validation images. Defaults to 200.
        image_size (tuple[int, int]): ``(H, W)`` of every image. Defaults to (128, 128).
        seed (int): Seed of the numpy generators. Defaults to 0.
        max_objects (int): Maximum number of shapes per image. Defaults to 4.
        min_visible (float): Smallest visible fraction of an annotated shape. Defaults to 0.5.
        image_ext (str): ``'.jpg'`` or ``'.png'`` (lossless). Defaults to ``'.jpg'``.
        overwrite (bool): Regenerate even if the manifest matches. Defaults to False.

    Returns:
        dict: ``data_root``, ``classes``, ``metainfo`` (for ``CocoDataset(metainfo=...)``),
        ``generated`` (False if the files were reused) and per split (``'train'``, ``'val'``) a
        dict with ``ann_file``, ``img_dir`` and ``num_images``.

    Examples:
        >>> import tempfile
        >>> info = generate_detection_dataset(tempfile.mkdtemp(), num_train=2, num_val=1,
        ...                                   image_size=(64, 64))
        >>> info['classes'][:2], info['val']['num_images']
        (('rectangle', 'outlined_rectangle'), 1)
    """
    num_train, num_val, seed, image_ext = check_split_args(num_train, num_val, seed, image_ext)
    image_size = check_size('image_size', image_size, 32)
    max_objects = check_int('max_objects', max_objects, 1)
    if not 0.0 < min_visible <= 1.0:
        raise ValueError(f'min_visible must be in (0, 1], but got {min_visible!r}')
    params = dict(kind='detection', version=GENERATOR_VERSION, num_train=num_train,
                  num_val=num_val, image_size=list(image_size), seed=seed,
                  max_objects=max_objects, min_visible=min_visible, image_ext=image_ext,
                  classes=list(SHAPE_CLASSES))
    out_dir = os.path.abspath(out_dir)
    splits = dict(train=num_train, val=num_val)
    info = dict(data_root=out_dir, classes=SHAPE_CLASSES,
                metainfo=dict(classes=SHAPE_CLASSES, palette=SHAPE_PALETTE))
    for split, num_images in splits.items():
        info[split] = dict(ann_file=os.path.join(out_dir, 'annotations', f'instances_{split}.json'),
                           img_dir=os.path.join(out_dir, split), num_images=num_images)

    def split_complete(split: str, num_images: int) -> bool:
        img_dir = info[split]['img_dir']
        return (os.path.isfile(info[split]['ann_file']) and os.path.isdir(img_dir)
                and len(os.listdir(img_dir)) == num_images)

    def write_split(split: str, num_images: int) -> None:
        os.makedirs(os.path.join(out_dir, 'annotations'), exist_ok=True)
        _write_split(out_dir, split, num_images, seed, image_ext, render_kwargs)

    render_kwargs = dict(image_size=image_size, max_objects=max_objects, min_visible=min_visible)
    generated = generate_splits(out_dir, params, splits, split_complete, write_split, overwrite)
    return dict(info, generated=generated)
