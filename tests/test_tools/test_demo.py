"""tools/demo.py: which trainings the demo runs, in which order, with which options."""
import json
import os
import os.path as osp
import sys

import pytest

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
                            'tools'))
import demo  # noqa: E402


@pytest.fixture
def fake_training(monkeypatch):
    calls = []

    def train(config, work_dir, extra):
        calls.append((osp.basename(config), osp.basename(work_dir), extra))
        os.makedirs(work_dir)
        with open(osp.join(work_dir, 'last_checkpoint'), 'w') as f:
            f.write(osp.join(work_dir, 'epoch_1.pth'))
        return 10.0 * len(calls)

    monkeypatch.setattr(demo, 'generate_data', lambda *a: None)
    monkeypatch.setattr(demo, 'train', train)
    monkeypatch.setattr(demo, 'final_metric', lambda work_dir, key: 0.5 if 'fp32' in work_dir
                        else 0.45)
    return calls


def test_detection_demo_continues_one_fp32_warm_start(fake_training, tmp_path, capsys):
    results = demo.main(['detection', '--work-dir', str(tmp_path)])
    (warm, warm_dir, warm_extra), fp32, daq = fake_training
    assert warm == 'faster_rcnn_r50_fpn_synthetic_shapes.py' and warm_dir == 'detection_warm_start'
    assert warm_extra == ['--cfg-options'] + demo.DEMOS['detection']['warm_start']
    checkpoint = osp.join(str(tmp_path), 'detection_warm_start', 'epoch_1.pth')
    assert fp32[0] == 'faster_rcnn_r50_fpn_synthetic_shapes_finetune.py'
    assert daq[0] == 'faster_rcnn_r50_fpn_daq_synthetic_shapes_finetune.py'
    for _, _, extra in (fp32, daq):
        assert extra == ['--cfg-options', f'load_from={checkpoint}']
    assert results['daq']['seconds'] / results['fp32']['seconds'] == pytest.approx(1.5)
    out = capsys.readouterr().out
    assert 'DAQ - FP32: -0.050 bbox mAP; time DAQ / FP32: 1.50x' in out
    assert 'from one FP32 warm start (10 s)' in out
    summary = json.loads((tmp_path / 'detection_summary.json').read_text())
    assert summary['warm_start']['checkpoint'] == checkpoint


def test_full_demo_trains_both_from_scratch(fake_training, tmp_path):
    demo.main(['detection', '--full', '--work-dir', str(tmp_path), '--cfg-options', 'a=1'])
    assert [c[0] for c in fake_training] == ['faster_rcnn_r50_fpn_synthetic_shapes.py',
                                             'faster_rcnn_r50_fpn_daq_synthetic_shapes.py']
    assert all(c[2] == ['--cfg-options', 'a=1'] for c in fake_training)


def test_video_demo_has_no_warm_start(fake_training, tmp_path):
    demo.main(['video', '--only', 'daq', '--work-dir', str(tmp_path)])
    assert [c[0] for c in fake_training] == ['tsn_r18_daq_synthetic_clips.py']
