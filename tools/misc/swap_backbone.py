"""Swap a vitzoo backbone into any mmpretrain, mmseg or mmdet config.

    python tools/misc/swap_backbone.py SRC_CONFIG BACKBONE -o NEW_CONFIG [--checkpoint PATH_OR_URL]
        [--out-indices I ...] [--backbone-args KEY=VALUE ...] [--recipe] [--overwrite]

SRC_CONFIG: a config file, ``pkg::path`` of an installed toolbox's configs or vitzoo's
(``mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py``, ``mmseg::upernet/...``,
``mmpretrain::resnet/resnet50_8xb32_in1k.py``, ``vitzoo::segformer/...``) or a model name of the
index. BACKBONE: a model name of vitzoo's index (``davit-small_3rdparty_in1k``: its ImageNet
weights) or ``TYPE:ARCH`` (``vitzoo.SVT:base``).

NEW_CONFIG inherits SRC_CONFIG through ``_base_`` and sets the backbone (``_delete_=True``, with
``init_cfg`` Pretrained), the widths (and levels) of the neck or heads that read its maps, and
names the family's optimizer recipe (applied with ``--recipe``). It is written only after its model
built, loaded its weights strictly and ran a loss step and a prediction on a random batch; a
source whose neck or head cannot take the new maps is refused with the config key at fault.
See :mod:`vitzoo.apis.swap`.
"""
import argparse
import os.path as osp
import sys

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, REPO)

from mmengine.config import DictAction  # noqa: E402

from vitzoo.apis.swap import SwapError, swap_backbone  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src_config', help='config file, pkg::path (mmpretrain, mmseg, mmdet, vitzoo) or model name')
    parser.add_argument('backbone', help="model name of vitzoo's index, or TYPE:ARCH (vitzoo.SVT:base)")
    parser.add_argument('-o', '--output', required=True, help='the new config file (.py)')
    parser.add_argument('--checkpoint', help="backbone weights (path or http(s) URL) instead of the index's")
    parser.add_argument('--out-indices', type=int, nargs='+',
                        help="the backbone's outputs (default: those at the source backbone's strides)")
    parser.add_argument('--backbone-args', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='other backbone arguments, e.g. drop_path_rate=0.3 mask_padding=True')
    parser.add_argument('--recipe', action='store_true',
                        help="write the family's optimizer settings (by default they are a comment)")
    parser.add_argument('--overwrite', action='store_true', help='replace NEW_CONFIG if it exists')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        result = swap_backbone(args.src_config, args.backbone, args.output, checkpoint=args.checkpoint,
                               out_indices=args.out_indices, backbone_args=args.backbone_args,
                               recipe=args.recipe, overwrite=args.overwrite)
    except SwapError as err:
        raise SystemExit(f'swap_backbone: {err}\nNothing written.') from err
    for warning in result.warnings:
        print(f'warning: {warning}', file=sys.stderr)
    print(f'checked: {result.check}')
    for change in result.changes:
        print(f'  {change}')
    print(f'wrote {result.path}')


if __name__ == '__main__':
    main()
