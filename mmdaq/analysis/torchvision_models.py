"""Training-iteration stand-ins built from torchvision, for machines without OpenMMLab.

The end-to-end benchmark times mmdet / mmaction2 models where those are installed. A GPU
machine may have only torch and torchvision (mmcv's CUDA ops need a long build), so these
models of the same families stand in there: torchvision's Faster R-CNN R50-FPN (for mmdet's
Faster R-CNN), ResNet-50 on a batch of frames (TSN's 2D backbone with its segmental consensus
reduced to a mean over frames) and R3D-18 (a 3D-conv video network, for I3D). Converted as
``DAQHook`` does by default: the first conv and the final prediction layers stay FP32.
"""
import re
from typing import Callable, Dict, Tuple

import torch
from torch import Tensor, nn

from ..cnn import convert_model, first_conv

#: name -> final prediction layers kept in FP32 (regexes), as DAQHook's DEFAULT_FP32_HEADS.
_FP32_HEADS = {
    'tv_faster_rcnn': (r'roi_heads\.box_predictor\.', r'rpn\.head\.(cls_logits|bbox_pred)$'),
    'tv_tsn_r50': (r'^fc$', ),
    'tv_r3d_18': (r'^fc$', ),
}
TORCHVISION_MODELS = tuple(_FP32_HEADS)


def convert_like_daq_hook(model: nn.Module, name: str, **options) -> nn.Module:
    """Convert ``model`` to DAQ with the first conv and the prediction layers kept in FP32."""
    exclude = ('^' + re.escape(first_conv(model)) + '$', ) + _FP32_HEADS[name]
    return convert_model(model, exclude=exclude, **options)


def build_torchvision_step(name: str, batch: int, device: torch.device,
                           seed: int = 0) -> Tuple[nn.Module, Callable[[nn.Module], Tensor]]:
    """A randomly initialised model and the loss of one synthetic training batch.

    Args:
        name (str): One of :data:`TORCHVISION_MODELS`.
        batch (int): Images (detection), clips (video).
        device (torch.device): Where model and data live.
        seed (int): Seed of the weights and the data. Defaults to 0.

    Returns:
        tuple: the model (train mode) and ``loss_fn(model) -> Tensor``.
    """
    import torchvision
    if name not in _FP32_HEADS:
        raise ValueError(f'unknown torchvision model {name!r}; choose from {TORCHVISION_MODELS}')
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    if name == 'tv_faster_rcnn':
        model = torchvision.models.detection.fasterrcnn_resnet50_fpn(
            weights=None, weights_backbone=None, num_classes=91, min_size=512, max_size=512)
        images = [torch.rand(3, 512, 512, generator=gen).to(device) for _ in range(batch)]
        targets = []
        for _ in range(batch):
            xy = torch.rand(8, 2, generator=gen) * 400
            wh = torch.rand(8, 2, generator=gen) * 100 + 8
            targets.append(dict(boxes=torch.cat([xy, xy + wh], 1).to(device),
                                labels=torch.randint(1, 91, (8, ), generator=gen).to(device)))

        def loss_fn(m: nn.Module) -> Tensor:
            losses: Dict[str, Tensor] = m(images, targets)
            return sum(losses.values())
    else:
        if name == 'tv_tsn_r50':
            model = torchvision.models.resnet50(num_classes=400)
            frames = 3  # TSN's 3 segments, one frame each, as one batch of images
            x = torch.randn(batch * frames, 3, 224, 224, generator=gen).to(device)
        else:
            model = torchvision.models.video.r3d_18(num_classes=400)
            frames = 1
            x = torch.randn(batch, 3, 16, 112, 112, generator=gen).to(device)
        y = torch.randint(0, 400, (batch, ), generator=gen).to(device)

        def loss_fn(m: nn.Module) -> Tensor:
            logits = m(x).float().view(batch, frames, -1).mean(1)  # segmental consensus
            return nn.functional.cross_entropy(logits, y)
    return model.to(device).train(), loss_fn
