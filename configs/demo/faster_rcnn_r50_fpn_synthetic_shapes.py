# Faster R-CNN R50-FPN trained from scratch on the synthetic shapes: the FP32 CPU demo.
#
# Generate the data first (seeded, about 2 s; a second run writes nothing):
#   python tools/data/generate_synthetic.py detection --out data/synthetic_shapes
# Paths are relative to the working directory: run from the repository root.
#
# The model is the stock one (R50-FPN, RPN, Shared2FC RoI head) apart from the number of classes
# and the from-scratch backbone settings; everything else that differs from the COCO 1x config
# makes training fit about 10 minutes on 2 CPU cores. Every change is commented.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'

# mmdaq is importable once installed (tools/install.sh); importing it also applies the
# compatibility fixes (safe checkpoint loading) that resuming needs.
custom_imports = dict(imports=['mmdaq'], allow_failed_imports=False)

data_root = 'data/synthetic_shapes/'
classes = ('rectangle', 'outlined_rectangle', 'ellipse', 'triangle', 'cross')
metainfo = dict(classes=classes,
                palette=[(220, 20, 60), (0, 130, 200), (60, 180, 75), (245, 130, 48),
                         (145, 30, 180)])
image_scale = (128, 128)  # the generated size: no resizing, 1/65 of COCO's 1333x800 pixels

model = dict(
    backbone=dict(
        frozen_stages=-1,  # from scratch: every stage must learn
        norm_eval=False,  # from scratch: BN statistics must be learned too
        init_cfg=None),  # no pretrained weights can be downloaded here
    rpn_head=dict(anchor_generator=dict(
        # Objects are 25-70 px: anchors of 16-256 px (scale 4) cover them on P2-P4.
        # The stock scale 8 (32-512 px) leaves the smallest shapes with weak anchor matches.
        scales=[4])),
    roi_head=dict(bbox_head=dict(num_classes=len(classes))),
    train_cfg=dict(
        # At most 4 objects per image: far fewer samples than COCO's 256/512 suffice, and the
        # RoI head's Linear layers cost as much as the backbone on CPU (see ENVIRONMENT.md).
        rpn=dict(sampler=dict(num=64)),
        rpn_proposal=dict(nms_pre=500, max_per_img=100),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=50)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=8,  # small images: a bigger batch also steadies the from-scratch BN statistics
    num_workers=0,  # decoding 128 px JPEGs is cheap; worker processes would take a core
    persistent_workers=False,  # must be False without workers
    batch_sampler=None,  # all images have one aspect ratio
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=16),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

# A fixed seed, so the FP32 and INT8 twins start from the same weights and see the batches in
# the same order (`--cfg-options randomness.seed=K` for repeats, as tools/analysis/
# compare_methods.py does).
randomness = dict(seed=0)

# 1000 images / batch 8 = 125 iterations per epoch.
train_cfg = dict(max_epochs=4, val_interval=4)
param_scheduler = [
    # Short warm-up (the stock 500 iterations would be the whole run).
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=4, by_epoch=True, milestones=[3], gamma=0.1)
]
optim_wrapper = dict(
    # From scratch in 500 iterations AdamW learns faster than the stock SGD: with this schedule
    # SGD (lr 0.02, momentum 0.9) reached bbox mAP 0.46 on val, AdamW 0.59.
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-3, weight_decay=1e-4),
    clip_grad=dict(max_norm=35, norm_type=2))  # from scratch, early losses spike

default_hooks = dict(
    logger=dict(interval=20),  # the run is only a few hundred iterations
    checkpoint=dict(interval=4, max_keep_ckpts=1),
    visualization=dict(draw=False))
log_processor = dict(window_size=20)
env_cfg = dict(dist_cfg=dict(backend='gloo'))  # CPU: no NCCL
