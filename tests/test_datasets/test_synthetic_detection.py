import json
import os

import numpy as np
import pytest

from mmdaq.datasets import SHAPE_CLASSES, generate_detection_dataset, render_detection_image

SMALL = dict(num_train=4, num_val=3, image_size=(64, 80))


def _read_tree(root):
    """{relative path: bytes} of every file under root."""
    files = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, 'rb') as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


def test_same_seed_gives_identical_files(tmp_path):
    generate_detection_dataset(tmp_path / 'a', seed=3, image_ext='.png', **SMALL)
    generate_detection_dataset(tmp_path / 'b', seed=3, image_ext='.png', **SMALL)
    files_a, files_b = _read_tree(tmp_path / 'a'), _read_tree(tmp_path / 'b')
    assert len(files_a) == 4 + 3 + 2 + 1  # images, two json files, manifest
    assert files_a == files_b


def test_different_seed_gives_different_data(tmp_path):
    info_a = generate_detection_dataset(tmp_path / 'a', seed=0, **SMALL)
    info_b = generate_detection_dataset(tmp_path / 'b', seed=1, **SMALL)
    with open(info_a['train']['ann_file']) as f_a, open(info_b['train']['ann_file']) as f_b:
        boxes_a = [a['bbox'] for a in json.load(f_a)['annotations']]
        boxes_b = [a['bbox'] for a in json.load(f_b)['annotations']]
    assert boxes_a != boxes_b
    image_a = _read_tree(info_a['train']['img_dir'])['000001.jpg']
    assert image_a != _read_tree(info_b['train']['img_dir'])['000001.jpg']


def test_val_split_does_not_depend_on_num_train(tmp_path):
    info_a = generate_detection_dataset(tmp_path / 'a', num_train=1, num_val=2)
    info_b = generate_detection_dataset(tmp_path / 'b', num_train=5, num_val=2)
    assert _read_tree(info_a['val']['img_dir']) == _read_tree(info_b['val']['img_dir'])


@pytest.mark.parametrize('seed', range(20))
def test_boxes_are_tight_around_visible_painted_pixels(seed):
    height, width = 96, 112
    image, instances, annotations = render_detection_image(
        np.random.default_rng(seed), image_size=(height, width), max_objects=6)
    assert image.shape == (height, width, 3) and image.dtype == np.uint8
    assert 1 <= len(annotations) <= 6
    # Every painted shape is annotated: instance ids are exactly 0 (background) .. len(anns).
    assert set(np.unique(instances)) <= set(range(len(annotations) + 1))
    for k, ann in enumerate(annotations):
        x, y, w, h = ann['bbox']
        assert 0 <= x and 0 <= y and x + w <= width and y + h <= height and w >= 2 and h >= 2
        ys, xs = np.nonzero(instances == k + 1)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)
        # The pixels carry the shape's colour (up to the noise, sigma <= 6).
        mean = image[instances == k + 1].astype(np.float64).mean(axis=0)
        np.testing.assert_allclose(mean, ann['colour'], atol=3.0)
        assert 0 <= ann['label'] < len(SHAPE_CLASSES)


def test_all_classes_and_overlaps_occur():
    labels, overlapping = set(), 0
    for seed in range(40):
        _, instances, annotations = render_detection_image(np.random.default_rng(seed))
        labels.update(a['label'] for a in annotations)
        boxes = np.array([a['bbox'] for a in annotations])  # [N, 4] x, y, w, h
        for i in range(len(boxes)):
            for j in range(i):
                ix = min(boxes[i, 0] + boxes[i, 2], boxes[j, 0] + boxes[j, 2]) - max(boxes[i, 0],
                                                                                     boxes[j, 0])
                iy = min(boxes[i, 1] + boxes[i, 3], boxes[j, 1] + boxes[j, 3]) - max(boxes[i, 1],
                                                                                     boxes[j, 1])
                overlapping += ix > 0 and iy > 0
    assert labels == set(range(len(SHAPE_CLASSES)))
    assert overlapping > 0


