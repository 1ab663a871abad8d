"""Throughput and peak memory of a model, inference and training step, optionally against timm.

    python tools/analysis_tools/benchmark.py CONFIG_OR_NAME [...] [--batch-size 8] [--shape H [W]]
        [--mode {infer,train,both}] [--warmup 3] [--iters 10] [--rounds 3] [--device cpu|cuda]
        [--threads N] [--compare timm] [--backend {torch,onnxruntime}] [--json OUT.json]

What is timed (after ``--warmup`` untimed iterations of each model and mode):

* ``infer``: a forward pass on a random batch in eval mode under ``torch.inference_mode``;
* ``train``: one training step in train mode: forward, loss, backward and an SGD update. Data
  loading and augmentation are not included.

Classifiers run their tensor forward (backbone, neck and head; a distilled PiT without its
teacher) and cross-entropy against random labels. Segmentors and detectors (mmseg / mmdet
configs) run their toolbox's ``predict`` (with post-processing) and ``loss`` against random
targets (a random label map; three random boxes with box masks, and a label map for panoptic
models).

``--compare timm`` builds timm's implementation of the same classifier variant (the name the
backbone class declares, ``VitBackbone.timm_name``; same number of classes and drop-path rate)
in the same process, checks that both give the same logits for the
same weights (timm's, converted as vitzoo loads them), and times both on the same inputs,
alternating between the two models in each of ``--rounds`` rounds of ``--iters`` iterations.
Configs without a timm counterpart (LVT, dense models) are timed alone. Throughput is the median
over rounds; the ratio is vitzoo / timm (> 1: vitzoo faster).

``--backend onnxruntime`` is the same A/B for deployment: the model is exported to ONNX at the
benchmarked batch and size (``vitzoo.deploy``, normalisation in the graph), the file is checked
against PyTorch (max |difference| of the outputs), and onnxruntime's CPU provider (``--threads``
intra-op threads) alternates with PyTorch eager; inference only. The ratio is vitzoo / onnxruntime
(< 1: onnxruntime faster).

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` during one iteration (weights
included). On CPU the growth of the process's peak resident set (``VmHWM`` reset through
``/proc/self/clear_refs``) over one iteration, with glibc's mmap threshold pinned to 128 KiB so
freed activations leave the resident set: activations, gradients and workspace, not weights.
"""
import argparse
import ctypes
import json
import os.path as osp
import statistics
import sys
import time
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from vitzoo.apis.model import build_model_from_cfg, load_config
from vitzoo.apis.random_batch import random_batch


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Throughput and peak memory of a vitzoo model')
    parser.add_argument('models', nargs='+', help='config files or model names of the index')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--shape', type=int, nargs='+', default=[224], help='input H [W] (default 224)')
    parser.add_argument('--mode', choices=['infer', 'train', 'both'], default='both')
    parser.add_argument('--warmup', type=int, default=3, help='untimed iterations per model and mode')
    parser.add_argument('--iters', type=int, default=10, help='timed iterations per round')
    parser.add_argument('--rounds', type=int, default=3, help='rounds (the models alternate within each)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--threads', type=int, help='torch CPU threads (default: torch\'s)')
    parser.add_argument('--compare', choices=['timm'], help='also run timm\'s implementation of the variant')
    parser.add_argument('--backend', choices=['torch', 'onnxruntime'], default='torch',
                        help='onnxruntime: also time the model exported to ONNX (inference, CPU)')
    parser.add_argument('--json', help='write the results to this JSON file')
    args = parser.parse_args(argv)
    if len(args.shape) not in (1, 2):
        parser.error('--shape takes H or H W')
    if args.backend == 'onnxruntime':
        if args.compare:
            parser.error('--backend onnxruntime and --compare timm each add a second model; choose one')
        if args.device != 'cpu':
            parser.error('--backend onnxruntime runs on the CPU: pass --device cpu')
        args.mode = 'infer'  # an exported file has no training step
    return args


def backbone_class(cfg) -> Optional[type]:
    """The vitzoo backbone class of a config's model, or None for other backbones."""
    from vitzoo.models.backbones import VitBackbone
    from vitzoo.registry import MODELS
    kind = (cfg.model.get('backbone') or {}).get('type')
    if not isinstance(kind, str) or ('.' in kind and not kind.startswith('vitzoo.')):
        return None  # a type of another toolbox
    cls = MODELS.get(kind if '.' in kind else f'vitzoo.{kind}')
    return cls if isinstance(cls, type) and issubclass(cls, VitBackbone) else None


def timm_name(cfg) -> Tuple[Optional[str], str]:
    """``(timm's model name or None, why not)`` for the classifier of a vitzoo config."""
    backbone = dict(cfg.model.get('backbone') or {})
    kind = str(backbone.pop('type', '')).split('.')[-1]
    arch = backbone.get('arch')
    if 'head' not in cfg.model:
        return None, f'timm has classifiers only, no counterpart of {cfg.model.get("type")}'
    cls = backbone_class(cfg)
    if cls is None or not cls.timm_names:
        return None, f'timm has no implementation of {kind or cfg.model.get("type")}'
    if arch is not None and not isinstance(arch, str):
        return None, f'a custom {kind} arch ({arch}) has no timm counterpart'
    name = cls.timm_name(**backbone)
    if name is None:
        return None, f'timm has no {kind} of these arguments ({backbone})'
    return name, ''


