"""Parameters and FLOPs of configs or model names, under each paper's convention.

    python tools/analysis_tools/get_flops.py CONFIG_OR_NAME [...] [--all] [--shape H [W]]
        [--attn-matmuls {auto,include,exclude}] [--json OUT.json] [--update-index]

FLOPs are multiply-accumulates (MACs; the papers call them FLOPs) of every convolution, linear
layer and matrix multiplication of one forward pass of a 1x3xHxW input, counted by a
TorchDispatchMode with PyTorch's FLOP formulas (eager attention). Element-wise ops, norms,
softmax and pooling are not counted.

Attention matmuls (q@k^T and attn@v, whose operands are both activations) are where the papers
differ: Twins leaves them out of its published FLOPs, DaViT, PiT and LVT count them.
``--attn-matmuls auto`` (the default) follows the paper of the model's backbone family; the
table shows both counts and says which convention each row's FLOPs column uses.

``--update-index`` writes the measured Parameters and FLOPs into the metafiles of the index
entries given (or of every entry with ``--all``).
"""
import argparse
import json
import os.path as osp
import re
import sys

from mmengine.logging import MMLogger

from vitzoo.apis import get_model_complexity
from vitzoo.apis.model import ModelHub


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Parameters and FLOPs (MACs) of vitzoo models')
    parser.add_argument('models', nargs='*', help='config files or model names of the index')
    parser.add_argument('--all', action='store_true', help='every model of the index')
    parser.add_argument('--shape', type=int, nargs='+', help='input H [W] (default: the config\'s test size)')
    parser.add_argument('--attn-matmuls', choices=['auto', 'include', 'exclude'], default='auto',
                        help='count q@k^T and attn@v: as the family\'s paper does (auto), always or never')
    parser.add_argument('--json', help='also write the numbers to this JSON file')
    parser.add_argument('--update-index', action='store_true',
                        help='write the measured Parameters and FLOPs into the metafiles of the given index entries')
    args = parser.parse_args(argv)
    if not args.models and not args.all:
        parser.error('give config files or model names, or --all')
    if args.update_index and (args.shape or args.attn_matmuls != 'auto'):
        parser.error('--update-index records the paper convention at the config size: drop --shape/--attn-matmuls')
    if args.shape and len(args.shape) not in (1, 2):
        parser.error('--shape takes H or H W')
    return args


def update_metafile(path: str, name: str, params: int, flops: int) -> bool:
    """Rewrite the ``Parameters`` and ``FLOPs`` lines of model ``name`` in ``path``."""
    with open(path, encoding='utf-8') as f:
        lines = f.read().split('\n')
    start = next((i for i, line in enumerate(lines) if re.fullmatch(rf'\s*- Name: {re.escape(name)}\s*', line)), None)
    if start is None:
        raise KeyError(f'{name} is not in {path}')
    end = next((i for i in range(start + 1, len(lines)) if re.match(r'\s*- Name: ', lines[i])), len(lines))
    changed = False
    for i in range(start, end):
        for key, value in (('FLOPs', flops), ('Parameters', params)):
            match = re.fullmatch(rf'(\s*){key}: .*', lines[i])
            if match:
                new = f'{match.group(1)}{key}: {value}'
                changed |= new != lines[i]
                lines[i] = new
    with open(path, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines))
    return changed


def main(argv=None):
    args = parse_args(argv)
    MMLogger.get_instance('mmengine').setLevel('WARNING')
    targets = [m.name for m in ModelHub.all()] if args.all else args.models
    shape = None
    if args.shape:
        shape = (args.shape[0], args.shape[-1])
    rows = []
    print('FLOPs = multiply-accumulates of convs, linears and matmuls (PyTorch formulas, eager attention); '
          'element-wise ops, norms, softmax and pooling are not counted.')
    header = f'{"model":<46} {"input":>9} {"params (M)":>10} {"FLOPs (G)":>9} {"w/o attn":>9} {"attn":>7}  convention'
    print(header)
    print('-' * len(header))
    for target in targets:
        c = get_model_complexity(target, shape=shape, attn_matmuls=args.attn_matmuls)
        name = target if ModelHub.has(target) else osp.splitext(osp.basename(target))[0]
        why = f'{c.family} paper' if args.attn_matmuls == 'auto' else f'--attn-matmuls {args.attn_matmuls}'
        rows.append(dict(model=name, input=list(c.input_shape), params=c.params, flops=c.macs,
                         macs_without_attention=c.macs_without_attention, attention_macs=c.attention_macs,
                         include_attention=c.include_attention, family=c.family, convention=c.convention))
        print(f'{name:<46} {c.input_shape[0]:>4}x{c.input_shape[1]:<4} {c.params / 1e6:>10.3f} {c.macs / 1e9:>9.3f} '
              f'{c.macs_without_attention / 1e9:>9.3f} {c.attention_macs / 1e9:>7.3f}  {c.convention} ({why})',
              flush=True)
        if args.update_index:
            if not ModelHub.has(target):
                sys.exit(f'--update-index needs model names of the index, got {target}')
            info = ModelHub.get(target)
            if update_metafile(info.metafile, info.name, c.params, c.macs):
                print(f'  updated {osp.relpath(osp.realpath(info.metafile))}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)


if __name__ == '__main__':
    main()