def test_coco_json_is_valid(tmp_path):
    info = generate_detection_dataset(tmp_path, **SMALL)
    assert info['generated'] and info['classes'] == SHAPE_CLASSES
    for split, num_images in (('train', 4), ('val', 3)):
        with open(info[split]['ann_file']) as f:
            coco = json.load(f)
        assert [c['name'] for c in coco['categories']] == list(SHAPE_CLASSES)
        category_ids = {c['id'] for c in coco['categories']}
        assert len(coco['images']) == num_images == info[split]['num_images']
        images = {image['id']: image for image in coco['images']}
        assert len(images) == num_images
        for image in coco['images']:
            assert (image['height'], image['width']) == (64, 80)
            assert os.path.isfile(os.path.join(info[split]['img_dir'], image['file_name']))
        assert len({a['id'] for a in coco['annotations']}) == len(coco['annotations'])
        assert {a['image_id'] for a in coco['annotations']} == set(images)  # none is empty
        for ann in coco['annotations']:
            x, y, w, h = ann['bbox']
            image = images[ann['image_id']]
            assert 0 <= x and x + w <= image['width'] and 0 <= y and y + h <= image['height']
            assert ann['area'] == w * h and ann['iscrowd'] == 0
            assert ann['category_id'] in category_ids


def test_second_call_does_not_rewrite(tmp_path):
    generate_detection_dataset(tmp_path, **SMALL)
    stamps = {p: os.stat(tmp_path / p).st_mtime_ns for p in _read_tree(tmp_path)}
    info = generate_detection_dataset(tmp_path, **SMALL)
    assert not info['generated']
    assert {p: os.stat(tmp_path / p).st_mtime_ns for p in _read_tree(tmp_path)} == stamps


def test_changed_parameters_or_missing_files_regenerate(tmp_path):
    generate_detection_dataset(tmp_path, **SMALL)
    assert generate_detection_dataset(tmp_path, **dict(SMALL, num_train=2))['generated']
    assert len(os.listdir(tmp_path / 'train')) == 2  # stale images are removed
    os.remove(tmp_path / 'val' / '000001.jpg')
    assert generate_detection_dataset(tmp_path, **dict(SMALL, num_train=2))['generated']
    os.remove(tmp_path / 'manifest.json')  # as if interrupted before the end
    assert generate_detection_dataset(tmp_path, **dict(SMALL, num_train=2))['generated']
    info = generate_detection_dataset(tmp_path, overwrite=True, **dict(SMALL, num_train=2))
    assert info['generated']


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_train=0), 'num_train must be an int >= 1, but got 0'),
    (dict(num_val=1.5), 'num_val must be an int >= 1, but got 1.5'),
    (dict(image_size=(64, )), r'image_size must be a pair \(H, W\)'),
    (dict(image_size=(16, 64)), r'image_size\[0\] must be an int >= 32, but got 16'),
    (dict(min_visible=0.0), r'min_visible must be in \(0, 1\], but got 0.0'),
    (dict(image_ext='.bmp'), "image_ext must be '.jpg' or '.png', but got '.bmp'"),
])
def test_invalid_arguments_raise(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_detection_dataset(tmp_path, **dict(SMALL, **kwargs))


def test_mmdet_coco_dataset_and_metric_read_it(tmp_path):
    pytest.importorskip('mmdet')
    torch = pytest.importorskip('torch')
    from mmdet.datasets import CocoDataset
    from mmdet.evaluation import CocoMetric

    info = generate_detection_dataset(tmp_path, num_train=2, num_val=8, image_size=(64, 64))
    dataset = CocoDataset(data_root=info['data_root'], ann_file='annotations/instances_val.json',
                          data_prefix=dict(img='val/'), metainfo=info['metainfo'], pipeline=[],
                          test_mode=True)
    assert len(dataset) == 8 and dataset.metainfo['classes'] == SHAPE_CLASSES
    with open(info['val']['ann_file']) as f:
        coco = json.load(f)
    metric = CocoMetric(ann_file=info['val']['ann_file'], metric='bbox')
    metric.dataset_meta = dataset.metainfo
    for index in range(len(dataset)):
        data_info = dataset.get_data_info(index)
        assert os.path.isfile(data_info['img_path'])
        expected = [a for a in coco['annotations'] if a['image_id'] == data_info['img_id']]
        instances = data_info['instances']
        assert [i['bbox_label'] + 1 for i in instances] == [a['category_id'] for a in expected]
        boxes = torch.tensor([i['bbox'] for i in instances], dtype=torch.float32)  # [N, 4] xyxy
        metric.process({}, [dict(img_id=data_info['img_id'], ori_shape=(64, 64),
                                 pred_instances=dict(bboxes=boxes, scores=torch.ones(len(boxes)),
                                                     labels=torch.tensor([i['bbox_label']
                                                                          for i in instances])))])
    results = metric.evaluate(len(dataset))
    assert results['coco/bbox_mAP'] == pytest.approx(1.0)
