# The FP32 continuation (same checkpoint, seed and schedule) trained with DAQ INT8.
# Ablations switch the hook's options, e.g. `--cfg-options custom_hooks.0.forward=fp32` (FP32
# forward, DAQ backward) or `custom_hooks.0.weight_scale=per_channel`.
_base_ = './faster_rcnn_r50_fpn_synthetic_shapes_finetune.py'
custom_hooks = [dict(type='DAQHook', method='daq')]
