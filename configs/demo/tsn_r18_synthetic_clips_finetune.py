# Continue a partly trained TSN of the synthetic clips for one epoch: the video stand-in of the
# fidelity protocol (docs/fidelity.md).
#
# Trained to the end the stand-in saturates (top-1 0.99-1.00 in every 8-bit method), so the common
# start is the FP32 model after 4 epochs, still learning (top-1 0.59 on the val split, seed 0;
# after 2 epochs it is still at chance), and each method's paired difference to FP32 (same seed:
# same batches) after one more epoch measures how well it keeps learning:
#   python tools/train.py configs/demo/tsn_r18_synthetic_clips.py \
#       --work-dir work_dirs/fidelity/video_base --cfg-options train_cfg.max_epochs=4
#   python tools/train.py configs/demo/tsn_r18_synthetic_clips_finetune.py \
#       --cfg-options load_from=work_dirs/fidelity/video_base/epoch_4.pth randomness.seed=1
# tools/analysis/compare_methods.py does this per method and seed (--finetune-from).
_base_ = './tsn_r18_synthetic_clips.py'

finetune_iters = 75  # one epoch of 1200 clips at batch 16
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=finetune_iters,
                 val_interval=finetune_iters)
# The from-scratch schedule's learning rate after its warm-up, constant (no warm-up: the
# weights are trained).
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0,
                        end=finetune_iters)]
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=finetune_iters, max_keep_ckpts=1,
                                     save_best=None))
log_processor = dict(by_epoch=False)
