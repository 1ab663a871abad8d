"""Export an :class:`~vitzoo.deploy.graph.InferenceGraph` to ONNX or a ``torch.export`` program and verify it.

Both formats come from one ``torch.export`` trace. With ``dynamic=True`` batch, height and width
are symbolic: the trace asks for sides in ``[MIN_SIDE, MAX_SIDE]`` and batches in
``[1, MAX_BATCH]``; where the model restricts them (e.g. Twins-SVT's last window stage needs maps
of at least 2x2, so sides of at least 64), torch.export suggests the narrower ranges, the export is
repeated with them and :attr:`ExportResult.allowed` says which sizes the file accepts. Sizes
need not be multiples of 32 for any vitzoo family.

Verification runs the written file (onnxruntime's CPU provider, or the loaded ``.pt2``
program) and the PyTorch graph on the same random images (uniform in ``[0, 255]``) at up to
three sizes and compares every output: the maximum absolute difference must stay within
``tolerance`` (class maps: no pixel may differ unless its two best logits are that close).
"""
import contextlib
import copy
import json
import os
import os.path as osp
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils import _pytree as pytree

from ..utils.atomic import replace_durably, temporary_name
from .graph import InferenceGraph, build_inference_graph

__all__ = ['ExportResult', 'ExportVerificationError', 'DynamicShapeError', 'export_model', 'verify_export',
           'verification_sizes', 'FORMATS', 'MIN_SIDE', 'MAX_SIDE', 'MAX_BATCH']

FORMATS = ('onnx', 'pt2')
MIN_SIDE, MAX_SIDE, MAX_BATCH = 32, 4096, 1024
METADATA_KEY = 'vitzoo'  # ONNX metadata_props key / name of the JSON in the .pt2 archive
DIMS = {0: 'batch', 2: 'height', 3: 'width'}


class ExportVerificationError(RuntimeError):
    """The exported file's outputs differ from PyTorch's beyond the tolerance."""


class DynamicShapeError(ValueError):
    """The model cannot be exported with the dynamic sizes asked for; the message says what to do."""


@dataclass
class ExportResult:
    path: str
    format: str
    shape: Tuple[int, int]
    dynamic: bool
    spec: dict
    allowed: Dict[str, dict]
    verification: List[dict] = field(default_factory=list)

    @property
    def max_abs_diff(self) -> float:
        return max((v['max_abs_diff'] for v in self.verification), default=0.)

    def to_dict(self) -> dict:
        return asdict(self)


def describe_allowed(allowed: Dict[str, dict]) -> str:
    """``batch 1..1024, height 64..4096, width 64..4096`` (``k*step+offset`` where a step applies)."""
    parts = []
    for name, rule in allowed.items():
        if rule['min'] == rule['max']:
            parts.append(f'{name} {rule["min"]}')
        else:
            text = f'{name} {rule["min"]}..{rule["max"]}'
            if rule['step'] > 1:
                text += f' (every {rule["step"]}: {rule["offset"]} mod {rule["step"]})'
            parts.append(text)
    return ', '.join(parts)


def size_allowed(allowed: Dict[str, dict], name: str, value: int) -> bool:
    rule = allowed[name]
    return rule['min'] <= value <= rule['max'] and (value - rule['offset']) % rule['step'] == 0


def _snap(allowed: Dict[str, dict], name: str, value: int) -> int:
    """The allowed value nearest to ``value`` (not below it where possible)."""
    rule = allowed[name]
    value = min(max(value, rule['min']), rule['max'])
    value += (rule['offset'] - value) % rule['step']
    return value if value <= rule['max'] else value - rule['step']


