"""Generate a small, deterministic scene dataset in the real ADE20K and COCO-panoptic formats.

    python tools/dataset_converters/toy_dense_dataset.py data/toy_dense [--num-train 64]
        [--num-val 16] [--width 128] [--height 96] [--seed 0]

Every scene has three *stuff* regions (sky above a wavy horizon; grass and road below it, split
at a random column) and one to four *things* (people as tall red boxes, cars as wide yellow boxes
with dark windows, balls as magenta discs) that may occlude each other, plus, in half the scenes,
a patch of random clutter that carries no label. Colours are jittered and noisy, so the classes
are easy but not trivial to learn.

The same scenes are written twice, in the layouts mmseg and mmdet read:

* ``<out>/ade/ADEChallengeData2016/images/{training,validation}/*.jpg`` and
  ``annotations/{training,validation}/*.png``: single-channel labels holding the real ADE20K ids
  (``index in ADE20KDataset.METAINFO['classes'] + 1``: sky 3, road 7, grass 10, person 13,
  car 21, ball 120) and 0 for "other" (the clutter), as ``reduce_zero_label`` expects.
* ``<out>/coco/{train2017,val2017}/*.jpg``, ``annotations/panoptic_{train,val}2017.json`` and
  ``annotations/panoptic_{train,val}2017/*.png``: RGB-encoded segment ids
  (``id = R + 256 G + 256^2 B``, here ``category_id + 256 * k``), ``segments_info`` with
  ``id``, ``category_id``, ``iscrowd``, ``bbox`` (x, y, w, h of the visible mask) and ``area``,
  and ``categories`` with the real COCO ids and names (person 1, car 3, sports ball 37, road
  149, sky-other-merged 187, grass-merged 193) and ``isthing``; VOID (id 0) on the clutter.
* ``<out>/coco/annotations/instances_{train,val}2017.json``: the things of the panoptic
  annotations in COCO's detection layout (box, area and RLE mask of the visible part of each
  thing; the three thing categories), for detectors and instance segmentation (Mask R-CNN,
  RetinaNet). A dataset generated before these files existed gets them on the next run.

Configs use them with ``metainfo=dict(classes=...)`` (see ``ADE20K_CLASSES``,
``COCO_THING_CLASSES``, ``COCO_STUFF_CLASSES`` below and
``configs/*/..._toy-*.py``). The output depends only on the settings: an existing directory
with the same settings is left as it is, any other non-empty directory is refused.
"""
import argparse
import json
import os
import os.path as osp
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image

from vitzoo.utils.generated import earlier_export, mark_export

# name, ADE20K id (1-based; 0 = other), COCO-panoptic category id, COCO name, isthing, RGB
CATEGORIES = [
    ('person', 13, 1, 'person', 1, (200, 40, 40)),
    ('car', 21, 3, 'car', 1, (230, 200, 30)),
    ('ball', 120, 37, 'sports ball', 1, (200, 50, 200)),
    ('road', 7, 149, 'road', 0, (110, 110, 110)),
    ('sky', 3, 187, 'sky-other-merged', 0, (90, 150, 230)),
    ('grass', 10, 193, 'grass-merged', 0, (60, 160, 60)),
]
THINGS = [c for c in CATEGORIES if c[4]]
STUFF = [c for c in CATEGORIES if not c[4]]
# class lists in the order the datasets' metainfo needs (mmdet: things first, then stuff)
ADE20K_CLASSES = tuple(c[0] for c in CATEGORIES)
COCO_THING_CLASSES = tuple(c[3] for c in THINGS)
COCO_STUFF_CLASSES = tuple(c[3] for c in STUFF)
SPLITS = (('training', 'train2017'), ('validation', 'val2017'))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('out_dir', help='output directory, e.g. data/toy_dense')
    parser.add_argument('--num-train', type=int, default=64, help='training scenes (default 64)')
    parser.add_argument('--num-val', type=int, default=16, help='validation scenes (default 16)')
    parser.add_argument('--width', type=int, default=128, help='image width (default 128)')
    parser.add_argument('--height', type=int, default=96, help='image height (default 96)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the scenes (default 0)')
    return parser.parse_args()


def _colour(rng: np.random.Generator, base: Tuple[int, int, int]) -> np.ndarray:
    return np.clip(np.array(base) + rng.integers(-25, 26, size=3), 0, 255)


