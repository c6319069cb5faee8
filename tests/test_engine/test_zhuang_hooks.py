"""Zhuang et al. hooks and joint distillation in a real mmengine Runner (notes B.8)."""
import copy
import os.path as osp
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

pytest.importorskip('mmengine')
from mmengine.hooks import Hook  # noqa: E402
from mmengine.logging import MessageHub  # noqa: E402
from mmengine.model import BaseModel  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from mmdaq.cnn import LowBitLayerMixin, convert_model, lowbit_layers  # noqa: E402
from mmdaq.engine import (JointDistillationModel, ProgressiveQuantHook,  # noqa: E402
                          StochasticPrecisionHook, ZhuangQuantHook, hint_loss)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


class ToyNet(BaseModel):
    """stem (first conv) -> backbone (4 convs) -> head (Linear) -> fc_cls (prediction layer)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        layers = [nn.BatchNorm2d(8), nn.ReLU()]
        for _ in range(4):  # BN after each conv, as in the ResNets the method targets
            layers += [nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()]
        self.backbone = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 8),
                                  nn.BatchNorm1d(8), nn.ReLU())
        self.fc_cls = nn.Linear(8, 4)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        return self.fc_cls(self.head(self.backbone(self.stem(inputs))))

    def loss(self, inputs, data_samples):
        return dict(loss_cls=F.cross_entropy(self(inputs), data_samples))


class ToyData(Dataset):
    """Class c < 3 raises channel c by 1, class 3 lowers all: learnable in a few steps."""

    def __init__(self, n=32):
        g = torch.Generator().manual_seed(1)
        self.y = torch.randint(0, 4, (n, ), generator=g)
        offset = torch.cat([torch.eye(3), -0.5 * torch.ones(1, 3)])[self.y]  # [n, 3]
        self.x = torch.randn(n, 3, 8, 8, generator=g) * 0.5 + offset[:, :, None, None]

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return dict(inputs=self.x[i], data_samples=self.y[i])


class Record(Hook):
    priority = 'LOW'  # after the hooks under test have set this iteration's precision

    def __init__(self):
        self.losses, self.bits, self.quant_a, self.params = [], [], [], []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        model = runner.model.model if hasattr(runner.model, 'fp_model') else runner.model
        layer = next(iter(lowbit_layers(model).values()))
        self.bits.append(layer.lowbit.bits_w)
        self.quant_a.append(layer.lowbit.quantize_activations)
        self.params.append([p.detach().clone() for p in runner.model.parameters()])

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses.append(float(outputs['loss'].detach()))


def make_runner(work_dir, hooks, max_iters=8, model=None, lr=0.05, load_from=None):
    torch.manual_seed(0)
    record = Record()
    runner = Runner(
        model=model or ToyNet(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=ToyData(), sampler=dict(type='InfiniteSampler', shuffle=True),
                              batch_size=8, collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=lr, momentum=0.9)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=max_iters,
                                           by_epoch=False)),
        custom_hooks=hooks + [record], randomness=dict(seed=0), load_from=load_from,
        default_scope='mmengine', experiment_name=f'zhuang_{id(record)}')
    runner.record = record
    return runner


def test_conversion_hook_trains_with_finite_decreasing_loss(tmp_path):
    runner = make_runner(tmp_path, [dict(type='ZhuangQuantHook', bits_w=4, bits_a=4)],
                         max_iters=40)
    runner.train()
    model = runner.model
    assert type(model.stem) is nn.Conv2d and type(model.fc_cls) is nn.Linear  # FP32 ends
    assert sorted(lowbit_layers(model)) == ['backbone.11', 'backbone.2', 'backbone.5',
                                            'backbone.8', 'head.2']
    losses = runner.record.losses
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-8:]) / 8 < 0.5 * sum(losses[:8]) / 8


def test_conversion_hook_policies_and_errors():
    model = ToyNet()
    report = ZhuangQuantHook(first_layer='weights', last_layer='full').convert(model)
    assert 'stem' in report.converted and 'fc_cls' in report.converted
    assert not model.stem.input_quantizable and model.fc_cls.input_quantizable
    model = ToyNet()
    ZhuangQuantHook(last_layer='weights', weights_only=[r'^head\.2$']).convert(model)
    assert type(model.stem) is nn.Conv2d
    assert not model.fc_cls.input_quantizable and not model.head[2].input_quantizable
    assert model.backbone[2].input_quantizable
    with pytest.raises(ValueError, match=r"first_layer must be one of \('fp32', 'weights'\)"):
        ZhuangQuantHook(first_layer='full')
    with pytest.raises(ValueError, match='last_layer must be one of'):
        ZhuangQuantHook(last_layer='int8')
    with pytest.raises(ValueError, match='bits_a must be an int'):
        ZhuangQuantHook(bits_a=0)


def test_progressive_chain_and_two_stage_schedule(tmp_path):
    hooks = [dict(type='ZhuangQuantHook', bits_w=4, bits_a=4),
             dict(type='ProgressiveQuantHook', bits=(32, 16, 8, 4), milestones=(2, 4, 6),
                  activation_begin=3, by_epoch=False)]
    runner = make_runner(tmp_path, hooks, max_iters=8)
    runner.train()
    record = runner.record
    assert record.bits == [32, 32, 16, 16, 8, 8, 4, 4]
    widths = [b for i, b in enumerate(record.bits) if i == 0 or b != record.bits[i - 1]]
    assert all(a > b for a, b in zip(widths, widths[1:])) and widths[-1] == 4  # final = target
    assert record.quant_a == [False] * 3 + [True] * 5  # TS: weights first, then activations
    # Each stage continues from the weights the previous one ended with: the parameters at the
    # start of a switching iteration are those left by the last step (one SGD step apart from
    # the previous start, never reset).
    for i in (2, 3, 4, 6):
        assert not all(torch.equal(a, b) for a, b in zip(record.params[i - 1], record.params[i]))
    final = [p.detach() for p in runner.model.parameters()]
    assert all(torch.isfinite(p).all() for p in final)
    assert all(m.lowbit.bits_w == 4 and m.lowbit.quantize_activations
               for m in lowbit_layers(runner.model).values())


def test_progressive_hook_stage_keeps_weights_bit_identical():
    model = ToyNet()
    convert_model(model, method='zhuang_w4a4', bits_w=4, bits_a=4)
    hook = ProgressiveQuantHook(activation_begin=2, by_epoch=False)
    runner = SimpleNamespace(model=model, epoch=0, iter=1, max_epochs=1, max_iters=4,
                             message_hub=MessageHub.get_instance('zhuang_pq'))
    hook.before_train(runner)
    hook.before_train_iter(runner, 0)
    state = copy.deepcopy(model.state_dict())
    assert not model.backbone[2].lowbit.quantize_activations
    runner.iter = 2
    hook.before_train_iter(runner, 0)  # stage 2
    assert model.backbone[2].lowbit.quantize_activations
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_progressive_hook_errors(tmp_path):
    with pytest.raises(ValueError, match='bits must be strictly decreasing'):
        ProgressiveQuantHook(bits=(8, 8, 4), milestones=(1, 2))
    with pytest.raises(ValueError, match=r'milestones must be 2 strictly increasing ints > 0'):
        ProgressiveQuantHook(bits=(16, 8, 4), milestones=(2, ))
    with pytest.raises(ValueError, match='activation_begin must be an int >= 0'):
        ProgressiveQuantHook(activation_begin=-1)
    zq = dict(type='ZhuangQuantHook', bits_w=4, bits_a=4)
    runner = make_runner(tmp_path / 'a', [zq, dict(type='ProgressiveQuantHook', bits=(8, 4),
                                                   milestones=(9, ), by_epoch=False)])
    with pytest.raises(ValueError, match=r'switch points must be < max_iters = 8, but got \[9\]'):
        runner.train()
    runner = make_runner(tmp_path / 'b', [zq, dict(type='ProgressiveQuantHook', bits=(8, 2),
                                                   milestones=(2, ), by_epoch=False)])
    with pytest.raises(ValueError, match=r'bits\[-1\] must equal the target'):
        runner.train()
    runner = make_runner(tmp_path / 'c', [dict(type='ProgressiveQuantHook')])
    with pytest.raises(RuntimeError, match='add ZhuangQuantHook'):
        runner.train()


def _quantized_model(bits=2):
    torch.manual_seed(0)
    model = ToyNet()
    ZhuangQuantHook(bits_w=bits, bits_a=bits).convert(model)
    return model


def _fake_runner(model, it=0):
    return SimpleNamespace(model=model, epoch=0, iter=it, max_epochs=1, max_iters=1000,
                           message_hub=MessageHub.get_instance('zhuang_sp'))


def test_stochastic_precision_fraction_reproducibility_and_eval():
    model = _quantized_model()
    hook = StochasticPrecisionHook(ratios=(0.5, 1.0), milestones=(300, ), by_epoch=False)
    runner = _fake_runner(model)
    hook.before_train(runner)
    layers = list(lowbit_layers(model).values())
    assert len(hook.units) == len(layers) == 5
    counts = torch.zeros(5)
    draws = []
    for it in range(300):
        runner.iter = it
        hook.before_train_iter(runner, 0)
        quantized = torch.tensor([not m.fp_this_iter for m in layers], dtype=torch.float)
        assert quantized.sum() == 3  # round(0.5 * 5) = 3 (half up), every iteration
        counts += quantized
        draws.append(quantized)
    assert ((counts / 300 - 0.6).abs() < 0.1).all()  # each layer quantized ~ p of the time
    assert len({tuple(d.tolist()) for d in draws}) > 5  # resampled each iteration
    hook.after_train_iter(runner, 0)
    assert not any(m.fp_this_iter for m in layers)
    twin = StochasticPrecisionHook(ratios=(0.5, 1.0), milestones=(300, ), by_epoch=False)
    twin.units = hook.units
    assert torch.equal(twin.draw(17, 0.5), hook.draw(17, 0.5))  # seeded by (seed, iteration)
    other = StochasticPrecisionHook(ratios=(0.5, 1.0), milestones=(300, ), seed=1)
    other.units = hook.units
    assert any(not torch.equal(other.draw(i, 0.5), hook.draw(i, 0.5)) for i in range(10))
    # Eval is fully quantized even with a partial draw in place.
    x = torch.rand(4, 3, 8, 8)
    runner.iter = 5
    hook.before_train_iter(runner, 0)
    assert any(m.fp_this_iter for m in layers)
    reference = _quantized_model()
    model.eval()
    reference.eval()
    assert torch.equal(model(x), reference(x))


def test_stochastic_precision_at_one_is_bit_identical_to_fully_quantized():
    model, reference = _quantized_model(), _quantized_model()
    hook = StochasticPrecisionHook(ratios=(0.5, 1.0), milestones=(2, ), by_epoch=False)
    runner = _fake_runner(model, it=2)
    hook.before_train(runner)
    hook.before_train_iter(runner, 0)
    assert hook.ratio(2) == 1.0 and not any(m.fp_this_iter for m in lowbit_layers(model).values())
    x = torch.rand(4, 3, 8, 8)
    assert torch.equal(model(x), reference(x))  # both in train mode


def test_stochastic_precision_blocks_and_errors():
    model = nn.Module()
    model.backbone = nn.Module()
    model.backbone.layer1 = nn.Sequential(nn.Sequential(nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 1)),
                                          nn.Sequential(nn.Conv2d(2, 2, 1)))
    model.neck = nn.Conv2d(2, 2, 1)
    convert_model(model, method='zhuang_w4a4')
    hook = StochasticPrecisionHook(milestones=(1, 2, 3), granularity='block')
    units = hook.group_units(model)
    assert [len(u) for u in units] == [2, 1, 1]  # layer1.0 (2 convs), layer1.1, neck
    with pytest.raises(ValueError, match='ratios must be non-decreasing shares in'):
        StochasticPrecisionHook(ratios=(0.5, 0.75), milestones=(1, ))
    with pytest.raises(ValueError, match='ratios must be non-decreasing shares in'):
        StochasticPrecisionHook(ratios=(0.75, 0.5, 1.0), milestones=(1, 2))
    with pytest.raises(ValueError, match='milestones must be 3 strictly increasing'):
        StochasticPrecisionHook(milestones=(1, 2))
    with pytest.raises(ValueError, match="granularity must be 'layer' or 'block'"):
        StochasticPrecisionHook(milestones=(1, 2, 3), granularity='channel')


# -- joint knowledge distillation -------------------------------------------------------------
def _joint(hint_weight=0.5, bits=2):
    torch.manual_seed(0)
    joint = JointDistillationModel(ToyNet(), hint_layers=('backbone', 'head'),
                                   hint_weight=hint_weight)
    ZhuangQuantHook(bits_w=bits, bits_a=bits).convert(joint.model)
    joint.init_weights()
    return joint


def _batch():
    data = ToyData(8)
    return data.x, data.y


def test_hint_loss_properties():
    a, b = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    r = hint_loss([a], [b])
    torch.testing.assert_close(r, 0.5 * ((a - b)**2).mean())
    assert r >= 0 and hint_loss([a, b], [a, b]) == 0
    with pytest.raises(ValueError, match='hint features must have equal shapes'):
        hint_loss([a], [b[:1]])


def test_joint_model_starts_equal_and_hint_is_zero_for_equal_nets():
    joint = _joint(bits=32)
    assert not lowbit_layers(joint.fp_model) and lowbit_layers(joint.model)
    for p, q in zip(joint.model.parameters(), joint.fp_model.parameters()):
        assert p is not q and torch.equal(p, q)
    x, y = _batch()
    losses = joint.loss(x, y)
    assert losses['loss_hint'] == 0 and torch.equal(losses['loss_cls'], losses['fp_loss_cls'])
    assert torch.equal(joint(x, mode='tensor'), joint.model(x))  # predict: the low-bit net


def test_each_net_gets_the_gradient_of_its_own_objective_and_hint_reaches_both():
    joint = _joint(hint_weight=0.5)
    x, y = _batch()
    losses = joint.loss(x, y)
    assert losses['loss_hint'] > 0
    lp, fp = list(joint.model.parameters()), list(joint.fp_model.parameters())
    hint_lp = torch.autograd.grad(losses['loss_hint'], lp, retain_graph=True, allow_unused=True)
    hint_fp = torch.autograd.grad(losses['loss_hint'], fp, retain_graph=True, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in hint_lp)
    assert any(g is not None and g.abs().sum() > 0 for g in hint_fp)
    own_lp = torch.autograd.grad(losses['loss_cls'] + losses['loss_hint'], lp, retain_graph=True)
    own_fp = torch.autograd.grad(losses['fp_loss_cls'] + losses['loss_hint'], fp,
                                 retain_graph=True)
    total, _ = joint.parse_losses(losses)
    total.backward()
    for p, g in zip(lp, own_lp):
        torch.testing.assert_close(p.grad, g, rtol=1e-6, atol=1e-7)
    for p, g in zip(fp, own_fp):
        torch.testing.assert_close(p.grad, g, rtol=1e-6, atol=1e-7)


def test_lambda_zero_is_two_independent_trainings():
    joint = _joint(hint_weight=0.0)
    alone_lp, alone_fp = copy.deepcopy(joint.model), copy.deepcopy(joint.fp_model)
    x, y = _batch()
    opt = torch.optim.SGD(joint.parameters(), lr=0.1, momentum=0.9)
    total, _ = joint.parse_losses(joint.loss(x, y))
    total.backward()
    opt.step()
    for net, twin in ((alone_lp, joint.model), (alone_fp, joint.fp_model)):
        own = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)  # its own optimizer
        net.loss(x, y)['loss_cls'].backward()
        own.step()
        for p, q in zip(net.parameters(), twin.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_joint_checkpoints_load_both_ways():
    from mmengine.runner.checkpoint import load_state_dict
    joint = _joint()
    plain_keys = set(ToyNet().state_dict())
    state = joint.state_dict()
    assert set(state) == plain_keys | {f'fp_model.{k}' for k in plain_keys}
    other = _joint()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    other.load_state_dict(state)  # strict round trip
    for p, q in zip(joint.parameters(), other.parameters()):
        assert torch.equal(p, q)
    plain = ToyNet()  # a plain (FP32) checkpoint of the architecture goes into both nets
    fresh = _joint()
    load_state_dict(fresh, plain.state_dict(), strict=True)  # the loader runners use
    for net in (fresh.model, fresh.fp_model):
        for p, q in zip(plain.parameters(), net.parameters()):
            assert torch.equal(p, q)
    result = plain.load_state_dict(state, strict=False)  # the low-bit weights, for plain eval
    assert not result.missing_keys and all(k.startswith('fp_model.')
                                           for k in result.unexpected_keys)
    assert all(torch.equal(p, q) for p, q in zip(plain.parameters(), joint.model.parameters()))


def test_joint_model_errors():
    with pytest.raises(ValueError, match='hint_weight must be a finite number >= 0'):
        JointDistillationModel(ToyNet(), hint_weight=-1.0)
    with pytest.raises(ValueError, match="hint_layers must name modules of ToyNet, but got 'neck'"):
        JointDistillationModel(ToyNet(), hint_layers=('neck', ))


def test_joint_model_with_hooks_in_a_runner_converts_only_the_low_bit_net(tmp_path):
    model = JointDistillationModel(ToyNet(), hint_layers=('backbone', ), hint_weight=0.5)
    hooks = [dict(type='ZhuangQuantHook', bits_w=4, bits_a=4),
             dict(type='StochasticPrecisionHook', ratios=(0.5, 1.0), milestones=(2, ),
                  by_epoch=False)]
    runner = make_runner(tmp_path, hooks, max_iters=4, model=model)
    runner.train()
    assert len(lowbit_layers(runner.model.model)) == 5 and not lowbit_layers(runner.model.fp_model)
    assert all(torch.isfinite(torch.tensor(runner.record.losses)))
    ckpt = osp.join(str(tmp_path), 'iter_4.pth')
    assert osp.isfile(ckpt)
    model = JointDistillationModel(ToyNet(), hint_layers=('backbone', ))
    again = make_runner(tmp_path / 'again', hooks, max_iters=3, model=model, load_from=ckpt)
    again.train()
    out = again.record  # started from the saved low-bit and FP weights
    saved = torch.load(ckpt, map_location='cpu', weights_only=False)['state_dict']
    start = dict(zip([n for n, _ in again.model.named_parameters()], out.params[0]))
    assert torch.equal(start['model.stem.weight'], saved['stem.weight'])
    assert torch.equal(start['fp_model.stem.weight'], saved['fp_model.stem.weight'])
    assert not torch.equal(saved['stem.weight'], saved['fp_model.stem.weight'])
    assert all(isinstance(m, LowBitLayerMixin) for m in lowbit_layers(again.model).values())


def test_joint_model_wraps_an_mmdet_two_stage_detector():
    pytest.importorskip('mmdet')
    from mmdet.structures import DetDataSample
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.structures import InstanceData
    init_default_scope('mmdet')
    cfg = Config.fromfile(osp.join(ROOT, 'configs/zhuang/'
                                         'faster_rcnn_r50_fpn_zhuang_w4a4_synthetic_shapes.py'))
    cfg.model.architecture.backbone.depth = 18  # small and quick; same structure
    cfg.model.architecture.neck.in_channels = [64, 128, 256, 512]
    joint = MODELS.build(cfg.model)
    hook_cfg = dict(cfg.custom_hooks[0])
    hook_cfg.pop('type')
    ZhuangQuantHook(**hook_cfg).convert(joint.model)
    float_input = {n for n, m in lowbit_layers(joint.model).items() if not m.input_quantizable}
    assert 'rpn_head.rpn_conv' in float_input and 'roi_head.bbox_head.shared_fcs.0' in float_input
    assert {f'neck.fpn_convs.{i}.conv' for i in range(4)} <= float_input
    assert 'roi_head.bbox_head.shared_fcs.1' not in float_input
    joint.init_weights()
    sample = DetDataSample(metainfo=dict(img_shape=(64, 64), pad_shape=(64, 64),
                                         ori_shape=(64, 64), scale_factor=(1.0, 1.0)))
    sample.gt_instances = InstanceData(bboxes=torch.tensor([[8.0, 8.0, 40.0, 36.0]]),
                                       labels=torch.tensor([1]))
    torch.manual_seed(0)
    losses = joint.loss(torch.rand(1, 3, 64, 64), [sample])
    assert {'loss_rpn_cls', 'fp_loss_rpn_cls', 'loss_cls', 'fp_loss_bbox', 'loss_hint'} <= \
        set(losses)
    assert losses['loss_hint'] > 0
    total, _ = joint.parse_losses(losses)
    assert torch.isfinite(total)
    total.backward()
    for net in (joint.model, joint.fp_model):
        # The residual branches start at zero (zero-init last BN): gradients run through the
        # identity and downsample paths at first.
        assert net.backbone.layer4[0].downsample[0].weight.grad.abs().sum() > 0


def test_video_config_trains_through_tools_train(tmp_path):
    pytest.importorskip('mmaction')
    from mmdaq.datasets import generate_video_dataset
    generate_video_dataset(str(tmp_path / 'data/synthetic_clips'), num_train=9, num_val=6,
                           num_frames=6, frame_size=(32, 32), seed=0)
    config = osp.join(ROOT, 'configs/zhuang/tsn_r18_zhuang_w4a4_synthetic_clips.py')
    args = [sys.executable, osp.join(ROOT, 'tools/train.py'), config, '--work-dir',
            str(tmp_path / 'work'), '--cfg-options', 'train_cfg.max_epochs=1',
            'train_cfg.val_begin=1', 'train_cfg.val_interval=1', 'train_dataloader.batch_size=3',
            'val_dataloader.batch_size=3', 'train_dataloader.num_workers=0',
            'val_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
            'val_dataloader.persistent_workers=False', 'default_hooks.logger.interval=1',
            'custom_hooks.1.by_epoch=False', 'custom_hooks.1.milestones=[1,2]']
    out = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert 'ZhuangQuantHook: 19 layers low-bit (W4A4' in log
    for stage in ('W32A32 from iteration 1', 'W8A8 from iteration 2', 'W4A4 from iteration 3'):
        assert f'ProgressiveQuantHook: {stage}' in log
    assert 'loss_hint' in log and 'fp_loss_cls' in log and 'acc/top1' in log


def test_remaining_error_messages(tmp_path):
    with pytest.raises(ValueError, match=r"layer_types must be a list from \['Conv2d'"):
        ZhuangQuantHook(layer_types=('Conv1d', ))
    runner = make_runner(tmp_path / 'a', [dict(type='ZhuangQuantHook', include=['^nothing$'])])
    with pytest.warns(UserWarning), pytest.raises(RuntimeError,
                                                  match='ZhuangQuantHook converted no layer'):
        runner.train()
    with pytest.raises(ValueError, match='seed must be an int >= 0'):
        StochasticPrecisionHook(milestones=(1, 2, 3), seed=-1)
    with pytest.raises(ValueError, match='block_pattern must be a regular expression'):
        StochasticPrecisionHook(milestones=(1, 2, 3), block_pattern='(')
    hook = StochasticPrecisionHook(milestones=(1, 2, 3))
    with pytest.raises(RuntimeError, match='StochasticPrecisionHook found no low-bit layer'):
        hook.before_train(_fake_runner(ToyNet()))
    with pytest.raises(ValueError, match='hint_layers must be a list of module names'):
        JointDistillationModel(ToyNet(), hint_layers='backbone')
    with pytest.raises(ValueError, match='hint features must pair up'):
        hint_loss([torch.zeros(1)], [])
    joint = JointDistillationModel(ToyNet(), hint_layers=('fc_cls', ))
    joint.model.loss = lambda inputs, data_samples: dict(loss_cls=inputs.sum())  # skips fc_cls
    with pytest.raises(RuntimeError, match="hint layer 'fc_cls' produced 0 low-bit and 1 FP"):
        joint.loss(*_batch())
