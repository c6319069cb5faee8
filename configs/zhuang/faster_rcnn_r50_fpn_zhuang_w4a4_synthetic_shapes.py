# The FP32 detection demo trained as a W4A4 detector with Zhuang et al.'s recipe: progressive
# quantization (2 epochs FP32, then two-stage: 4-bit weights only, then 4-bit weights and
# activations) plus joint knowledge distillation with an FP twin on the backbone features.
# Same data, seed and schedule as `../demo/faster_rcnn_r50_fpn_synthetic_shapes.py`.
_base_ = '../demo/faster_rcnn_r50_fpn_synthetic_shapes.py'

model = dict(
    _delete_=True,
    type='JointDistillationModel',
    architecture={{_base_.model}},
    # The hints stop at the backbone (the last two ResNet stages): the FPN, RPN and RoI head of
    # each net are trained by its own detection losses only.
    hint_layers=('backbone.layer3', 'backbone.layer4'),
    hint_weight=1.0)

custom_hooks = [
    dict(
        type='ZhuangQuantHook',
        bits_w=4,
        bits_a=4,
        # The k-bit weights lie in [-1, 1], far larger than trained float weights; the paper's
        # networks follow every conv by BN, which undoes that scale. FPN, RPN and RoI head layers
        # have no BN: without a scale the 4-bit switch blew the losses up to ~1e5 in a smoke run.
        # max|w| (not in the paper) keeps each layer's output scale; with BN it changes nothing.
        scale_weights=True,
        # The [0, 1] activation clip assumes ReLU outputs. These layers read inputs that can be
        # negative (FPN sums, FPN outputs, RoI features of FPN maps): 4-bit weights, float input.
        weights_only=(r'neck\.fpn_convs', r'rpn_head\.rpn_conv',
                      r'roi_head\.bbox_head\.shared_fcs\.0$')),
    # Epochs 0-1 FP32 (the pretrained model the paper starts from), epoch 2 W4 with float
    # activations (two-stage optimisation, stage 1), epoch 3 W4A4 (stage 2).
    dict(type='ProgressiveQuantHook', bits=(32, 4), milestones=(2, ), activation_begin=3),
]
# One optimizer over both nets: the gradient clip (max_norm 35 in the base) now bounds the norm of
# both nets' gradients together, as if each had about 35 / sqrt(2).