def verification_sizes(shape: Tuple[int, int], allowed: Dict[str, dict]) -> List[Tuple[int, int, int]]:
    """``(batch, height, width)`` triples to verify: the export size, a non-square size and one whose
    sides are not multiples of 32, each moved to the nearest size the file accepts (one size for a
    fixed-shape export)."""
    h, w = shape
    wide = (w + w // 2) // 32 * 32  # 224 -> 320
    candidates = [(2, h, w), (1, h, wide if wide != w else w + 32), (3, h + 1, w + 13)]
    sizes = []
    for batch, height, width in candidates:
        size = (_snap(allowed, 'batch', batch), _snap(allowed, 'height', height), _snap(allowed, 'width', width))
        if size not in sizes:
            sizes.append(size)
    return sizes


@contextlib.contextmanager
def _export_context():
    """How vitzoo traces: size checks inside PyTorch's ops reason size-obliviously (a size of 1 is not
    special-cased, so the graph stays general), and convolutions do not consult oneDNN's memory
    formats, whose checks would pin the batch size; gradients off."""
    import torch.fx.experimental._config as fx_config
    with fx_config.patch(backed_size_oblivious=True), torch.backends.mkldnn.flags(enabled=False), \
            torch.no_grad():
        yield


def _dynamic_shapes():
    from torch.export import Dim
    return {'image': {0: Dim('batch', min=1, max=MAX_BATCH), 2: Dim('height', min=MIN_SIDE, max=MAX_SIDE),
                      3: Dim('width', min=MIN_SIDE, max=MAX_SIDE)}}


def trace(graph: InferenceGraph, example: torch.Tensor, dynamic: bool, log: Callable[[str], None] = print):
    """``torch.export`` program of ``graph``; dynamic ranges narrowed where torch.export says they must be."""
    from torch.export.dynamic_shapes import refine_dynamic_shapes_from_suggested_fixes
    dynamic_shapes = _dynamic_shapes() if dynamic else None
    for _ in range(4):
        try:
            with _export_context():
                return torch.export.export(graph, (example, ), dynamic_shapes=dynamic_shapes)
        except Exception as error:  # noqa: BLE001  (torch raises its private UserError)
            message = str(error)
            if not dynamic or 'Constraints violated' not in message:
                raise
            if 'Specializations unexpectedly required' in message:
                named = message.split('Specializations unexpectedly required (', 1)[1].split(')', 1)[0]
                raise DynamicShapeError(
                    f'the model computes with a fixed {named} (a Python branch on the input size), so it cannot '
                    f'be exported with a dynamic {named}: export without --dynamic at the size you need. '
                    f'torch.export says:\n{message.split("The error above", 1)[0].strip()}') from error
            if 'Suggested fixes' in message:
                log('narrowing the dynamic sizes as torch.export suggests:\n  ' +
                    message.split('Suggested fixes:', 1)[1].strip().split('\n\n')[0].replace('\n', '\n  '))
                dynamic_shapes = refine_dynamic_shapes_from_suggested_fixes(message, dynamic_shapes)
            else:  # e.g. "last map != 1": no range suggested; raise the minimum of the sizes named
                dynamic_shapes = _raise_minimum(dynamic_shapes, message, example, log)
    raise DynamicShapeError('torch.export kept narrowing the dynamic sizes; export without --dynamic instead')


def _raise_minimum(dynamic_shapes: dict, message: str, example: torch.Tensor, log: Callable[[str], None]) -> dict:
    """Double the minimum side (a batch: 2) of every size the violation message names."""
    from torch.export import Dim
    named = message.split('Constraints violated (', 1)[1].split(')', 1)[0].split(', ')
    dims = dict(dynamic_shapes['image'])
    for index, name in DIMS.items():
        if name not in named:
            continue
        low = 2 if name == 'batch' else 2 * dims[index].min
        if low > example.shape[index]:
            raise DynamicShapeError(f'the model needs {name} >= {low} in a dynamic export, but the export size has '
                               f'{name} {example.shape[index]}: pass a larger --shape')
        log(f'the model does not accept every {name} from {dims[index].min}: exporting with {name} >= {low}')
        dims[index] = Dim(name, min=low, max=dims[index].max)
    return {'image': dims}


def allowed_sizes(program, example: torch.Tensor) -> Dict[str, dict]:
    """``{batch, height, width: {min, max, step, offset}}`` of the program's input."""
    name = program.graph_signature.user_inputs[0]
    node = next(n for n in program.graph.nodes if n.op == 'placeholder' and n.name == name)
    shape = node.meta['val'].shape
    allowed = {}
    for dim, name in DIMS.items():
        size = shape[dim]
        if isinstance(size, int):
            allowed[name] = dict(min=size, max=size, step=1, offset=0)
            continue
        expr = size.node.expr
        symbols = list(expr.free_symbols)
        if len(symbols) != 1:
            raise RuntimeError(f'cannot describe the {name} of the exported input ({expr})')
        symbol = symbols[0]
        step, offset = int(expr.coeff(symbol)), int(expr.subs(symbol, 0))
        bounds = program.range_constraints[symbol]
        low = step * int(bounds.lower) + offset
        upper = bounds.upper
        high = step * int(upper) + offset if upper.is_finite else MAX_SIDE
        allowed[name] = dict(min=low, max=high, step=step, offset=offset % step if step > 1 else 0)
    return allowed


def metadata(graph: InferenceGraph, fmt: str, shape, dynamic: bool, allowed: dict, name: Optional[str]) -> dict:
    from .. import __version__
    model = graph.model
    cfg = getattr(model, 'cfg', None)
    classes = (getattr(model, 'dataset_meta', None) or {}).get('classes')
    return dict(vitzoo_version=__version__, torch_version=torch.__version__, model=name, format=fmt,
                shape=list(shape), dynamic=dynamic, allowed=allowed, spec=graph.spec.to_dict(),
                classes=list(classes) if classes is not None else None,
                config=cfg.pretty_text if cfg is not None else None)


def _save_onnx(program, example: torch.Tensor, graph: InferenceGraph, path: str, opset: Optional[int], meta: dict):
    import onnx
    onnx_program = torch.onnx.export(program, (example, ), dynamo=True, input_names=['image'],
                                     output_names=graph.spec.output_names, opset_version=opset, verbose=False)
    proto = onnx_program.model_proto
    shape = proto.graph.input[0].type.tensor_type.shape
    for dim, name in DIMS.items():  # name the symbolic axes for the reader
        if shape.dim[dim].dim_param:
            shape.dim[dim].dim_param = name
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    onnx.save(proto, path)


def export_model(model: torch.nn.Module,
                 out: str,
                 fmt: Optional[str] = None,
                 shape: Optional[Sequence[int]] = None,
                 dynamic: bool = False,
                 batch_size: int = 1,
                 opset: Optional[int] = None,
                 output: Optional[str] = None,
                 backbone_only: bool = False,
                 verify: bool = True,
                 tolerance: float = 1e-4,
                 overwrite: bool = False,
                 log: Callable[[str], None] = print) -> ExportResult:
    """Export a model of :func:`vitzoo.get_model` (eval mode, normalisation in the graph) to ``out``.

    Args:
        model: the built model (``model.cfg`` names its task and test size).
        out: the file to write (``.onnx`` or ``.pt2``); an existing file is kept unless ``overwrite``.
        fmt: ``'onnx'`` or ``'pt2'`` (default: from the suffix of ``out``).
        shape: ``(H, W)`` of the trace (default: the config's test size).
        dynamic: batch, height and width symbolic (see :func:`allowed_sizes`); else all fixed,
            the batch at ``batch_size``.
        opset: ONNX opset (default: the exporter's).
        output, backbone_only: see :func:`~vitzoo.deploy.graph.build_inference_graph`.
        verify: compare the written file with PyTorch (:func:`verify_export`); a difference above
            ``tolerance`` raises :class:`ExportVerificationError` (the file stays for inspection).
        log: where progress lines go.
    """
    from ..apis.complexity import default_input_shape
    out = os.fspath(out)
    suffix = osp.splitext(out)[1].lstrip('.').lower()
    fmt = fmt or suffix
    if fmt not in FORMATS:
        raise ValueError(f'unknown export format {fmt!r} (from {out!r}); choose one of {FORMATS} '
                         '(or name the output file *.onnx / *.pt2)')
    if suffix != fmt:
        raise ValueError(f'the output file {out!r} does not end in .{fmt} (format {fmt!r})')
    if osp.exists(out) and not overwrite:
        raise FileExistsError(f'{out} exists; choose another output file or pass overwrite=True (--overwrite)')
    graph = build_inference_graph(model, output=output, backbone_only=backbone_only)
    shape = tuple(int(s) for s in (shape or default_input_shape(model.cfg)))
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f'shape must be (H, W) with positive sides, got {shape}')
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(2 if dynamic else batch_size, 3, *shape, generator=generator) * 255
    with torch.no_grad():
        leaves = pytree.tree_leaves(graph(example))
    if graph.spec.output == 'features':
        graph.spec.output_names = [f'feat{i}' for i in range(len(leaves))]
    log(f'exporting {graph.spec.output} of {type(model).__name__} to {fmt} at {shape[0]}x{shape[1]}'
        f'{" (dynamic batch, height and width)" if dynamic else ""}')
    program = trace(graph, example, dynamic, log)
    allowed = allowed_sizes(program, example)
    name = getattr(getattr(model, '_metainfo', None), 'name', None)
    meta = metadata(graph, fmt, shape, dynamic, allowed, name)
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    tmp = temporary_name(out) + f'.{fmt}'
    try:
        if fmt == 'pt2':
            torch.export.save(program, tmp, extra_files={METADATA_KEY: json.dumps(meta)})
        else:
            _save_onnx(program, example, graph, tmp, opset, meta)
        replace_durably(tmp, out)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    log(f'wrote {out} ({osp.getsize(out) / 2**20:.1f} MiB)')
    log(f'preprocessing: {graph.spec.describe()}')
    log(f'accepted sizes: {describe_allowed(allowed)}')
    result = ExportResult(path=out, format=fmt, shape=shape, dynamic=dynamic, spec=graph.spec.to_dict(),
                          allowed=allowed)
    if verify:
        result.verification = verify_export(graph, out, verification_sizes(shape, allowed), tolerance, log)
    return result