def _pin_malloc() -> bool:
    """Make glibc return freed blocks above 128 KiB to the OS at once (so RSS follows live memory)."""
    try:
        libc = ctypes.CDLL('libc.so.6')
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 128 * 1024)) and bool(libc.mallopt(m_trim_threshold, 128 * 1024))
    except OSError:
        return False


def _status(key: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


class PeakMemory:
    """Peak memory of a block: CUDA allocator peak, or growth of the peak RSS on CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cpu_ok = device.type == 'cpu'
        self.peak = None

    def __enter__(self):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.cpu_ok:
            try:
                with open('/proc/self/clear_refs', 'w') as f:
                    f.write('5')
                self.start = _status('VmRSS')
            except OSError:
                self.cpu_ok = False
        return self

    def __exit__(self, *exc):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        elif self.cpu_ok:
            self.peak = max(_status('VmHWM') - self.start, 0)


def logits_of(output):
    return output if isinstance(output, torch.Tensor) else output[0]


class Runner:
    """One model's inference and training step on fixed inputs.

    ``infer(x)`` runs the forward pass; ``loss(x)`` returns the scalar loss of a training step.
    """

    def __init__(self, label, module, infer, loss, device):
        self.label, self.module, self._infer, self._loss = label, module, infer, loss
        self.optimizer = torch.optim.SGD(module.parameters(), lr=1e-4)
        self.device = device

    def infer(self, x):
        with torch.inference_mode():
            self._infer(x)

    def train(self, x):
        self.optimizer.zero_grad(set_to_none=True)
        self._loss(x).backward()
        self.optimizer.step()

    def set_mode(self, mode):
        self.module.train(mode == 'train')


def classification_loss(forward, labels):
    """Cross-entropy of every logits tensor the forward returns (two for distilled heads)."""

    def loss(x):
        out = forward(x)
        return sum(F.cross_entropy(o, labels) for o in ([out] if isinstance(out, torch.Tensor) else out))

    return loss


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def build_vitzoo(cfg, x, device):
    """vitzoo's model with its inference and loss callables for inputs like ``x``."""
    from vitzoo.apis.model import task_scope
    model = build_model_from_cfg(cfg).to(device)
    scope = task_scope(cfg)
    if scope == 'mmpretrain':
        num_classes = cfg.model.get('head', {}).get('num_classes', 1000)
        labels = torch.randint(0, num_classes, (x.shape[0], ), device=device)

        def forward(inputs):
            return model(inputs, mode='tensor')

        return model, forward, classification_loss(forward, labels), num_classes
    # segmentors and detectors: the toolbox's predict (with post-processing) and loss on random targets
    from mmengine.registry import DefaultScope
    samples = [s.to(device) for s in random_batch(model, scope, x.shape[0], x.shape[2], x.shape[3])[1]]

    def predict(inputs):
        with DefaultScope.overwrite_default_scope(scope):
            return model(inputs, samples, mode='predict')

    def loss(inputs):
        with DefaultScope.overwrite_default_scope(scope):
            return model.parse_losses(model(inputs, samples, mode='loss'))[0]

    return model, predict, loss, None


def build_timm(cfg, name, num_classes, device, shape):
    import timm
    kwargs = dict(num_classes=num_classes, drop_path_rate=(cfg.model.get('backbone') or {}).get('drop_path_rate', 0.))
    if backbone_class(cfg).builds_for_input_size:
        kwargs['img_size'] = shape  # e.g. PiT: a position embedding of a fixed size
    return timm.create_model(name, pretrained=False, **kwargs).to(device)


def check_outputs(vitzoo_model, timm_model, x) -> float:
    """max |logits difference| with timm's weights loaded into vitzoo's model."""
    vitzoo_model.eval()
    timm_model.eval()
    vitzoo_model.load_state_dict(timm_model.state_dict(), strict=True)
    with torch.inference_mode():
        a = logits_of(vitzoo_model(x, mode='tensor')).float()
        b = logits_of(timm_model(x)).float()
    return (a - b).abs().max().item()


def main(argv=None):
    args = parse_args(argv)
    from mmengine.logging import MMLogger
    MMLogger.get_instance('mmengine').setLevel('WARNING')
    pinned = _pin_malloc()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    reports = [benchmark(model, args, device, pinned) for model in args.models]
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(reports, f, indent=1)
    sys.stdout.flush()


class ExportedRunner:
    """An exported ONNX file run by onnxruntime, timed like a :class:`Runner` (inference only)."""

    key = 'onnxruntime'

    def __init__(self, label, exported):
        self.label, self.exported = label, exported

    def infer(self, x):
        self.exported(x)

    def set_mode(self, mode):
        pass


def onnxruntime_runner(model, cfg, x, report: dict) -> ExportedRunner:
    """Export ``model`` to ONNX at the size of ``x``, check it against PyTorch, and wrap it for timing."""
    import tempfile

    from vitzoo.deploy import ExportedModel, export_model
    model.cfg = cfg  # vitzoo.deploy reads the task from it
    path = osp.join(tempfile.mkdtemp(prefix='vitzoo-benchmark-'), 'model.onnx')
    result = export_model(model.cpu().eval(), path, shape=tuple(x.shape[2:]), batch_size=x.shape[0],
                          log=lambda line: None)
    report['max_output_difference'] = result.max_abs_diff
    print(f'exported to ONNX ({result.spec["output"]}); onnxruntime vs PyTorch: max |output difference| '
          f'{result.max_abs_diff:.2e}')
    return ExportedRunner(f'onnxruntime (CPU, {torch.get_num_threads()} threads)', ExportedModel(path))


def benchmark(model_name: str, args, device: torch.device, pinned: bool) -> dict:
    h, w = args.shape[0], args.shape[-1]
    cfg, info = load_config(model_name)
    name = info.name if info else model_name
    torch.manual_seed(0)
    print(f'=== {name}')
    backbone = backbone_class(cfg)
    if backbone is not None and backbone.builds_for_input_size:
        # e.g. PiT's position embedding at the benchmarked size, as timm's (no interpolation per forward)
        cfg.model.backbone.img_size = (h, w)
    x = torch.randn(args.batch_size, 3, h, w, device=device)
    model, forward, loss, num_classes = build_vitzoo(cfg, x, device)
    runners = [Runner(f'vitzoo {name}', model, forward, loss, device)]
    report = dict(model=name, batch_size=args.batch_size, shape=[h, w], device=str(device))
    if args.compare == 'timm':
        tname, why = timm_name(cfg)
        if tname is None:
            print(f'--compare timm: {why}; timing vitzoo alone')
        else:
            tmodel = build_timm(cfg, tname, num_classes, device, (h, w))
            diff = check_outputs(model, tmodel, x[:1])
            report['max_logits_difference'] = diff
            print(f'same weights (timm {tname} loaded into vitzoo): max |logits difference| {diff:.2e}')
            labels = torch.randint(0, num_classes, (args.batch_size, ), device=device)
            runners.append(Runner(f'timm {tname}', tmodel, tmodel, classification_loss(tmodel, labels), device))
            runners[-1].key = 'timm'
    if args.backend == 'onnxruntime':
        runners.append(onnxruntime_runner(model, cfg, x, report))

    modes = ['infer', 'train'] if args.mode == 'both' else [args.mode]
    threads = f'{torch.get_num_threads()} threads' if device.type == 'cpu' else torch.cuda.get_device_name(device)
    print(f'batch {args.batch_size}, {h}x{w}, {device.type} ({threads}), fp32 eager; {args.warmup} warm-up, '
          f'{args.rounds} rounds x {args.iters} iterations (models alternate), median img/s')
    mem_label = 'peak alloc (MiB)' if device.type == 'cuda' else 'peak RSS growth (MiB)'
    if device.type == 'cpu' and not pinned:
        mem_label += ' [approximate: mallopt unavailable]'
    results = []
    for mode in modes:
        for runner in runners:
            runner.set_mode(mode)
            step = getattr(runner, mode)
            for _ in range(args.warmup):
                step(x)
            _sync(device)
            with PeakMemory(device) as peak:
                step(x)
            runner.peak = peak.peak
            runner.times = []
        for _ in range(args.rounds):
            for runner in runners:
                step = getattr(runner, mode)
                _sync(device)
                start = time.perf_counter()
                for _ in range(args.iters):
                    step(x)
                _sync(device)
                runner.times.append(time.perf_counter() - start)
        print(f'{mode}:')
        print(f'  {"model":<52} {"img/s":>9} {mem_label:>22}')
        row = dict(mode=mode)
        for runner in runners:
            throughput = statistics.median(args.batch_size * args.iters / t for t in runner.times)
            memory = f'{runner.peak / 2**20:.1f}' if runner.peak is not None else 'n/a'
            print(f'  {runner.label:<52} {throughput:>9.2f} {memory:>22}')
            row[getattr(runner, 'key', 'vitzoo')] = dict(model=runner.label, img_per_s=throughput,
                                                         peak_mem_bytes=runner.peak)
        if len(runners) == 2:
            other = runners[1].key
            ratio = row['vitzoo']['img_per_s'] / row[other]['img_per_s']
            row['ratio'] = ratio
            line = f'  ratio vitzoo/{other} ({mode}): {ratio:.2f}x img/s'
            if runners[0].peak and runners[1].peak:
                row['memory_ratio'] = runners[0].peak / runners[1].peak
                line += f', {row["memory_ratio"]:.2f}x peak memory'
            print(line)
        results.append(row)
    report['results'] = results
    return report


if __name__ == '__main__':
    main()
