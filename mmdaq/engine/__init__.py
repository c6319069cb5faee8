"""mmengine integration: DAQHook, DAQStatsHook, the runner helpers of tools/, the stock-model
builder, and the hooks and model wrapper of Zhuang et al.'s low-bit training."""
from .hooks import (DAQHook, DAQStatsHook, ProgressiveQuantHook, StochasticPrecisionHook,
                    ZhuangQuantHook)
from .joint_distillation import JointDistillationModel, hint_loss

__all__ = [
    'DAQHook', 'DAQStatsHook', 'JointDistillationModel', 'ProgressiveQuantHook',
    'StochasticPrecisionHook', 'ZhuangQuantHook', 'hint_loss'
]
