"""Convert an official/timm or mmpretrain DaViT checkpoint to vitzoo's layout.

    python tools/model_converters/davit2vitzoo.py davit-tiny_3rdparty_in1k_20221116-700fdf7d.pth davit-tiny_vitzoo.pth

The result is written only if it fits a model exactly (every tensor, every shape): one of the
model index, found automatically, or the model of --config NAME_OR_CONFIG for your own.
"""
from vitzoo.models.checkpoint import converter_cli

if __name__ == '__main__':
    converter_cli('davit')
