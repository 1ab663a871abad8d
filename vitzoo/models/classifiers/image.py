"""Image classifier that loads checkpoints of every layout the vitzoo families know."""
from mmpretrain.models.classifiers import ImageClassifier as MMPretrainImageClassifier

from ...registry import MODELS
from ..checkpoint import convert_state_dict


@MODELS.register_module()
class ImageClassifier(MMPretrainImageClassifier):
    """mmpretrain's ``ImageClassifier`` whose ``load_state_dict`` converts foreign layouts.

    Official, timm and mmpretrain checkpoints of the vitzoo families are converted to vitzoo's
    layout as they load, whichever path loads them (``tools/test.py CONFIG CKPT``, ``load_from``,
    ``--resume`` or a plain ``model.load_state_dict``).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_load_state_dict_pre_hook(_convert_on_load)


def _convert_on_load(module, state_dict, prefix, *args) -> None:
    local = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    converted = convert_state_dict(local)
    if converted.keys() == local.keys():
        return
    for key in local:
        del state_dict[prefix + key]
    state_dict.update((prefix + k, v) for k, v in converted.items())
