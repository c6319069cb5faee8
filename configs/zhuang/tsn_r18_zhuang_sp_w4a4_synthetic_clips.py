# The FP32 video demo trained as a W4A4 network with the one-stage alternative of Zhuang et al.'s
# TPAMI extension: stochastic precision (a random share of the ResNet blocks is quantized each
# iteration, rising 50 % -> 75 % -> 87.5 % -> 100 %) plus joint knowledge distillation.
_base_ = './tsn_r18_zhuang_w4a4_synthetic_clips.py'

custom_hooks = [
    dict(type='ZhuangQuantHook', bits_w=4, bits_a=4),
    # Units: the 8 residual blocks of ResNet-18 (their convs and downsample convs together);
    # epochs 0-2 at 50 %, 3-5 at 75 %, 6-8 at 87.5 %, 9-11 fully quantized.
    dict(type='StochasticPrecisionHook', ratios=(0.5, 0.75, 0.875, 1.0), milestones=(3, 6, 9),
         granularity='block', seed=0),
]
