"""``inference_model``: one image in, the documented prediction dict out, for every task."""
import copy
import os
from typing import List, Sequence, Union

import numpy as np
import torch

from ..datasets.transforms import read_image
from ..deploy.runtime import inference_exported, is_exported_file
from .model import get_model, task_scope

__all__ = ['inference_model', 'model_task']

ImageType = Union[str, os.PathLike, np.ndarray]

_PANOPTIC_HEADS = ('PanopticFPN', 'MaskFormer', 'Mask2Former', 'TwoStagePanopticSegmentor')


def model_task(model) -> str:
    """``'classification'``, ``'segmentation'``, ``'panoptic'`` or ``'detection'`` for a built model."""
    scope = task_scope(model.cfg)
    if scope == 'mmseg':
        return 'segmentation'
    if scope == 'mmdet':
        model_type = str(model.cfg.model.get('type', '')).split('.')[-1]
        if model_type in _PANOPTIC_HEADS or 'panoptic_fusion_head' in model.cfg.model:
            return 'panoptic'
        return 'detection'
    return 'classification'


def inference_model(model, image: Union[ImageType, Sequence[ImageType]], pretrained: Union[bool, str] = True,
                    device=None) -> Union[dict, List[dict]]:
    """Predict one image (or a list of images) with a model of any vitzoo task.

    Args:
        model: a model from :func:`vitzoo.get_model`, or a model name / config path /
            ``Config``, built here with ``pretrained`` (``True``: the index's weights), or an
            ``.onnx`` / ``.pt2`` file of ``tools/deployment/export.py`` (classifier or segmentation
            logits; run with onnxruntime or torch, same result keys).
        image: an image path (``str`` or ``pathlib.Path``) or an HxWx3 BGR ``uint8`` array (as
            ``mmcv.imread`` returns), or a list of them (then a list of dicts comes back).
        pretrained, device: passed to :func:`vitzoo.get_model` when ``model`` is not built yet.

    Returns:
        Classification: ``pred_label`` (int), ``pred_score`` (float, its probability),
        ``pred_class`` (str, from the dataset's class names; ``None`` when the model knows none)
        and ``pred_scores`` (array of all class probabilities).

        Semantic segmentation: ``pred_sem_seg`` (HxW int64 array of class indices at the image's
        size), ``seg_logits`` (CxHxW float32 array), ``classes``.

        Panoptic segmentation: ``pred_panoptic_seg`` (HxW int64 id map in mmdet's encoding:
        ``category + instance * 1000`` for things, ``category`` for stuff, ``len(classes)`` for
        void), ``segments`` (one dict per segment: ``id``, ``category_id``, ``label`` (class
        name), ``isthing``, ``area``), ``classes``.

        Detection: ``bboxes`` (Nx4 xyxy), ``scores``, ``labels`` and ``classes``.

    Example (downloads the released weights once)::

        import vitzoo
        result = vitzoo.inference_model('twins-pcpvt-small_3rdparty_8xb128_in1k', 'demo/bird.JPEG')
        print(result['pred_class'], result['pred_score'])
    """
    exported = is_exported_file(model)  # an .onnx / .pt2 file of tools/deployment/export.py
    if not exported and not isinstance(model, torch.nn.Module):
        model = get_model(model, pretrained=pretrained, device=device)
    if not exported and not hasattr(model, 'cfg'):
        raise TypeError('inference_model needs a model built by vitzoo.get_model (it reads model.cfg)')
    batch = isinstance(image, (list, tuple))
    images = [os.fspath(i) if isinstance(i, os.PathLike) else i for i in (image if batch else [image])]
    for i in images:
        if not isinstance(i, (str, np.ndarray)):
            raise TypeError(f'inference_model takes image paths or HxWx3 arrays, got {type(i).__name__}')
    if exported:
        results = inference_exported(model, images)
        return results if batch else results[0]
    task = model_task(model)
    results = _classify(model, images) if task == 'classification' else _dense(model, images, task)
    return results if batch else results[0]