def _compare(graph: InferenceGraph, image: torch.Tensor, reference, got: List, tolerance: float) -> Tuple[float, bool]:
    """Max |difference| over all outputs and whether it passes; class maps count the pixels that differ
    where the two best logits are more than ``tolerance`` apart."""
    expected = [t.numpy() for t in pytree.tree_leaves(reference)]
    if len(expected) != len(got):
        return float('inf'), False
    worst, ok = 0., True
    for want, have in zip(expected, got):
        if tuple(want.shape) != tuple(have.shape):
            return float('inf'), False
        if graph.spec.output == 'seg_map':
            differ = want != have
            if differ.any():
                graph.spec.output = 'seg_logits'
                try:
                    with torch.no_grad():
                        logits = graph(image)
                finally:
                    graph.spec.output = 'seg_map'
                top2 = logits.topk(2, dim=1).values
                gap = (top2[:, 0] - top2[:, 1]).numpy()
                ok = ok and not (differ & (gap > tolerance)).any()
                worst = max(worst, float(differ.mean()))
            continue
        diff = float(abs(want.astype('float64') - have.astype('float64')).max()) if want.size else 0.
        worst = max(worst, diff)
        ok = ok and diff <= tolerance
    return worst, ok


def _errors_against_float64(exact: nn.Module, image: torch.Tensor, reference, got: List) -> Tuple[float, float]:
    """Max |difference| to the float64 forward of the exported outputs and of PyTorch's float32 ones."""
    with torch.no_grad():
        truth = [t.numpy() for t in pytree.tree_leaves(exact(image.double()))]
    expected = [t.numpy() for t in pytree.tree_leaves(reference)]
    export_error = max(float(abs(t - h.astype('float64')).max()) for t, h in zip(truth, got))
    torch_error = max(float(abs(t - e.astype('float64')).max()) for t, e in zip(truth, expected))
    return export_error, torch_error


