# TSN R50 (1x1x3 sampling, 100 epochs) on Kinetics-400, DAQ INT8 training.
_base_ = [
    'mmaction::recognition/tsn/tsn_imagenet-pretrained-r50_8xb32-1x1x3-100e_kinetics400-rgb.py',
    '../_base_/daq.py'
]
