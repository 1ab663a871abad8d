"""The inference graph an exported file holds: normalisation, the network, one output kind.

Input contract of every exported file (``vitzoo.deploy``, ``tools/deployment/export.py``):

* one tensor ``image``: ``(N, 3, H, W)`` float32, NCHW;
* channels in the order the config's data preprocessor produces (RGB for every vitzoo config:
  the test pipeline loads BGR and the preprocessor converts), pixel values in ``[0, 255]``;
* the preprocessor's ``(x - mean) / std`` is part of the graph (baked in), so a caller only
  resizes / crops as the config's test pipeline does and feeds the raw pixel values.

Output kinds:

* ``logits``: classifiers, ``(N, num_classes)`` before softmax (distilled PiT: the mean of its two
  heads, as its ``predict``);
* ``seg_logits``: SegFormer segmentors, ``(N, num_classes, H, W)`` per-pixel class logits
  resized to the input size (bilinear, as mmseg's ``predict``);
* ``seg_map``: the argmax of ``seg_logits``, ``(N, H, W)`` int64 class indices;
* ``features``: a backbone alone, the tuple of its NCHW maps (``feat0``, ``feat1``, ...).
"""
from dataclasses import asdict, dataclass, field
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['OUTPUT_KINDS', 'ExportSpec', 'InferenceGraph', 'UnsupportedExportError', 'build_inference_graph']

OUTPUT_KINDS = ('logits', 'seg_logits', 'seg_map', 'features')
_TASK_OUTPUTS = {
    'classification': ('logits', 'features'),
    'segmentation': ('seg_logits', 'seg_map', 'features'),
    'panoptic': ('features', ),
    'detection': ('features', ),
}


class UnsupportedExportError(ValueError):
    """The model (or the output asked for) has no exportable inference graph; the message says what has."""


@dataclass
class ExportSpec:
    """What an exported file computes and expects; stored in the file as JSON metadata."""

    task: str
    output: str
    output_names: List[str]  # one per output tensor (features: feat0, feat1, ...; set at export)
    mean: List[float]
    std: List[float]
    channels: str = 'RGB'
    layout: str = 'NCHW'
    dtype: str = 'float32'
    value_range: List[float] = field(default_factory=lambda: [0., 255.])
    normalization: str = 'in the graph'

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        mean = ', '.join(f'{m:g}' for m in self.mean)
        std = ', '.join(f'{s:g}' for s in self.std)
        return (f'input "image": (N, 3, H, W) {self.dtype} {self.layout}, {self.channels}, values in '
                f'[{self.value_range[0]:g}, {self.value_range[1]:g}]; normalisation (x - [{mean}]) / [{std}] is '
                f'{self.normalization}; output {self.output} ({", ".join(self.output_names)})')


def _normalization(model: nn.Module):
    """``(mean, std, channels)`` of the model's data preprocessor (identity when it does not normalise)."""
    preprocessor = getattr(model, 'data_preprocessor', None)
    mean = getattr(preprocessor, 'mean', None)
    std = getattr(preprocessor, 'std', None)
    if not getattr(preprocessor, '_enable_normalize', mean is not None) or mean is None:
        mean, std = torch.zeros(3), torch.ones(3)
    # mmpretrain: to_rgb; mmseg: channel_conversion; mmdet / mmengine: _channel_conversion
    swap = any(getattr(preprocessor, attr, False) for attr in ('to_rgb', 'channel_conversion', '_channel_conversion'))
    return mean.detach().float().reshape(-1), std.detach().float().reshape(-1), 'RGB' if swap else 'BGR'


class InferenceGraph(nn.Module):
    """``image (N, 3, H, W) in [0, 255]`` -> the output kind of :class:`ExportSpec`, normalisation included."""

    def __init__(self, model: nn.Module, spec: ExportSpec):
        super().__init__()
        self.model = model
        self.spec = spec
        self.register_buffer('mean', torch.tensor(spec.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(spec.std).view(1, -1, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor):
        x = (image - self.mean) / self.std
        output = self.spec.output
        if output == 'features':
            return tuple(self.model.backbone(x))
        if output == 'logits':
            return self.model(x, mode='tensor')
        head = self.model.decode_head
        logits = head(self.model.extract_feat(x))
        logits = F.interpolate(logits, size=image.shape[2:], mode='bilinear', align_corners=head.align_corners)
        return logits if output == 'seg_logits' else logits.argmax(dim=1)


def _default_output(task: str) -> str:
    return _TASK_OUTPUTS[task][0]


def build_inference_graph(model: nn.Module, output: Optional[str] = None,
                          backbone_only: bool = False) -> InferenceGraph:
    """The eval-mode :class:`InferenceGraph` of a model built by :func:`vitzoo.get_model`.

    ``output``: one of :data:`OUTPUT_KINDS` (default: the task's, ``logits`` or ``seg_logits``);
    ``backbone_only`` is ``output='features'``. Panoptic FPN and detectors export their backbone only
    (RoI operations and NMS have no fixed-shape graph): anything else raises
    :class:`UnsupportedExportError` naming what can be exported.
    """
    from ..apis.inference import model_task
    if not hasattr(model, 'cfg'):
        raise TypeError('build_inference_graph needs a model built by vitzoo.get_model (it reads model.cfg)')
    task = model_task(model)
    if backbone_only:
        if output not in (None, 'features'):
            raise ValueError('backbone_only exports the backbone features; it cannot be combined with '
                             f'output={output!r}')
        output = 'features'
    allowed = _TASK_OUTPUTS[task]
    name = getattr(getattr(model, '_metainfo', None), 'name', None) or type(model).__name__
    if output is None and task in ('panoptic', 'detection'):
        raise UnsupportedExportError(
            f'{name} is a {task} model ({type(model).__name__}): its RoI heads (RoIAlign, NMS, the panoptic '
            'fusion) are not exported. Export its backbone instead with --backbone-only (Python: '
            "backbone_only=True), which gives the tuple of NCHW feature maps for your own neck and heads.")
    output = output or _default_output(task)
    if output not in OUTPUT_KINDS:
        raise ValueError(f'unknown output {output!r}; choose one of {OUTPUT_KINDS}')
    if output not in allowed:
        raise UnsupportedExportError(f'{name} ({task}) exports {", ".join(allowed)}, not {output!r}')
    if output == 'features' and not hasattr(model, 'backbone'):
        raise UnsupportedExportError(f'{name} has no backbone to export')
    mean, std, channels = _normalization(model)
    spec = ExportSpec(task=task, output=output, output_names=[output], mean=mean.tolist(), std=std.tolist(),
                      channels=channels)
    return InferenceGraph(model, spec).eval()
