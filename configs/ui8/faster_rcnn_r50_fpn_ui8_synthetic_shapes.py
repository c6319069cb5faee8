# The FP32 detection demo trained with UI8 (Zhu et al., CVPR 2020): per-tensor INT8 gradients
# with direction-sensitive clipping and stochastic rounding, and the per-layer learning-rate
# factor (DCLRS). Same data, seed and schedule as `../demo/faster_rcnn_r50_fpn_synthetic_shapes.py`.
_base_ = '../demo/faster_rcnn_r50_fpn_synthetic_shapes.py'
custom_hooks = [
    dict(
        type='DAQHook',
        method='ui8',
        update_interval=100,  # iterations between clip searches (the paper's period, ~100)
        alpha=20.0,  # DCLRS: lr factor max(exp(-alpha * cosine distance), beta)
        beta=0.1,
        seed=0,  # stochastic rounding of the gradients, reproducible
    )
]
