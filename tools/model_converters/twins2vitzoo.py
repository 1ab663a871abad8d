"""Convert an official/timm or mmpretrain Twins (PCPVT/SVT) checkpoint to vitzoo's layout.

    python tools/model_converters/twins2vitzoo.py pcpvt_small.pth pcpvt_small_vitzoo.pth

The result is written only if it fits a model exactly (every tensor, every shape): one of the
model index, found automatically, or the model of --config NAME_OR_CONFIG for your own.
"""
from vitzoo.models.checkpoint import converter_cli

if __name__ == '__main__':
    converter_cli('twins')
