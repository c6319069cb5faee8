"""tools/train.py, tools/test.py and tools/dist_train.sh end to end, on tiny synthetic data."""
import glob
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

pytest.importorskip('mmdet')
pytest.importorskip('mmaction')

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DET_CONFIG = osp.join(ROOT, 'configs/demo/faster_rcnn_r50_fpn_synthetic_shapes.py')
VIDEO_CONFIG = osp.join(ROOT, 'configs/demo/tsn_r18_synthetic_clips.py')
TINY_DET = ['train_cfg.max_epochs=1', 'train_cfg.val_interval=1', 'train_dataloader.batch_size=2',
            'val_dataloader.batch_size=2', 'test_dataloader.batch_size=2',
            'default_hooks.logger.interval=1', 'param_scheduler.0.end=2']


def _free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _run(args, cwd, timeout=600, env=None):
    out = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                         env=dict(os.environ, **(env or {})))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


@pytest.fixture(scope='module')
def det_dir(tmp_path_factory):
    from mmdaq.datasets import generate_detection_dataset
    cwd = tmp_path_factory.mktemp('det')
    generate_detection_dataset(str(cwd / 'data/synthetic_shapes'), num_train=6, num_val=4,
                               image_size=(96, 96), seed=0)
    return cwd


def _scalars(work_dir):
    logs = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    assert logs, f'no scalars.json under {work_dir}'
    with open(logs[0]) as f:
        return [json.loads(line) for line in f]


def test_a_missing_synthetic_dataset_says_how_to_make_it(tmp_path, monkeypatch):
    from mmdaq.engine.launch import check_synthetic_data, load_config
    monkeypatch.chdir(tmp_path)
    for config, kind in ((DET_CONFIG, 'detection'), (VIDEO_CONFIG, 'video')):
        cfg = load_config(config)
        with pytest.raises(FileNotFoundError, match=f'make data.*generate_synthetic.py {kind}'):
            check_synthetic_data(cfg)
    from mmdaq.datasets import generate_video_dataset
    generate_video_dataset(str(tmp_path / 'data/synthetic_clips'), num_train=2, num_val=2, seed=0)
    check_synthetic_data(load_config(VIDEO_CONFIG))  # generated: no error
    cfg = load_config(DET_CONFIG, dict(train_dataloader=dict(dataset=dict(data_root='elsewhere/'))))
    with pytest.raises(FileNotFoundError, match='val_dataloader reads'):
        check_synthetic_data(cfg)  # the train split moved, the val split still reads the demo's


def test_train_then_test_detection(det_dir):
    work = str(det_dir / 'work_train')
    out = _run([sys.executable, osp.join(ROOT, 'tools/train.py'), DET_CONFIG, '--work-dir', work,
                '--cfg-options'] + TINY_DET, cwd=det_dir)
    assert any('loss' in r for r in _scalars(work))
    # Validation ran CocoMetric (3 iterations from scratch may still predict nothing).
    assert 'Epoch(val) [1][2/2]' in out and 'Evaluating bbox' in out
    ckpt = osp.join(work, 'epoch_1.pth')
    assert osp.isfile(ckpt)
    out = _run([sys.executable, osp.join(ROOT, 'tools/test.py'), DET_CONFIG, ckpt, '--work-dir',
                str(det_dir / 'work_test'), '--out', str(det_dir / 'preds.pkl'),
                '--cfg-options', 'test_dataloader.batch_size=2'], cwd=det_dir)
    assert 'Epoch(test) [2/2]' in out and 'Evaluating bbox' in out
    assert osp.isfile(det_dir / 'preds.pkl')


def test_resume_from_latest_checkpoint(det_dir):
    work = str(det_dir / 'work_resume')
    opts = TINY_DET + ['train_cfg.val_interval=10']
    _run([sys.executable, osp.join(ROOT, 'tools/train.py'), DET_CONFIG, '--work-dir', work,
          '--cfg-options'] + opts, cwd=det_dir)
    out = _run([sys.executable, osp.join(ROOT, 'tools/train.py'), DET_CONFIG, '--work-dir', work,
                '--resume', '--cfg-options'] + opts + ['train_cfg.max_epochs=2'], cwd=det_dir)
    assert 'resumed epoch: 1' in out
    assert osp.isfile(osp.join(work, 'epoch_2.pth'))


