"""Joint knowledge distillation (guided training) of Zhuang et al.: a low-bit model trained
together with a full-precision twin of the same architecture.

Both nets see the same batch. With ``f_l`` the outputs of the modules named in ``hint_layers``
(each a tensor or a tuple of tensors, e.g. FPN levels), the hint loss is::

    R = sum_l 0.5 * ||f_l^fp - f_l^lp||^2 / numel(f_l)

and the paper's two objectives are ``L_lp = loss_lp + lambda R`` and ``L_fp = loss_fp +
lambda R``. :meth:`JointDistillationModel.loss` returns the low-bit losses, the FP losses with an
``fp_`` prefix and ``loss_hint = lambda R``; mmengine sums them into one scalar

    L = loss_lp + loss_fp + lambda R

for one backward and one optimizer step. ``loss_fp`` does not depend on the low-bit weights
and ``loss_lp`` not on the FP ones, so ``dL/dW_lp = dL_lp/dW_lp`` and ``dL/dW_fp = dL_fp/dW_fp``
exactly: each net's parameters get the gradient of their own objective (R counted once gives
each net lambda dR, as in the paper). The optimizer holds both parameter sets; element-wise
optimizers (SGD, Adam, AdamW) then update each net exactly as two separate optimizers with the
same settings would. Give the FP net its own learning rate with
``paramwise_cfg=dict(custom_keys={'fp_model': dict(lr_mult=...)})``. Only a global gradient
clip (``clip_grad``) couples the two nets (one norm over both).

Eval and predict use the low-bit model only. ``state_dict()`` holds the low-bit model's keys
unchanged (a checkpoint is a plain checkpoint of the architecture, plus ``fp_model.*`` keys),
and a checkpoint without ``fp_model.*`` keys (an FP32 checkpoint of the architecture) loads
into *both* nets: the paper starts both from the same pretrained model.
"""
import copy
from typing import Dict, List, Optional, Sequence, Union

import torch
from mmengine.model import BaseModel
from mmengine.registry import MODELS
from torch import Tensor, nn

FP_PREFIX = 'fp_model.'
LP_PREFIX = 'model.'


def hint_loss(fp_features: Sequence[Tensor], lp_features: Sequence[Tensor]) -> Tensor:
    """``R = sum_l 0.5 * ||f_fp - f_lp||^2 / numel``, differentiable in both arguments.

    Args:
        fp_features (Sequence[Tensor]): Features of the full-precision net.
        lp_features (Sequence[Tensor]): The same features of the low-bit net (same shapes).

    Returns:
        Tensor[]: R >= 0 (0 for no features).
    """
    if len(fp_features) != len(lp_features):
        raise ValueError(f'hint features must pair up, but got {len(fp_features)} FP and '
                         f'{len(lp_features)} low-bit tensors')
    total = None
    for f_fp, f_lp in zip(fp_features, lp_features):
        if f_fp.shape != f_lp.shape:
            raise ValueError(f'hint features must have equal shapes, but got '
                             f'{tuple(f_fp.shape)} and {tuple(f_lp.shape)}')
        term = 0.5 * (f_fp.float() - f_lp.float()).pow(2).sum() / max(f_fp.numel(), 1)
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


def _tensors(output) -> List[Tensor]:
    """The tensors of a module output (a tensor, or nested tuples/lists of tensors)."""
    if isinstance(output, Tensor):
        return [output]
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in _tensors(item)]
    return []