def _classify(model, images: List[ImageType]) -> List[dict]:
    """mmpretrain's test pipeline of the config (image loading aside), then ``test_step``."""
    from mmengine.dataset import Compose, default_collate
    from mmengine.registry import DefaultScope
    cfg = model.cfg
    pipeline_cfg = [t for t in cfg.test_dataloader.dataset.pipeline
                    if str(t['type']).split('.')[-1] != 'LoadImageFromFile']
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        pipeline = Compose(copy.deepcopy(pipeline_cfg))
    classes = (getattr(model, 'dataset_meta', None) or {}).get('classes')
    out = []
    for image in images:
        img = read_image(image) if isinstance(image, str) else image
        data = pipeline(dict(img=img, img_shape=img.shape[:2], ori_shape=img.shape[:2]))
        with torch.no_grad():
            sample = model.test_step(default_collate([data]))[0]
        scores = sample.pred_score.float().cpu()
        label = int(scores.argmax())
        out.append(dict(pred_label=label, pred_score=float(scores[label]),
                        pred_class=classes[label] if classes is not None else None,
                        pred_scores=scores.numpy()))
    return out


def _dense_pipeline(cfg, scope: str, from_array: bool):
    from mmengine.dataset import Compose
    from mmengine.registry import DefaultScope
    pipeline = cfg.get('test_pipeline') or cfg.test_dataloader.dataset.pipeline
    pipeline = [copy.deepcopy(t) for t in pipeline
                if str(t['type']).split('.')[-1] not in ('LoadAnnotations', 'LoadPanopticAnnotations')]
    if from_array:
        pipeline[0]['type'] = f'{scope}.LoadImageFromNDArray'
    with DefaultScope.overwrite_default_scope(scope):
        return Compose(pipeline)


def _dense(model, images: List[ImageType], task: str) -> List[dict]:
    from mmengine.registry import DefaultScope
    scope = task_scope(model.cfg)
    classes = tuple((getattr(model, 'dataset_meta', None) or {}).get('classes') or ())
    out = []
    for image in images:
        from_array = isinstance(image, np.ndarray)
        pipeline = _dense_pipeline(model.cfg, scope, from_array)
        data = dict(img=image) if from_array else dict(img_path=image)
        data['img_id'] = 0
        with DefaultScope.overwrite_default_scope(scope):
            data = pipeline(data)
            with torch.no_grad():
                sample = model.test_step(dict(inputs=[data['inputs']], data_samples=[data['data_samples']]))[0]
        if task == 'segmentation':
            out.append(_segmentation_result(sample, classes, model))
        elif task == 'panoptic':
            out.append(_panoptic_result(sample, classes, getattr(model, 'dataset_meta', None) or {}))
        else:
            out.append(_detection_result(sample, classes))
    return out


def _segmentation_result(sample, classes, model) -> dict:
    result = dict(pred_sem_seg=sample.pred_sem_seg.data[0].cpu().numpy().astype(np.int64), classes=classes)
    if 'seg_logits' in sample:
        result['seg_logits'] = sample.seg_logits.data.float().cpu().numpy()
    palette = (getattr(model, 'dataset_meta', None) or {}).get('palette')
    if palette is not None:
        result['palette'] = palette
    return result


def _panoptic_result(sample, classes, dataset_meta: dict) -> dict:
    from mmdet.structures import INSTANCE_OFFSET
    id_map = sample.pred_panoptic_seg.sem_seg[0].cpu().numpy().astype(np.int64)
    thing_classes = dataset_meta.get('thing_classes')
    num_things = len(thing_classes) if thing_classes is not None else None
    segments = []
    for segment_id, area in zip(*np.unique(id_map, return_counts=True)):
        category = int(segment_id % INSTANCE_OFFSET)
        if classes and category >= len(classes):  # void
            continue
        segments.append(dict(
            id=int(segment_id),
            category_id=category,
            label=classes[category] if category < len(classes) else None,
            isthing=bool(segment_id >= INSTANCE_OFFSET) if num_things is None else category < num_things,
            area=int(area)))
    result = dict(pred_panoptic_seg=id_map, segments=segments, classes=classes)
    if 'pred_instances' in sample:
        result.update(_detection_result(sample, classes))
    return result


def _detection_result(sample, classes) -> dict:
    instances = sample.pred_instances
    return dict(bboxes=instances.bboxes.cpu().numpy(), scores=instances.scores.cpu().numpy(),
                labels=instances.labels.cpu().numpy().astype(np.int64), classes=classes)