def test_cli_errors_are_clear(det_dir):
    out = subprocess.run([sys.executable, osp.join(ROOT, 'tools/train.py'), 'nope.py'],
                         cwd=det_dir, capture_output=True, text=True)
    assert out.returncode != 0 and 'config must be an existing file' in out.stderr
    out = subprocess.run([sys.executable, osp.join(ROOT, 'tools/train.py'), DET_CONFIG, '--amp'],
                         cwd=det_dir, capture_output=True, text=True)
    if 'torch.cuda.is_available() is False' not in out.stderr:
        pytest.skip('a GPU is present: --amp is valid here')
    assert out.returncode != 0


def test_dist_train_two_cpu_processes(det_dir):
    work = str(det_dir / 'work_dist')
    out = _run(['bash', osp.join(ROOT, 'tools/dist_train.sh'), DET_CONFIG, '2', '--work-dir', work,
                '--cfg-options'] + TINY_DET + ['train_cfg.val_interval=10'], cwd=det_dir,
               env=dict(PORT=str(_free_port()), PYTHON=sys.executable))
    assert 'Distributed launcher: pytorch' in out or 'distributed: True' in out
    assert osp.isfile(osp.join(work, 'epoch_1.pth'))
    assert any('loss' in r for r in _scalars(work))


def test_train_video_config(tmp_path):
    from mmdaq.datasets import generate_video_dataset
    generate_video_dataset(str(tmp_path / 'data/synthetic_clips'), num_train=6, num_val=6,
                           num_frames=6, frame_size=(32, 32), seed=0)
    work = str(tmp_path / 'work')
    _run([sys.executable, osp.join(ROOT, 'tools/train.py'), VIDEO_CONFIG, '--work-dir', work,
          '--cfg-options', 'train_cfg.max_epochs=1', 'train_cfg.val_begin=1',
          'train_cfg.val_interval=1', 'train_dataloader.batch_size=3',
          'val_dataloader.batch_size=3', 'train_dataloader.num_workers=0',
          'val_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
          'val_dataloader.persistent_workers=False', 'default_hooks.logger.interval=1'],
         cwd=tmp_path)
    assert any('acc/top1' in r for r in _scalars(work))


DAQ_DET_CONFIG = osp.join(ROOT, 'configs/demo/faster_rcnn_r50_fpn_daq_synthetic_shapes.py')


def test_daq_checkpoint_evaluates_with_the_fp32_config_and_fp32_loads_into_daq(det_dir):
    work = str(det_dir / 'work_daq')
    out = _run([sys.executable, osp.join(ROOT, 'tools/train.py'), DAQ_DET_CONFIG, '--work-dir',
                work, '--cfg-options'] + TINY_DET + ['train_cfg.val_interval=10'], cwd=det_dir)
    assert 'DAQHook (daq): 63 layers INT8, 5 kept in float' in out
    ckpt = osp.join(work, 'epoch_1.pth')
    out = _run([sys.executable, osp.join(ROOT, 'tools/test.py'), DET_CONFIG, ckpt, '--work-dir',
                str(det_dir / 'work_daq_test'), '--cfg-options', 'test_dataloader.batch_size=2'],
               cwd=det_dir)
    assert 'Epoch(test) [2/2]' in out and 'DAQHook' not in out  # the plain FP32 model
    assert 'unexpected key' not in out and 'missing keys' not in out
    # ... and an FP32 checkpoint starts a DAQ run (load_from).
    fp32_ckpt = osp.join(str(det_dir / 'work_train'), 'epoch_1.pth')
    if not osp.isfile(fp32_ckpt):
        pytest.skip('needs the checkpoint of test_train_then_test_detection')
    out = _run([sys.executable, osp.join(ROOT, 'tools/train.py'), DAQ_DET_CONFIG, '--work-dir',
                str(det_dir / 'work_daq_from_fp32'), '--cfg-options'] + TINY_DET +
               ['train_cfg.val_interval=10', f'load_from={fp32_ckpt}'], cwd=det_dir)
    assert 'Load checkpoint from' in out and 'no DAQ clip state' not in out


FINETUNE_CONFIG = osp.join(ROOT,
                           'configs/demo/faster_rcnn_r50_fpn_daq_synthetic_shapes_finetune.py')
TINY_FINETUNE = ['train_cfg.max_iters=2', 'train_cfg.val_interval=2', 'param_scheduler.0.end=2',
                 'param_scheduler.0.milestones=[1]', 'default_hooks.checkpoint.interval=2',
                 'train_dataloader.batch_size=2', 'val_dataloader.batch_size=2',
                 'default_hooks.logger.interval=1']


