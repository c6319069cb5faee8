"""Synthetic datasets for demos and tests (no downloads): numpy and cv2 only."""
from .synthetic_detection import SHAPE_CLASSES, generate_detection_dataset, render_detection_image
from .synthetic_video import VIDEO_CLASSES, clip_label, generate_video_dataset, render_clip

__all__ = [
    'SHAPE_CLASSES', 'VIDEO_CLASSES', 'clip_label', 'generate_detection_dataset',
    'generate_video_dataset', 'render_clip', 'render_detection_image'
]
