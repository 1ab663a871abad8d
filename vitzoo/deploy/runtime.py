"""Run an exported file (ONNX with onnxruntime, ``.pt2`` with torch) and predict images with it.

:class:`ExportedModel` reads the metadata that :func:`~vitzoo.deploy.export.export_model` stores
in the file (the input contract, the accepted sizes, the class names and the config) and refuses
inputs the file does not accept, naming the sizes it does. :func:`inference_exported` is what
``vitzoo.inference_model`` calls for an exported file: the config's test pipeline prepares the
image, the file predicts, and the result has the same keys as for the PyTorch model.
"""
import json
import os
import os.path as osp
from typing import List, Optional, Union

import numpy as np
import torch

from .export import METADATA_KEY, describe_allowed, size_allowed

__all__ = ['ExportedModel', 'load_exported', 'is_exported_file', 'inference_exported']

SUFFIXES = ('.onnx', '.pt2')


def is_exported_file(model) -> bool:
    """Whether ``model`` is a path to a ``.onnx`` or ``.pt2`` file (or an :class:`ExportedModel`)."""
    if isinstance(model, ExportedModel):
        return True
    return isinstance(model, (str, os.PathLike)) and os.fspath(model).lower().endswith(SUFFIXES)


class ExportedModel:
    """An exported vitzoo file, called like the model: ``outputs = exported(image)``.

    ``image``: ``(N, 3, H, W)`` float32 (tensor or array) as the metadata's ``spec`` describes;
    returns the list of output arrays. ``threads`` sets onnxruntime's intra-op threads (default:
    torch's thread count).
    """

    def __init__(self, path: Union[str, os.PathLike], threads: Optional[int] = None):
        path = os.fspath(path)
        if not osp.isfile(path):
            raise FileNotFoundError(f'exported model {path!r} does not exist')
        self.path = path
        self.format = 'pt2' if path.lower().endswith('.pt2') else 'onnx'
        if self.format == 'onnx':
            self._init_onnx(threads)
        else:
            files = {METADATA_KEY: ''}
            self.program = torch.export.load(path, extra_files=files)
            self.module = self.program.module()
            self.meta = json.loads(files[METADATA_KEY]) if files[METADATA_KEY] else None
        if not self.meta:
            raise ValueError(f'{path} was not written by vitzoo.deploy (no {METADATA_KEY!r} metadata); '
                             'export it with tools/deployment/export.py')

    def _init_onnx(self, threads: Optional[int]) -> None:
        try:
            import onnxruntime as ort
        except ImportError as error:
            raise ImportError('running an .onnx file needs onnxruntime: pip install "vitzoo[deploy]"') from error
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(self.path, options, providers=['CPUExecutionProvider'])
        props = self.session.get_modelmeta().custom_metadata_map
        self.meta = json.loads(props[METADATA_KEY]) if METADATA_KEY in props else None
        self.input_name = self.session.get_inputs()[0].name

    @property
    def spec(self) -> dict:
        return self.meta['spec']

    @property
    def allowed(self) -> dict:
        return self.meta['allowed']

    def check(self, shape) -> None:
        """Raise a ``ValueError`` naming the accepted sizes when ``shape`` (N, 3, H, W) is not one of them."""
        if len(shape) != 4 or shape[1] != 3:
            raise ValueError(f'{self.path} takes (N, 3, H, W) images, got shape {tuple(shape)}')
        for name, value in zip(('batch', 'height', 'width'), (shape[0], shape[2], shape[3])):
            if not size_allowed(self.allowed, name, int(value)):
                raise ValueError(f'{self.path} does not accept {name} {value} (input {tuple(shape)}); it accepts '
                                 f'{describe_allowed(self.allowed)}')

    def __call__(self, image) -> List[np.ndarray]:
        self.check(tuple(image.shape))
        if self.format == 'onnx':
            array = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
            return self.session.run(None, {self.input_name: np.ascontiguousarray(array, dtype=np.float32)})
        tensor = torch.as_tensor(image, dtype=torch.float32)
        with torch.no_grad():
            outputs = self.module(tensor)
        outputs = outputs if isinstance(outputs, (tuple, list)) else [outputs]
        return [o.numpy() for o in torch.utils._pytree.tree_leaves(outputs)]


def load_exported(path: Union[str, os.PathLike], threads: Optional[int] = None) -> ExportedModel:
    return ExportedModel(path, threads)


def _config(exported: ExportedModel):
    from mmengine.config import Config
    if not exported.meta.get('config'):
        raise ValueError(f'{exported.path} holds no config, so inference_model cannot prepare images for it')
    return Config.fromstring(exported.meta['config'], '.py')


def _to_input(inputs: torch.Tensor, channels: str) -> torch.Tensor:
    """The packed (3, H, W) uint8 BGR image of a test pipeline -> (1, 3, H, W) float32 in the file's channel order."""
    image = inputs.float()
    if channels == 'RGB':
        image = image.flip(0)
    return image.unsqueeze(0)


def inference_exported(model, images: list) -> List[dict]:
    """``vitzoo.inference_model`` for an exported file: same result keys as for the PyTorch model."""
    import copy

    from mmengine.dataset import Compose
    from mmengine.registry import DefaultScope

    from ..apis.model import task_scope
    from ..datasets.transforms import read_image
    exported = model if isinstance(model, ExportedModel) else ExportedModel(model)
    spec = exported.spec
    if spec['output'] not in ('logits', 'seg_logits'):
        raise ValueError(f'{exported.path} exports {spec["output"]}; inference_model predicts with classifier logits '
                         'or segmentation logits exports (run other exports with vitzoo.deploy.ExportedModel)')
    cfg = _config(exported)
    scope = task_scope(cfg)
    classes = exported.meta.get('classes')
    if spec['output'] == 'logits':
        steps = [t for t in cfg.test_dataloader.dataset.pipeline
                 if str(t['type']).split('.')[-1] != 'LoadImageFromFile']
    else:
        steps = [t for t in (cfg.get('test_pipeline') or cfg.test_dataloader.dataset.pipeline)
                 if str(t['type']).split('.')[-1] not in ('LoadImageFromFile', 'LoadAnnotations')]
    with DefaultScope.overwrite_default_scope(scope):
        pipeline = Compose(copy.deepcopy(steps))
    results = []
    for image in images:
        img = read_image(image) if isinstance(image, str) else image
        with DefaultScope.overwrite_default_scope(scope):
            data = pipeline(dict(img=img, img_shape=img.shape[:2], ori_shape=img.shape[:2]))
        logits = torch.from_numpy(exported(_to_input(data['inputs'], spec['channels']))[0])
        if spec['output'] == 'logits':
            scores = logits.softmax(dim=1)[0]
            label = int(scores.argmax())
            results.append(dict(pred_label=label, pred_score=float(scores[label]),
                                pred_class=classes[label] if classes is not None else None,
                                pred_scores=scores.numpy()))
        else:
            align = bool(cfg.model.decode_head.get('align_corners', False))
            logits = torch.nn.functional.interpolate(logits, size=img.shape[:2], mode='bilinear',
                                                     align_corners=align)[0]
            results.append(dict(pred_sem_seg=logits.argmax(dim=0).numpy().astype(np.int64), seg_logits=logits.numpy(),
                                classes=tuple(classes or ())))
    return results