def test_finetune_config_continues_an_fp32_checkpoint_in_daq(det_dir):
    """The fidelity protocol's and the demo's second stage: load_from an FP32 checkpoint."""
    fp32_ckpt = osp.join(str(det_dir / 'work_train'), 'epoch_1.pth')
    if not osp.isfile(fp32_ckpt):
        pytest.skip('needs the checkpoint of test_train_then_test_detection')
    work = str(det_dir / 'work_finetune')
    out = _run([sys.executable, osp.join(ROOT, 'tools/train.py'), FINETUNE_CONFIG, '--work-dir',
                work, '--cfg-options'] + TINY_FINETUNE + [f'load_from={fp32_ckpt}'], cwd=det_dir)
    assert 'Load checkpoint from' in out and 'DAQHook (daq): 63 layers INT8' in out
    assert 'Iter(train) [2/2]' in out and 'Evaluating bbox' in out
    assert osp.isfile(osp.join(work, 'iter_2.pth'))
    lrs = [r['lr'] for r in _scalars(work) if 'lr' in r]
    assert lrs == pytest.approx([1e-3, 1e-4])  # no warm-up; stepped down half way


def test_resume_after_sigkill(det_dir):
    import signal
    import time
    work = str(det_dir / 'work_kill')
    cmd = [sys.executable, osp.join(ROOT, 'tools/train.py'), DAQ_DET_CONFIG, '--work-dir', work,
           '--cfg-options'] + TINY_DET + ['train_cfg.max_epochs=4', 'train_cfg.val_interval=10',
                                          'default_hooks.checkpoint.interval=1',
                                          'default_hooks.checkpoint.max_keep_ckpts=4']
    proc = subprocess.Popen(cmd, cwd=det_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    # mmengine writes `last_checkpoint` (what --resume reads) after the checkpoint file itself.
    while not osp.isfile(osp.join(work, 'last_checkpoint')) and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)  # right after the first checkpoint: mid-run
    proc.wait()
    assert not osp.isfile(osp.join(work, 'epoch_4.pth'))
    out = _run(cmd[:5] + ['--resume'] + cmd[5:], cwd=det_dir)  # --resume before --cfg-options
    assert 'resumed epoch: ' in out
    assert osp.isfile(osp.join(work, 'epoch_4.pth'))


HEADLINE_CONFIG = osp.join(ROOT, 'configs/faster_rcnn_r50_daq.py')
CLASSES = "('rectangle','outlined_rectangle','ellipse','triangle','cross')"


def synthetic_overrides(data_root='data/synthetic_shapes/'):
    """--cfg-options that point the stock COCO config at the synthetic shapes, tiny and quick."""
    opts = ['model.roi_head.bbox_head.num_classes=5', 'model.backbone.init_cfg=None',
            f'val_evaluator.ann_file={data_root}annotations/instances_val.json']
    for split, loader in (('train', 'train_dataloader'), ('val', 'val_dataloader')):
        opts += [f'{loader}.dataset.data_root={data_root}',
                 f'{loader}.dataset.ann_file=annotations/instances_{split}.json',
                 f'{loader}.dataset.data_prefix.img={split}/',
                 f'{loader}.dataset.metainfo.classes={CLASSES}',
                 f'{loader}.batch_size=2', f'{loader}.num_workers=0',
                 f'{loader}.persistent_workers=False']
    opts += ['train_dataloader.dataset.pipeline.2.scale=(96,96)',  # Resize of the stock pipeline
             'val_dataloader.dataset.pipeline.1.scale=(96,96)',
             'train_cfg.max_epochs=1', 'param_scheduler.0.end=2', 'default_hooks.logger.interval=1']
    return opts


def test_headline_daq_config_on_synthetic_paths(det_dir):
    # The acceptance command: the stock COCO config + _base_/daq.py, data overridden.
    work = str(det_dir / 'work_headline')
    out = _run([sys.executable, osp.join(ROOT, 'tools/train.py'), HEADLINE_CONFIG, '--work-dir',
                work, '--cfg-options'] + synthetic_overrides(), cwd=det_dir)
    assert 'DAQHook' in out and 'INT8' in out
    assert any('loss' in r for r in _scalars(work))
    assert 'Epoch(val) [1][2/2]' in out and 'Evaluating bbox' in out


def test_ui8_config_trains(det_dir):
    config = osp.join(ROOT, 'configs/ui8/faster_rcnn_r50_fpn_ui8_synthetic_shapes.py')
    work = str(det_dir / 'work_ui8')
    out = _run([sys.executable, osp.join(ROOT, 'tools/train.py'), config, '--work-dir', work,
                '--cfg-options'] + TINY_DET + ['train_cfg.val_interval=10'], cwd=det_dir)
    assert "method='ui8'" in out or 'ui8' in out
    losses = [r['loss'] for r in _scalars(work) if 'loss' in r]
    assert losses and all(v == v and v < 1e4 for v in losses)  # finite
