"""Convert an official LVT checkpoint to vitzoo's layout.

Both official files are recognised: the ImageNet model (lvt_imagenet.pth.tar, for
vitzoo.LVTClassifier) and the backbone-only file for dense tasks
(lvt_imagenet_pretrained.pth.tar, for vitzoo.LVT).

    python tools/model_converters/lvt2vitzoo.py lvt_imagenet.pth.tar lvt_imagenet_vitzoo.pth

The result is written only if it fits a model exactly (every tensor, every shape): one of the
model index, found automatically, or the model of --config NAME_OR_CONFIG for your own.
"""
from vitzoo.models.checkpoint import converter_cli

if __name__ == '__main__':
    converter_cli('lvt')
