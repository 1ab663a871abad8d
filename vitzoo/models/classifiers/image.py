"""Image classifier that loads checkpoints of every layout the vitzoo families know, strictly."""
from typing import List, Optional

import torch
from mmpretrain.models.classifiers import ImageClassifier as MMPretrainImageClassifier

from ...registry import MODELS
from ..checkpoint import convert_state_dict, init_weights_with_pretrained


@MODELS.register_module()
class ImageClassifier(MMPretrainImageClassifier):
    """mmpretrain's ``ImageClassifier`` whose ``load_state_dict`` converts foreign layouts.

    Official, timm and mmpretrain checkpoints of the vitzoo families are converted to vitzoo's
    layout as they load, whichever path loads them (``tools/test.py CONFIG CKPT``, ``load_from``,
    ``--resume``, ``init_cfg=dict(type='Pretrained', ...)`` or a plain ``model.load_state_dict``).
    A ``Pretrained`` ``init_cfg`` of the classifier loads the whole model, strictly unless it says
    ``strict=False``.

    Labels are checked against the head's ``num_classes`` in training and evaluation: a label
    outside ``0..num_classes-1`` raises a ``ValueError`` naming the sample instead of counting as
    a wrong prediction.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_load_state_dict_pre_hook(_convert_on_load)

    def init_weights(self) -> None:
        init_weights_with_pretrained(self, super().init_weights, default_prefix='', what='this model')

    def forward(self, inputs: torch.Tensor, data_samples: Optional[List] = None, mode: str = 'tensor'):
        if data_samples and mode in ('loss', 'predict'):
            check_labels(data_samples, getattr(self.head, 'num_classes', None))
        return super().forward(inputs, data_samples, mode)


def check_labels(data_samples: List, num_classes: Optional[int]) -> None:
    """Raise a ``ValueError`` naming the first sample whose label is ``>= num_classes``."""
    if not num_classes:
        return
    for sample in data_samples:
        label = sample.get('gt_label', None)
        if label is None or label.numel() == 0 or int(label.max()) < num_classes:
            continue
        name = sample.metainfo.get('img_path') or f'sample_idx={sample.metainfo.get("sample_idx", "?")}'
        raise ValueError(f'{name} has the label {int(label.max())}, but the model has num_classes={num_classes} '
                         f'(labels must be in 0..{num_classes - 1}): check the annotation file, or the '
                         "head's num_classes and the data_preprocessor's")


def _convert_on_load(module, state_dict, prefix, *args) -> None:
    local = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    converted = convert_state_dict(local)
    if converted.keys() == local.keys():
        return
    for key in local:
        del state_dict[prefix + key]
    state_dict.update((prefix + k, v) for k, v in converted.items())