def render_scene(rng: np.random.Generator, width: int, height: int) -> Tuple[np.ndarray, np.ndarray, list]:
    """One scene: the RGB image, a map of segment indices (-1 = unlabeled) and the segments.

    Segment ``k`` of the returned list is ``(category, index)``; index 0.. are stuff, then things.
    """
    ys, xs = np.mgrid[:height, :width]
    image = np.zeros((height, width, 3), np.float64)
    seg = np.full((height, width), -1, np.int64)
    segments = []

    horizon = height * rng.uniform(0.3, 0.6) + rng.uniform(2, 6) * np.sin(xs / rng.uniform(6, 16)
                                                                           + rng.uniform(0, 6.3))
    split = rng.integers(width // 4, 3 * width // 4)
    road_left = rng.random() < 0.5
    sky = ys < horizon
    road = ~sky & ((xs < split) == road_left)
    regions = {'sky': sky, 'road': road, 'grass': ~sky & ~road}
    for cat in STUFF:
        mask = regions[cat[0]]
        image[mask] = _colour(rng, cat[5])
        seg[mask] = len(segments)
        segments.append(cat)
    image += (ys / height * 30.0)[..., None] * (1 if rng.random() < 0.5 else -1)  # a gradient

    for _ in range(rng.integers(1, 5)):
        cat = THINGS[rng.integers(len(THINGS))]
        colour = _colour(rng, cat[5])
        if cat[0] == 'ball':
            r = rng.uniform(5, 12)
            cx, cy = rng.uniform(r, width - r), rng.uniform(r, height - r)
            mask = (xs - cx)**2 + (ys - cy)**2 <= r * r
            paint = mask
        else:
            if cat[0] == 'person':
                h = rng.integers(18, 40)
                w = max(4, int(h * rng.uniform(0.35, 0.5)))
            else:
                w = rng.integers(24, 50)
                h = max(8, int(w * rng.uniform(0.4, 0.55)))
            x0, y0 = rng.integers(0, width - w), rng.integers(0, height - h)
            mask = (xs >= x0) & (xs < x0 + w) & (ys >= y0) & (ys < y0 + h)
            paint = mask
            if cat[0] == 'car':  # dark windows in the upper half
                windows = mask & (ys < y0 + h // 2) & (ys >= y0 + 2) & ((xs - x0) % 10 >= 3)
                image[windows] = 40
                paint = mask & ~windows
        image[paint] = colour
        seg[mask] = len(segments)
        segments.append(cat)

    if rng.random() < 0.5:  # clutter: unlabeled noise
        w, h = rng.integers(6, 15, size=2)
        x0, y0 = rng.integers(0, width - w), rng.integers(0, height - h)
        image[y0:y0 + h, x0:x0 + w] = rng.uniform(0, 255, size=(h, w, 3))
        seg[y0:y0 + h, x0:x0 + w] = -1

    image += rng.normal(0, 8, size=image.shape)
    return np.clip(image, 0, 255).round().astype(np.uint8), seg, segments


def _bbox(mask: np.ndarray) -> List[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def write_scene(index: int, image: np.ndarray, seg: np.ndarray, segments: list, ade_split: str,
                coco_split: str, ade_root: str, coco_root: str, image_id: int) -> Tuple[dict, dict]:
    """Write one scene in both formats; returns its COCO ``images`` and ``annotations`` entries."""
    height, width = seg.shape
    ade_name = f'ADE_{"train" if ade_split == "training" else "val"}_{index + 1:08d}'
    Image.fromarray(image).save(osp.join(ade_root, 'images', ade_split, ade_name + '.jpg'), quality=95)
    label = np.zeros(seg.shape, np.uint8)
    for k, cat in enumerate(segments):
        label[seg == k] = cat[1]
    Image.fromarray(label).save(osp.join(ade_root, 'annotations', ade_split, ade_name + '.png'))

    coco_name = f'{image_id:012d}'
    Image.fromarray(image).save(osp.join(coco_root, coco_split, coco_name + '.jpg'), quality=95)
    ids = np.zeros(seg.shape, np.int64)
    segments_info = []
    for k, cat in enumerate(segments):
        mask = seg == k
        if not mask.any():  # fully occluded
            continue
        segment_id = cat[2] + 256 * (k + 1)
        ids[mask] = segment_id
        segments_info.append(dict(id=int(segment_id), category_id=cat[2], iscrowd=0, bbox=_bbox(mask),
                                  area=int(mask.sum())))
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 256**2], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(osp.join(coco_root, 'annotations', f'panoptic_{coco_split}', coco_name + '.png'))
    return (dict(id=image_id, file_name=coco_name + '.jpg', width=width, height=height),
            dict(image_id=image_id, file_name=coco_name + '.png', segments_info=segments_info))


def generate(out_dir: str, num_train: int = 64, num_val: int = 16, width: int = 128, height: int = 96,
             seed: int = 0) -> Dict[str, int]:
    """Write the dataset under ``out_dir``; returns the number of scenes per split."""
    settings = dict(num_train=num_train, num_val=num_val, width=width, height=height, seed=seed, version=1)
    counts = earlier_export(out_dir, 'toy_dense.json', settings, 'a toy dense dataset')
    if counts is not None:
        write_instances(osp.join(out_dir, 'coco'))
        return counts
    if min(width, height) < 64:
        raise SystemExit('--width and --height must be at least 64 (the scenes need room for their objects)')

    ade_root = osp.join(out_dir, 'ade', 'ADEChallengeData2016')
    coco_root = osp.join(out_dir, 'coco')
    categories = [dict(id=c[2], name=c[3], supercategory=c[3], isthing=c[4], color=list(c[5])) for c in CATEGORIES]
    counts, image_id = {}, 0
    for split_index, ((ade_split, coco_split), num) in enumerate(zip(SPLITS, (num_train, num_val))):
        for path in (osp.join(ade_root, 'images', ade_split), osp.join(ade_root, 'annotations', ade_split),
                     osp.join(coco_root, coco_split), osp.join(coco_root, 'annotations', f'panoptic_{coco_split}')):
            os.makedirs(path, exist_ok=True)
        images, annotations = [], []
        for i in range(num):
            rng = np.random.default_rng([seed, split_index, i])
            image_id += 1
            img, ann = write_scene(i, *render_scene(rng, width, height), ade_split, coco_split, ade_root,
                                   coco_root, image_id)
            images.append(img)
            annotations.append(ann)
        with open(osp.join(coco_root, 'annotations', f'panoptic_{coco_split}.json'), 'w') as f:
            json.dump(dict(info=dict(description='vitzoo toy dense dataset', settings=settings), licenses=[],
                           images=images, annotations=annotations, categories=categories), f)
        counts[coco_split] = num
    write_instances(coco_root)
    mark_export(out_dir, 'toy_dense.json', settings, counts)
    return counts


def write_instances(coco_root: str) -> None:
    """``annotations/instances_<split>.json`` from the panoptic annotations of each split (the things only);
    splits that have it are left as they are."""
    from panopticapi.utils import rgb2id
    from pycocotools import mask as mask_utils
    for _, split in SPLITS:
        path = osp.join(coco_root, 'annotations', f'instances_{split}.json')
        if osp.exists(path):
            continue
        with open(osp.join(coco_root, 'annotations', f'panoptic_{split}.json')) as f:
            panoptic = json.load(f)
        things = {c['id'] for c in panoptic['categories'] if c['isthing']}
        annotations = []
        for ann in panoptic['annotations']:
            png = osp.join(coco_root, 'annotations', f'panoptic_{split}', ann['file_name'])
            ids = rgb2id(np.array(Image.open(png)))
            for seg in ann['segments_info']:
                if seg['category_id'] not in things:
                    continue
                rle = mask_utils.encode(np.asfortranarray((ids == seg['id']).astype(np.uint8)))
                annotations.append(dict(id=len(annotations) + 1, image_id=ann['image_id'],
                                        category_id=seg['category_id'], iscrowd=0, bbox=seg['bbox'],
                                        area=seg['area'], segmentation=dict(size=rle['size'],
                                                                            counts=rle['counts'].decode('ascii'))))
        instances = dict(info=panoptic['info'], licenses=[], images=panoptic['images'], annotations=annotations,
                         categories=[c for c in panoptic['categories'] if c['isthing']])
        with open(path + '.part', 'w') as f:
            json.dump(instances, f)
        os.replace(path + '.part', path)


def main():
    args = parse_args()
    counts = generate(args.out_dir, args.num_train, args.num_val, args.width, args.height, args.seed)
    print(f'toy dense dataset in {args.out_dir}: {counts["train2017"]} training and {counts["val2017"]} '
          f'validation scenes (ADE20K layout under ade/ADEChallengeData2016, COCO panoptic and instances under coco/)')


if __name__ == '__main__':
    main()
