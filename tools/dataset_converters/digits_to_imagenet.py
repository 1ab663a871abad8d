"""Export scikit-learn's handwritten digits to the ImageNet folder layout mmpretrain reads.

    python tools/dataset_converters/digits_to_imagenet.py data/digits [--size 32] [--val-fraction 0.2]

Writes ``<out>/{train,val}/<digit>/<index>.png`` (8x8 grey images upscaled to ``--size``, saved
as RGB) and ``<out>/meta/{train,val}.txt`` plus ``<out>/classes.txt``. The split is stratified
and fixed by ``--seed``, so the held-out images never change. An existing, complete export is
left as it is; an output directory holding anything else is refused.
"""
import argparse
import os
import os.path as osp

import numpy as np
from PIL import Image

from vitzoo.utils.generated import earlier_export, mark_export

CLASSES = [str(d) for d in range(10)]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('out_dir', help='output directory, e.g. data/digits')
    parser.add_argument('--size', type=int, default=32, help='side of the exported images (default 32)')
    parser.add_argument('--val-fraction', type=float, default=0.2, help='held-out share per class')
    parser.add_argument('--seed', type=int, default=0, help='seed of the split')
    return parser.parse_args()


def split_indices(labels: np.ndarray, val_fraction: float, seed: int):
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        n_val = int(round(len(idx) * val_fraction))
        val += idx[:n_val].tolist()
        train += idx[n_val:].tolist()
    return sorted(train), sorted(val)


def export(out_dir: str, size: int = 32, val_fraction: float = 0.2, seed: int = 0) -> dict:
    """Write the dataset; returns the number of images per split."""
    from sklearn.datasets import load_digits
    settings = dict(size=size, val_fraction=val_fraction, seed=seed)
    counts = earlier_export(out_dir, 'export.json', settings, 'a digits export')
    if counts is not None:
        return counts
    digits = load_digits()
    images = (digits.images / 16.0 * 255).round().astype(np.uint8)
    train, val = split_indices(digits.target, val_fraction, seed)
    counts = {}
    os.makedirs(osp.join(out_dir, 'meta'))
    for split, indices in (('train', train), ('val', val)):
        lines = []
        for i in indices:
            label = int(digits.target[i])
            rel = f'{split}/{label}/{i:04d}.png'
            os.makedirs(osp.join(out_dir, split, str(label)), exist_ok=True)
            Image.fromarray(images[i]).resize((size, size), Image.BICUBIC).convert('RGB').save(
                osp.join(out_dir, rel))
            lines.append(f'{label}/{i:04d}.png {label}')
        with open(osp.join(out_dir, 'meta', f'{split}.txt'), 'w') as f:
            f.write('\n'.join(lines) + '\n')
        counts[split] = len(indices)
    with open(osp.join(out_dir, 'classes.txt'), 'w') as f:
        f.write('\n'.join(CLASSES) + '\n')
    mark_export(out_dir, 'export.json', settings, counts)
    return counts


def main():
    args = parse_args()
    counts = export(args.out_dir, args.size, args.val_fraction, args.seed)
    print(f'digits in ImageNet layout at {args.out_dir}: {counts["train"]} train, {counts["val"]} val images')


if __name__ == '__main__':
    main()
