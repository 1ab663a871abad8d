"""Random inputs and targets for a model of any of the toolboxes, to run its loss and predict steps.

Classifiers (mmpretrain) get class labels; segmentors (mmseg) a label map; detectors (mmdet) three
boxes with box-shaped masks, and a stuff/thing label map when the model has a semantic head
(Panoptic FPN). The inputs are already normalised (standard normal), so they go to the model
directly, without its data preprocessor.
"""
from typing import List, Tuple

import torch


def random_batch(model, scope: str, batch_size: int, height: int, width: int,
                 seed: int = 0) -> Tuple[torch.Tensor, List]:
    """``(inputs, data_samples)`` for ``model(inputs, data_samples, mode='loss' | 'predict')``."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(batch_size, 3, height, width, generator=generator)
    if scope == 'mmpretrain':
        from mmpretrain.structures import DataSample
        num_classes = model.head.num_classes
        samples = [DataSample().set_gt_label(torch.randint(0, num_classes, (1, ), generator=generator))
                   for _ in range(batch_size)]
        return inputs, samples
    from mmengine.structures import InstanceData, PixelData
    h, w = height, width
    meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), batch_input_shape=(h, w),
                scale_factor=(1., 1.), padding_size=[0, 0, 0, 0], img_id=0)
    samples = []
    for _ in range(batch_size):
        if scope == 'mmseg':
            from mmseg.structures import SegDataSample
            sample = SegDataSample(metainfo=meta)
            heads = model.decode_head if isinstance(model.decode_head, torch.nn.ModuleList) else [model.decode_head]
            num_classes = heads[-1].num_classes
            sample.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, h, w), generator=generator))
        elif scope == 'mmdet':
            from mmdet.structures import DetDataSample
            from mmdet.structures.mask import BitmapMasks
            sample = DetDataSample(metainfo=meta)
            xy = torch.rand(3, 2, generator=generator) * torch.tensor([w, h]) * 0.5
            wh = (torch.rand(3, 2, generator=generator) * 0.4 + 0.1) * torch.tensor([w, h])
            boxes = torch.cat([xy, xy + wh], dim=1)
            masks = torch.zeros(3, h, w, dtype=torch.uint8)
            for i, (x1, y1, x2, y2) in enumerate(boxes.long().tolist()):
                masks[i, y1:y2, x1:x2] = 1
            labels = torch.randint(0, _num_thing_classes(model), (3, ), generator=generator)
            sample.gt_instances = InstanceData(bboxes=boxes, labels=labels, masks=BitmapMasks(masks.numpy(), h, w))
            if getattr(model, 'semantic_head', None) is not None:
                head = model.semantic_head
                total = head.num_things_classes + head.num_stuff_classes
                sample.gt_sem_seg = PixelData(sem_seg=torch.randint(0, total, (1, h, w), generator=generator))
        else:
            raise ValueError(f'random_batch: unknown toolbox scope {scope!r} (mmpretrain, mmseg or mmdet)')
        samples.append(sample)
    return inputs, samples


def _num_thing_classes(model) -> int:
    """Classes of a detector's box head (one- or two-stage); 1 when it has none."""
    for head in (getattr(getattr(model, 'roi_head', None), 'bbox_head', None), getattr(model, 'bbox_head', None)):
        heads = head if isinstance(head, torch.nn.ModuleList) else [head]
        if heads and getattr(heads[-1], 'num_classes', None):
            return heads[-1].num_classes
    return 1
