# TSM R50 (1x1x8 sampling, 50 epochs) on Kinetics-400, DAQ INT8 training.
_base_ = [
    'mmaction::recognition/tsm/tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_kinetics400-rgb.py',
    '../_base_/daq.py'
]
