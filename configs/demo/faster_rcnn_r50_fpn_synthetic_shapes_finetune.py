# Continue a trained Faster R-CNN of the synthetic shapes for 50 iterations: the common start of
# the fidelity protocol (docs/fidelity.md) and of `make demo`.
#
# Every method continues from the same FP32 checkpoint, so a method's paired difference to FP32
# (same seed: same batches) is far less noisy than two runs from scratch:
#   python tools/train.py configs/demo/faster_rcnn_r50_fpn_synthetic_shapes_finetune.py \
#       --cfg-options load_from=work_dirs/base/epoch_4.pth randomness.seed=1
# tools/analysis/compare_methods.py does this per method and seed (--finetune-from).
_base_ = './faster_rcnn_r50_fpn_synthetic_shapes.py'

finetune_iters = 50
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=finetune_iters,
                 val_interval=finetune_iters)
# The learning rate of the from-scratch schedule's middle epochs, stepped down for the second
# half as its last epoch is; no warm-up (the weights are trained).
param_scheduler = [
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=finetune_iters,
         milestones=[finetune_iters // 2], gamma=0.1)
]
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=finetune_iters, max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
