# The FP32 video demo trained with UI8 (see `faster_rcnn_r50_fpn_ui8_synthetic_shapes.py`).
# DCLRS scales gradients, which equals scaling the learning rate for SGD only; the demo's AdamW
# largely undoes a gradient scale, so UI8 here is its clipping and rounding without the factor.
_base_ = '../demo/tsn_r18_synthetic_clips.py'
custom_hooks = [dict(type='DAQHook', method='ui8', update_interval=100, lr_scaling=False, seed=0)]
