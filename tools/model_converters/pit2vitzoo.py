"""Convert an official or timm PiT checkpoint (plain or distilled) to vitzoo's layout.

    python tools/model_converters/pit2vitzoo.py pit_s_809.pth pit_s_vitzoo.pth

The result is written only if it fits a model exactly (every tensor, every shape): one of the
model index, found automatically, or the model of --config NAME_OR_CONFIG for your own.
"""
from vitzoo.models.checkpoint import converter_cli

if __name__ == '__main__':
    converter_cli('pit')
