# Mask R-CNN R50-FPN, 1x on COCO, DAQ INT8 training.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', '../_base_/daq.py']