def verify_export(graph: InferenceGraph, path: str, sizes: Sequence[Tuple[int, int, int]], tolerance: float = 1e-4,
                  log: Callable[[str], None] = print, seed: int = 0) -> List[dict]:
    """Run ``path`` and ``graph`` on random images of each ``(batch, height, width)``; raise
    :class:`ExportVerificationError` when an output differs by more than ``tolerance``."""
    from .runtime import ExportedModel
    exported = ExportedModel(path)
    generator = torch.Generator().manual_seed(seed)
    results, failed = [], []
    what = 'onnxruntime (CPUExecutionProvider)' if exported.format == 'onnx' else 'the loaded .pt2 program'
    log(f'verifying {path} with {what} against PyTorch (tolerance {tolerance:g}):')
    exact = None
    for batch, height, width in sizes:
        image = torch.rand(batch, 3, height, width, generator=generator) * 255
        with torch.no_grad():
            reference = graph(image)
        got = exported(image)
        diff, ok = _compare(graph, image, reference, got, tolerance)
        label = 'differing pixels (fraction)' if graph.spec.output == 'seg_map' else 'max |diff|'
        result = dict(batch=batch, height=height, width=width, max_abs_diff=diff, passed=ok)
        note = ''
        if not ok and graph.spec.output != 'seg_map' and diff < float('inf'):
            exact = exact or copy.deepcopy(graph).double()
            export_error, torch_error = _errors_against_float64(exact, image, reference, got)
            ok = export_error <= 2 * torch_error
            result.update(passed=ok, float64_error_exported=export_error, float64_error_pytorch=torch_error)
            note = (f' > {tolerance:g}, but against float64 PyTorch the export errs by {export_error:.3g} and '
                    f'float32 PyTorch by {torch_error:.3g}: ' +
                    ('as exact as PyTorch itself' if ok else 'less exact than PyTorch'))
        log(f'  batch {batch} {height}x{width}: {label} {diff:.3g}{note} {"ok" if ok else "FAILED"}')
        results.append(result)
        if not ok:
            failed.append(f'{batch}x{height}x{width} ({diff:.3g})')
    if failed:
        raise ExportVerificationError(f'{path} differs from the PyTorch model beyond {tolerance:g} at '
                                      f'{", ".join(failed)}')
    return results
