import os

import numpy as np
import pytest

from mmdaq.datasets import VIDEO_CLASSES, clip_label, generate_video_dataset, render_clip
from mmdaq.datasets.synthetic_video import MOTIONS, SHAPES

SMALL = dict(num_train=6, num_val=6, num_frames=4, frame_size=(32, 40))


def _read_tree(root):
    """{relative path: bytes} of every file under root."""
    files = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, 'rb') as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


def _read_list(path):
    with open(path) as f:
        return [line.split() for line in f]


def test_same_seed_gives_identical_files(tmp_path):
    generate_video_dataset(tmp_path / 'a', seed=5, image_ext='.png', **SMALL)
    generate_video_dataset(tmp_path / 'b', seed=5, image_ext='.png', **SMALL)
    files_a = _read_tree(tmp_path / 'a')
    assert len(files_a) == (6 + 6) * 4 + 2 + 1  # frames, two lists, manifest
    assert files_a == _read_tree(tmp_path / 'b')


def test_different_seed_gives_different_frames(tmp_path):
    generate_video_dataset(tmp_path / 'a', seed=0, **SMALL)
    generate_video_dataset(tmp_path / 'b', seed=1, **SMALL)
    frame = os.path.join('rawframes', 'train', 'clip_00000', 'img_00001.jpg')
    assert _read_tree(tmp_path / 'a')[frame] != _read_tree(tmp_path / 'b')[frame]


def test_label_depends_on_shape_and_motion():
    labels = {(s, m): clip_label(s, m) for s in SHAPES for m in MOTIONS}
    assert sorted(labels.values()) == list(range(len(VIDEO_CLASSES)))
    assert clip_label('circle', 'horizontal') != clip_label('circle', 'vertical')
    assert clip_label('circle', 'zoom') != clip_label('square', 'zoom')
    for (shape, motion), label in labels.items():
        assert VIDEO_CLASSES[label] == f'{shape}_{motion}'
    with pytest.raises(ValueError, match="motion must be one of .*, but got 'spin'"):
        clip_label('circle', 'spin')


@pytest.mark.parametrize('seed', range(4))
@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('motion', MOTIONS)
def test_clip_follows_its_motion(shape, motion, seed):
    height, width = 48, 64
    frames, truth = render_clip(np.random.default_rng(seed), shape, motion, num_frames=8,
                                frame_size=(height, width), trail=0)
    assert frames.shape == (8, height, width, 3) and frames.dtype == np.uint8
    centres, sizes = truth['centres'], truth['sizes']  # [T, 2] (x, y), [T]
    moving = {'horizontal': (True, False, False), 'vertical': (False, True, False),
              'zoom': (False, False, True)}[motion]
    assert tuple(np.ptp(v) > 1.0 for v in (centres[:, 0], centres[:, 1], sizes)) == moving
    # Shapes stay in the frame, and the painted shape sits where the ground truth says.
    assert np.all(centres - sizes[:, None] / 2 >= -1)
    assert np.all(centres + sizes[:, None] / 2 <= (width + 1, height + 1))
    for frame, (x, y) in zip(frames, np.rint(centres).astype(int)):
        patch = frame[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3).astype(np.float64)  # [9, 3]
        np.testing.assert_allclose(patch.mean(axis=0), truth['colour'], atol=12.0)


def test_trail_shows_earlier_positions():
    rng_args = dict(shape='square', motion='horizontal', num_frames=6, frame_size=(48, 64))
    plain, _ = render_clip(np.random.default_rng(0), trail=0, **rng_args)
    trailed, _ = render_clip(np.random.default_rng(0), trail=2, **rng_args)
    # Same path and background, but the trailed frames carry extra (ghost) pixels.
    assert np.abs(plain.astype(int) - trailed.astype(int)).max() > 30


def test_annotation_lists_match_the_frames(tmp_path):
    info = generate_video_dataset(tmp_path, **SMALL)
    assert info['generated'] and info['classes'] == VIDEO_CLASSES
    for split in ('train', 'val'):
        lines = _read_list(info[split]['ann_file'])
        assert len(lines) == 6 == info[split]['num_clips']
        assert sorted(int(label) for _, _, label in lines) == list(range(6))  # balanced
        for frame_dir, total_frames, _ in lines:
            names = sorted(os.listdir(os.path.join(info[split]['frame_root'], frame_dir)))
            assert names == [info['filename_tmpl'].format(t) for t in range(1, 5)]
            assert int(total_frames) == 4


def test_second_call_does_not_rewrite(tmp_path):
    generate_video_dataset(tmp_path, **SMALL)
    stamps = {p: os.stat(tmp_path / p).st_mtime_ns for p in _read_tree(tmp_path)}
    assert not generate_video_dataset(tmp_path, **SMALL)['generated']
    assert {p: os.stat(tmp_path / p).st_mtime_ns for p in _read_tree(tmp_path)} == stamps
    assert generate_video_dataset(tmp_path, **dict(SMALL, trail=0))['generated']


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_frames=0), 'num_frames must be an int >= 1, but got 0'),
    (dict(frame_size=(8, 8)), r'frame_size\[0\] must be an int >= 16, but got 8'),
    (dict(trail=-1), 'trail must be an int >= 0, but got -1'),
])
def test_invalid_arguments_raise(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_video_dataset(tmp_path, **dict(SMALL, **kwargs))


def test_mmaction_rawframe_dataset_and_acc_metric_read_it(tmp_path):
    pytest.importorskip('mmaction')
    torch = pytest.importorskip('torch')
    from mmaction.datasets import RawframeDataset
    from mmaction.datasets.transforms import RawFrameDecode, SampleFrames
    from mmaction.evaluation import AccMetric

    info = generate_video_dataset(tmp_path, **SMALL)
    dataset = RawframeDataset(
        ann_file=info['val']['ann_file'], data_prefix=dict(img=info['val']['frame_root']),
        filename_tmpl=info['filename_tmpl'], test_mode=True,
        pipeline=[SampleFrames(clip_len=1, frame_interval=1, num_clips=3, test_mode=True),
                  RawFrameDecode()])
    assert len(dataset) == 6
    metric = AccMetric()
    metric.dataset_meta = dict(classes=VIDEO_CLASSES)
    for index in range(len(dataset)):
        sample = dataset[index]
        assert len(sample['imgs']) == 3 and sample['imgs'][0].shape == (32, 40, 3)
        assert sample['label'] == index % 6
        score = torch.nn.functional.one_hot(torch.tensor(sample['label']), 6).float()
        metric.process({}, [dict(pred_score=score, gt_label=torch.tensor([sample['label']]))])
    assert metric.evaluate(len(dataset))['acc/top1'] == pytest.approx(1.0)
