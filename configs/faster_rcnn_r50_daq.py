# Faster R-CNN R50-FPN, 1x schedule on COCO, trained with DAQ INT8 (forward and backward GEMMs).
# The stock mmdet config plus `_base_/daq.py`; data paths as in the stock config
# (data/coco/), override them with --cfg-options.
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', './_base_/daq.py']