@MODELS.register_module()
class JointDistillationModel(BaseModel):
    """A low-bit model and its full-precision twin trained jointly with a hint loss.

    The low-bit model is ``self.model`` (converted by ``ZhuangQuantHook``); ``self.fp_model``
    is a deep copy of it made at construction and never quantized. ``init_weights`` initialises
    the low-bit model and copies its weights into the twin, so both start equal.

    Args:
        architecture (dict | nn.Module): The model config (e.g. mmaction2's ``Recognizer2D``
            or mmdet's ``FasterRCNN``), or the model itself. It must provide
            ``loss(inputs, data_samples)`` and ``forward(inputs, data_samples, mode)``.
        hint_layers (Sequence[str]): Qualified names of the modules whose outputs are hinted,
            in the architecture. Defaults to ('backbone.layer4',): the last ResNet stage of
            mmdet and mmaction2 backbones.
        hint_weight (float): lambda. Defaults to 0.1 (the unofficial code's balance; the
            paper's value was not recovered).
        init_cfg (dict, optional): Unused by the wrapper itself. Defaults to None.

    Examples:
        In a config that inherits a model (``configs/zhuang/``)::

            model = dict(_delete_=True, type='JointDistillationModel',
                         architecture={{_base_.model}}, hint_weight=1.0)
    """

    def __init__(self, architecture: Union[dict, nn.Module],
                 hint_layers: Sequence[str] = ('backbone.layer4', ), hint_weight: float = 0.1,
                 init_cfg: Optional[dict] = None) -> None:
        if isinstance(hint_weight, bool) or not isinstance(hint_weight, (int, float)) or \
                not 0 <= hint_weight < float('inf'):
            raise ValueError(f'hint_weight must be a finite number >= 0, but got {hint_weight!r}')
        if isinstance(hint_layers, str) or not all(isinstance(n, str) for n in hint_layers):
            raise ValueError(f'hint_layers must be a list of module names, but got '
                             f'{hint_layers!r}')
        model = architecture if isinstance(architecture, nn.Module) else \
            MODELS.build(architecture)
        for name in hint_layers:
            try:
                model.get_submodule(name)
            except AttributeError:
                raise ValueError(f'hint_layers must name modules of {type(model).__name__}, but '
                                 f'got {name!r}') from None
        super().__init__(data_preprocessor=getattr(model, 'data_preprocessor', None),
                         init_cfg=init_cfg)
        self.model = model
        self.fp_model = copy.deepcopy(model)
        self.hint_layers = tuple(hint_layers)
        self.hint_weight = float(hint_weight)
        self.register_state_dict_post_hook(_flatten_low_bit_keys)
        self.register_load_state_dict_pre_hook(_nest_keys)

    def init_weights(self) -> None:
        """Initialise the low-bit model and copy it into the FP twin (same start)."""
        if hasattr(self.model, 'init_weights'):
            self.model.init_weights()
        self.fp_model.load_state_dict(self.model.state_dict())

    def forward(self, inputs: Tensor, data_samples: Optional[list] = None,
                mode: str = 'tensor'):
        """``'loss'``: the joint losses (:meth:`loss`); other modes run the low-bit model."""
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        return self.model(inputs, data_samples, mode=mode)

    def loss(self, inputs: Tensor, data_samples: Optional[list]) -> Dict[str, Tensor]:
        """Losses of both nets and the hint loss (see the module docstring)."""
        lp_feats, fp_feats = self._capture(self.model), self._capture(self.fp_model)
        try:
            losses = dict(self.model.loss(inputs, data_samples))
            # The FP net gets its own copy: heads may write into the data samples.
            fp_losses = self.fp_model.loss(inputs, copy.deepcopy(data_samples))
        finally:
            for handle in lp_feats.pop('_handles') + fp_feats.pop('_handles'):
                handle.remove()
        losses.update({f'fp_{k}': v for k, v in fp_losses.items()})
        fp, lp = [], []
        for name in self.hint_layers:
            if len(fp_feats[name]) != len(lp_feats[name]) or not lp_feats[name]:
                raise RuntimeError(f'hint layer {name!r} produced {len(lp_feats[name])} low-bit '
                                   f'and {len(fp_feats[name])} FP tensors; it must run in both '
                                   'losses and return tensors')
            fp += fp_feats[name]
            lp += lp_feats[name]
        losses['loss_hint'] = self.hint_weight * hint_loss(fp, lp)
        return losses

    def _capture(self, net: nn.Module) -> Dict[str, list]:
        """Forward hooks recording the outputs of the hint layers of ``net``."""
        feats: Dict[str, list] = {name: [] for name in self.hint_layers}
        handles = []
        for name in self.hint_layers:
            def record(module, args, output, name=name):
                feats[name].extend(_tensors(output))
            handles.append(net.get_submodule(name).register_forward_hook(record))
        feats['_handles'] = handles
        return feats


def _flatten_low_bit_keys(module, state_dict, prefix, local_metadata) -> None:
    """state_dict post-hook: ``<prefix>model.x`` -> ``<prefix>x`` (the architecture's keys)."""
    for key in [k for k in state_dict if k.startswith(prefix + LP_PREFIX)]:
        state_dict[prefix + key[len(prefix + LP_PREFIX):]] = state_dict.pop(key)


def _nest_keys(module, state_dict, prefix, local_metadata, strict, missing_keys,
               unexpected_keys, error_msgs) -> None:
    """load_state_dict pre-hook: the inverse of :func:`_flatten_low_bit_keys`. Without
    ``fp_model.*`` keys (a checkpoint of the plain architecture) the weights also go to the FP
    twin. Keys of the wrapper's own children (the shared data preprocessor) stay as well."""
    keys = [k for k in state_dict if k.startswith(prefix)]
    plain = not any(k.startswith(prefix + FP_PREFIX) for k in keys)
    for key in keys:
        rest = key[len(prefix):]
        if rest.startswith(FP_PREFIX) or rest.startswith(LP_PREFIX):
            continue
        own = rest.split('.', 1)[0] in module._modules
        value = state_dict[key] if own else state_dict.pop(key)
        state_dict[prefix + LP_PREFIX + rest] = value
        if plain:
            state_dict[prefix + FP_PREFIX + rest] = value
