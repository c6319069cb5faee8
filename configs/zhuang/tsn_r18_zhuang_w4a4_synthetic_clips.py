# The FP32 video demo trained as a 4-bit (W4A4) network with the recipe of Zhuang et al.
# (CVPR 2018): progressive bit-width decrease (32 -> 8 -> 4) plus guided training / joint
# knowledge distillation with a full-precision twin. Same data, seed and schedule as
# `../demo/tsn_r18_synthetic_clips.py`. See README.md for every choice.
_base_ = '../demo/tsn_r18_synthetic_clips.py'

# The low-bit TSN and its FP twin (same architecture, same start), hinted on the outputs of the
# last two ResNet stages (the notes' reading of the unofficial code: layer3 and layer4).
model = dict(
    _delete_=True,
    type='JointDistillationModel',
    architecture={{_base_.model}},
    hint_layers=('backbone.layer3', 'backbone.layer4'),
    hint_weight=1.0)  # lambda; the paper's value was not recovered (see README)

custom_hooks = [
    # W4A4 target; the stem conv and the classifier stay FP32 (DoReFa convention). Every other
    # conv input of a ResNet is a ReLU output, so the [0, 1] activation clip applies to all.
    dict(type='ZhuangQuantHook', bits_w=4, bits_a=4),
    # From scratch, the "pretrained FP model" of the paper is the first 4 epochs at 32 bits;
    # then 8 bits (2 epochs), then the 4-bit target for the remaining 6 epochs.
    dict(type='ProgressiveQuantHook', bits=(32, 8, 4), milestones=(4, 6)),
]
