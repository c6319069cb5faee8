# The FP32 detection demo trained with ShiftQuant (Guo, Liu et al., arXiv 2411.10948): 4-bit
# weights, activations and gradients with power-of-two group scales along each GEMM's reduction
# axis (8 groups), stochastic rounding of the gradients, and L1 batch normalization in the
# backbone. Same data, seed and schedule as `../demo/faster_rcnn_r50_fpn_synthetic_shapes.py`.
_base_ = '../demo/faster_rcnn_r50_fpn_synthetic_shapes.py'
model = dict(backbone=dict(norm_cfg=dict(type='L1BN', requires_grad=True)))  # mmdaq.cnn.l1_norm
custom_hooks = [
    dict(
        type='DAQHook',
        method='shiftquant',
        weight_bits=4,  # the paper's ResNet setting
        input_bits=4,
        grad_bits=4,
        num_groups=8,  # scales s0 .. s0 / 128
        seed=0,  # stochastic rounding of the gradients, reproducible
    )
]
