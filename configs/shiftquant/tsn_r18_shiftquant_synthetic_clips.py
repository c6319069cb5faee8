# The FP32 video demo trained with ShiftQuant and L1 batch normalization (see
# `faster_rcnn_r50_fpn_shiftquant_synthetic_shapes.py`). Same data, seed and schedule as
# `../demo/tsn_r18_synthetic_clips.py`.
_base_ = '../demo/tsn_r18_synthetic_clips.py'
model = dict(backbone=dict(norm_cfg=dict(type='L1BN', requires_grad=True)))  # mmdaq.cnn.l1_norm
custom_hooks = [
    dict(type='DAQHook', method='shiftquant', weight_bits=4, input_bits=4, grad_bits=4,
         num_groups=8, seed=0)
]
