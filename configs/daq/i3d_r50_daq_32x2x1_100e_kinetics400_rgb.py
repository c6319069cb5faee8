# I3D R50 (Conv3d backbone, 32x2x1 sampling) on Kinetics-400, DAQ INT8 training.
_base_ = [
    'mmaction::recognition/i3d/i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e_kinetics400-rgb.py',
    '../_base_/daq.py'
]
