"""Throughput and peak memory of a model, inference and training step, optionally against timm.

    python tools/analysis_tools/benchmark.py CONFIG_OR_NAME [...] [--batch-size 8] [--shape H [W]]
        [--mode {infer,train,both}] [--warmup 3] [--iters 10] [--rounds 3] [--device cpu|cuda]
        [--threads N] [--compare {timm,aten} ...] [--backend {torch,onnxruntime}] [--json OUT.json]
        [--compile] [--with-cp-memory] [--sweep-shape S [S ...] [--plot OUT.png]]

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
Configs without a timm counterpart (LVT, dense models) are timed alone. ``--compare aten`` also
times the same vitzoo model with every linear product on ATen (``VITZOO_ONEDNN_LINEAR=0``), so that
what the measured kernel choice adds and what the model code does with timm's kernels show apart.
Throughput is the median over rounds; a ratio (vitzoo / timm, > 1: vitzoo faster) is the median of
the ratios within a round, where the models alternate. Each vitzoo entry counts which kernel ran
each linear product in the timed steps (``linear_kernels``); the JSON records the processor's ISA
flags and the ISA caps of the environment (``machine.cpu_signature``).

``--backend onnxruntime`` is the same A/B for deployment: the model is exported to ONNX at the
benchmarked batch and size (``vitzoo.deploy``, normalisation in the graph), the file is checked
against PyTorch (max |difference| of the outputs), and onnxruntime's CPU provider (``--threads``
intra-op threads) alternates with PyTorch eager; inference only. The ratio is vitzoo / onnxruntime
(< 1: onnxruntime faster).

Achieved GFLOP/s: every model's forward FLOPs per image are counted once at the benchmarked size
by vitzoo's counter (``vitzoo.apis.count_macs``, the one of get_flops.py: convolutions, linear
layers and matmuls, attention matmuls included, FLOPs = 2 x MACs); a training step is counted as
3x the forward FLOPs (forward + backward of activations and weights; the optimizer, norms and
element-wise ops are not counted). GFLOP/s = FLOPs per image x img/s. The fraction of the
machine's limit divides it by the fp32 matmul throughput measured once per run in the same
process (a square ``torch.mm``, median of several, at the benchmark's thread count).

``--compile`` also times ``torch.compile(model)`` of every model (vitzoo, and timm with
``--compare timm``), alternating with the eager ones: the first call of each mode (compilation
plus one step) is reported as ``compile_s``, steady-state img/s after it like the eager models.

``--with-cp-memory`` (training): reports the peak memory of a training step of the vitzoo model
without and with the backbone's ``with_cp=True`` (activation checkpointing), median of 3 steps each,
and their ratio (< 1: checkpointing saves memory). Both are measured in a separate process that
only measures memory (see "Peak memory").

``--sweep-shape S ...`` runs everything once per input size S x S (each its own report, with
``"sweep": true``); ``--plot OUT.png`` draws img/s and peak memory against the input size, one
line per model.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` during one iteration (weights
included). On CPU the growth of the process's peak resident set (``VmHWM`` reset through
``/proc/self/clear_refs``) over one iteration, with glibc's mmap threshold set to 128 KiB so
freed activations leave the resident set: activations, gradients and workspace, not weights.
Timed iterations run with the thresholds a long-running process settles into (32 MiB mmap,
64 MiB trim), not the measuring ones, which would make every step page-fault through its
activations.
"""
import argparse
import collections
import contextlib
import ctypes
import datetime
import gc
import json
import os
import os.path as osp
import platform
import shlex
import statistics
import subprocess
import sys
import time
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

from vitzoo.apis.model import build_model_from_cfg, load_config
from vitzoo.apis.random_batch import random_batch
from vitzoo.models import kernel_choice
from vitzoo.models.linear import kernel_counts, linear_mode, onednn_available, onednn_linear


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
    parser.add_argument('--compare', nargs='+', choices=['timm', 'aten'], default=[],
                        help='also time timm\'s implementation of the variant (timm), and/or the same vitzoo '
                             'model with every linear product on ATen (aten), alternating in one process')
    parser.add_argument('--backend', choices=['torch', 'onnxruntime'], default='torch',
                        help='onnxruntime: also time the model exported to ONNX (inference, CPU)')
    parser.add_argument('--json', help='write the results to this JSON file')
    parser.add_argument('--compile', action='store_true',
                        help='also time torch.compile(model) (and timm\'s): compile time and steady-state img/s')
    parser.add_argument('--with-cp-memory', action='store_true',
                        help='training: peak memory with and without the backbone\'s with_cp=True')
    parser.add_argument('--sweep-shape', type=int, nargs='+', metavar='S',
                        help='run at each input size S x S (instead of --shape)')
    parser.add_argument('--plot', help='with --sweep-shape: draw img/s and memory against size into this PNG')
    parser.add_argument('--matmul-size', type=int, default=2048, help='n of the n x n fp32 matmul peak')
    parser.add_argument('--cp-memory-child', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.plot and not args.sweep_shape:
        parser.error('--plot draws a --sweep-shape run')
    if args.with_cp_memory and args.mode == 'infer':
        parser.error('--with-cp-memory measures training steps: use --mode train or both')
    if len(args.shape) not in (1, 2):
        parser.error('--shape takes H or H W')
    if args.backend == 'onnxruntime':
        if args.compare:
            parser.error('--backend onnxruntime and --compare each add a second model; choose one')
        if args.device != 'cpu':
            parser.error('--backend onnxruntime runs on the CPU: pass --device cpu')
        if args.compile or args.with_cp_memory:
            parser.error('--backend onnxruntime times inference of the exported file: no --compile / --with-cp-memory')
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


# glibc's malloc settings (mallopt): while a peak is measured, blocks above 128 KiB go back to the
# OS when freed, so the resident set follows live memory; while timing, the thresholds a long
# run settles into (glibc raises the mmap threshold to the largest freed block, at most 32 MiB on
# 64-bit, and the trim threshold to twice that), so that timed steps do not page-fault through
# every activation as they would with the measuring settings.
_MALLOC_FOR_MEMORY = dict(mmap=128 * 1024, trim=128 * 1024)
_MALLOC_FOR_TIMING = dict(mmap=32 * 2**20, trim=64 * 2**20)


def _set_malloc(mmap: int, trim: int) -> bool:
    """Set glibc's mmap and trim thresholds and give free heap memory back; False without glibc."""
    try:
        libc = ctypes.CDLL('libc.so.6')
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = bool(libc.mallopt(m_mmap_threshold, mmap)) and bool(libc.mallopt(m_trim_threshold, trim))
        libc.malloc_trim(0)  # memory freed under the timing settings must not look free-but-resident
        return ok
    except (OSError, AttributeError):
        return False


def _status(key: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


class PeakMemory:
    """Peak memory of a block: CUDA allocator peak, or growth of the peak RSS on CPU."""

    def __init__(self, device: torch.device, restore_timing_malloc: bool = True):
        self.device = device
        self.restore_timing_malloc = restore_timing_malloc
        self.cpu_ok = device.type == 'cpu'
        self.peak = None

    def __enter__(self):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.cpu_ok:
            _set_malloc(**_MALLOC_FOR_MEMORY)
            gc.collect()
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
        if self.device.type == 'cpu' and self.restore_timing_malloc:
            _set_malloc(**_MALLOC_FOR_TIMING)


def logits_of(output):
    return output if isinstance(output, torch.Tensor) else output[0]


class Runner:
    """One model's inference and training step on fixed inputs.

    ``infer(x)`` runs the forward pass; ``loss(x)`` returns the scalar loss of a training step.
    With ``linear_mode``, vitzoo's linear layers run in that mode (``aten``, ``onednn``, ``auto``)
    during the runner's steps. ``kernels`` counts which kernel ran each linear product in the timed
    steps (:func:`vitzoo.models.linear.kernel_counts`), per product and kernel.
    """

    def __init__(self, label, module, infer, loss, device, linear_mode: Optional[str] = None):
        self.label, self.module, self._infer, self._loss = label, module, infer, loss
        self.optimizer = torch.optim.SGD(module.parameters(), lr=1e-4)
        self.device = device
        self.linear_mode = linear_mode
        self.kernels = collections.Counter()

    def _linear_mode(self):
        return onednn_linear(self.linear_mode) if self.linear_mode else contextlib.nullcontext()

    def infer(self, x):
        with torch.inference_mode(), self._linear_mode():
            self._infer(x)

    def train(self, x):
        with self._linear_mode():
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


def paired_ratio(row: dict, a: str, b: str) -> float:
    """img/s of ``a`` over ``b``: the median over rounds of the ratio within a round. The models alternate
    within a round, so a slow spell of the machine hits both; the ratio of the medians would mix rounds."""
    return statistics.median(x / y for x, y in zip(row[a]['img_per_s_rounds'], row[b]['img_per_s_rounds']))


def check_outputs(vitzoo_model, timm_model, x) -> float:
    """max |logits difference| with timm's weights loaded into vitzoo's model."""
    vitzoo_model.eval()
    timm_model.eval()
    vitzoo_model.load_state_dict(timm_model.state_dict(), strict=True)
    with torch.inference_mode():
        a = logits_of(vitzoo_model(x, mode='tensor')).float()
        b = logits_of(timm_model(x)).float()
    return (a - b).abs().max().item()


def machine_info() -> dict:
    """CPU model, ISA flags and ISA caps of the environment, core count, torch threads and library versions."""
    signature = kernel_choice.cpu_signature()
    info = dict(cpu=signature.get('model_name', platform.processor() or platform.machine()),
                cpu_signature=signature, cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
                torch=torch.__version__, python=platform.python_version())
    try:
        import timm
        info['timm'] = timm.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info['gpu'] = torch.cuda.get_device_name()
    return info


def matmul_peak(device: torch.device, n: int = 2048, repeats: int = 5) -> dict:
    """The machine's fp32 matmul throughput: the faster of ``torch.mm`` and (on CPU) oneDNN's
    kernel (the one vitzoo's linear layers use) on a square n x n product, median of ``repeats``."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    kernels = {'torch.mm': lambda: torch.mm(a, b)}
    if device.type == 'cpu' and onednn_available():
        b_t = b.t().contiguous()
        kernels['oneDNN'] = lambda: torch.ops.mkldnn._linear_pointwise(a, b_t, None, 'none', [], '')
    by_kernel = {}
    for name, kernel in kernels.items():
        kernel()  # warm-up (thread pool, allocator, oneDNN primitive)
        times = []
        for _ in range(repeats):
            _sync(device)
            start = time.perf_counter()
            kernel()
            _sync(device)
            times.append(time.perf_counter() - start)
        by_kernel[name] = statistics.median(times)
    kernel = min(by_kernel, key=by_kernel.get)
    return dict(n=n, repeats=repeats, kernel=kernel, seconds=by_kernel[kernel],
                gflop_per_s=2 * n**3 / by_kernel[kernel] / 1e9,
                gflop_per_s_by_kernel={name: 2 * n**3 / t / 1e9 for name, t in by_kernel.items()})


def main(argv=None):
    args = parse_args(argv)
    from mmengine.logging import MMLogger
    MMLogger.get_instance('mmengine').setLevel('WARNING')
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.cp_memory_child:  # with_cp_memory's measuring process: one JSON line on stdout
        _set_malloc(**_MALLOC_FOR_MEMORY)
        print(json.dumps(measure_cp_memory(args.models[0], args, device)))
        return
    mallopt_ok = _set_malloc(**_MALLOC_FOR_TIMING)
    isa_caps = [f'{v}={shlex.quote(os.environ[v])}' for v in kernel_choice.ISA_VARIABLES if os.environ.get(v)]
    run = dict(command=' '.join([*isa_caps, 'python', 'tools/analysis_tools/benchmark.py',
                                 *map(shlex.quote, sys.argv[1:] if argv is None else argv)]),
               date=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
               machine=machine_info(), matmul_peak=matmul_peak(device, args.matmul_size),
               linear_mode=linear_mode(), kernel_cache=kernel_choice.cache_path())
    peak = run['matmul_peak']
    print(f'fp32 matmul peak ({args.matmul_size}x{args.matmul_size}, {device.type}, {torch.get_num_threads()} '
          f'threads): {peak["gflop_per_s"]:.1f} GFLOP/s ({peak["kernel"]}; '
          + ', '.join(f'{k} {v:.1f}' for k, v in peak['gflop_per_s_by_kernel'].items()) + ')')
    shapes = [[s] for s in args.sweep_shape] if args.sweep_shape else [args.shape]
    reports = []
    for model in args.models:
        for shape in shapes:
            report = benchmark(model, args, device, mallopt_ok, shape, run['matmul_peak']['gflop_per_s'])
            report.update(run, sweep=bool(args.sweep_shape))
            reports.append(report)
            gc.collect()
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(reports, f, indent=1)
    if args.plot:
        plot_sweep(reports, args.plot)
        print(f'wrote {args.plot}')
    sys.stdout.flush()


def plot_sweep(reports: List[dict], path: str) -> None:
    """img/s and peak memory against the input size, a line per model (solid vitzoo, dashed timm)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    mode = reports[0]['results'][0]['mode']
    fig, (ax_speed, ax_mem) = plt.subplots(1, 2, figsize=(12, 4.5))
    series = {}
    for report in reports:
        row = next(r for r in report['results'] if r['mode'] == mode)
        for key in ('vitzoo', 'timm'):
            if key in row:
                series.setdefault((report['model'], key), []).append((report['shape'][0], row[key]))
    for i, ((model, key), points) in enumerate(sorted(series.items())):
        sizes = [size for size, _ in points]
        style = dict(marker='o', linestyle='-' if key == 'vitzoo' else '--', color=f'C{i % 10}',
                     label=model if key == 'vitzoo' else f'timm {model}')
        ax_speed.plot(sizes, [r['img_per_s'] for _, r in points], **style)
        if all(r['peak_mem_bytes'] is not None for _, r in points):
            ax_mem.plot(sizes, [r['peak_mem_bytes'] / 2**20 for _, r in points], **style)
    first = reports[0]
    mem = 'peak allocated' if first['device'].startswith('cuda') else 'peak RSS growth'
    for ax, label in ((ax_speed, 'img/s (log)'), (ax_mem, f'{mem} (MiB, log)')):
        ax.set_xlabel('input size S (S x S)')
        ax.set_ylabel(label)
        ax.set_yscale('log')
        ax.set_xticks(sorted({r['shape'][0] for r in reports}))
        ax.grid(True, alpha=0.3)
    ax_speed.legend(fontsize=7)
    fig.suptitle(f'{mode}, batch {first["batch_size"]}, {first["device"]} '
                 f'({first["machine"]["torch_threads"]} threads), fp32 eager; {first["date"]}', fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


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


def forward_flops(model, cfg, x1: torch.Tensor, forward=None) -> Optional[int]:
    """FLOPs (2 x MACs, attention matmuls included) of one forward pass of ``x1`` (batch 1), counted by
    vitzoo's counter; classifiers through ``forward``, dense models as get_flops.py counts them."""
    from vitzoo.apis import count_macs, get_model_complexity
    training = model.training
    model.eval()
    try:
        if forward is not None:
            other, attention = count_macs(model, forward, x1)
        else:
            model.cfg = cfg
            c = get_model_complexity(model, tuple(x1.shape[2:]), attn_matmuls='include')
            other, attention = c.macs_without_attention, c.attention_macs
    except Exception as err:  # a model the counter cannot run: no GFLOP/s, the timings still hold
        print(f'FLOP count failed ({type(err).__name__}: {err}): no GFLOP/s')
        return None
    finally:
        model.train(training)
    return 2 * (other + attention)


def with_cp_memory(model_name: str, args, shape: List[int], device: torch.device) -> dict:
    """Peak memory of a training step without and with the backbone's ``with_cp=True``.

    Measured in a fresh process (this script with ``--cp-memory-child``) that never runs with the
    timing allocator settings: free heap blocks left by the timed steps would otherwise be reused
    without showing as growth, and hide part of what checkpointing saves.
    """
    command = [sys.executable, osp.abspath(__file__), model_name, '--cp-memory-child', '--device', str(device),
               '--batch-size', str(args.batch_size), '--shape', *map(str, shape),
               '--threads', str(torch.get_num_threads())]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        return dict(why='the measuring process failed: ' + (proc.stderr.strip().splitlines() or ['?'])[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_cp_memory(model_name: str, args, device: torch.device, steps: int = 3) -> dict:
    """``--cp-memory-child``: the peaks of ``steps`` training steps (median) without and with ``with_cp``."""
    h, w = args.shape[0], args.shape[-1]
    cfg, _ = benchmark_config(model_name, h, w)
    if backbone_class(cfg) is None:
        return dict(why='not a vitzoo backbone: no with_cp')
    x = torch.randn(args.batch_size, 3, h, w, device=device)
    peaks = {}
    for key, with_cp in (('without', False), ('with', True)):
        cfg.model.backbone.with_cp = with_cp
        torch.manual_seed(0)
        model, _, loss, _ = build_vitzoo(cfg, x, device)
        runner = Runner(key, model, None, loss, device)
        runner.set_mode('train')
        runner.train(x)
        values = []
        for _ in range(steps):
            with PeakMemory(device, restore_timing_malloc=False) as peak:
                runner.train(x)
            values.append(peak.peak)
        peaks[key] = None if None in values else statistics.median(values)
        del runner, model, loss
        gc.collect()
    result = dict(peak_mem_bytes_without=peaks['without'], peak_mem_bytes_with=peaks['with'], steps=steps,
                  process='separate')
    if peaks['without'] and peaks['with'] is not None:
        result['ratio'] = peaks['with'] / peaks['without']
    return result


def compiled_runner(runner: 'Runner') -> 'Runner':
    """``runner`` with its inference and loss functions through ``torch.compile`` (same module and weights)."""
    compiled = Runner(f'{runner.label} (compiled)', runner.module, torch.compile(runner._infer),
                      torch.compile(runner._loss), runner.device)
    compiled.key = f'{getattr(runner, "key", "vitzoo")}_compiled'
    compiled.flops = runner.flops
    return compiled


def benchmark_config(model_name: str, h: int, w: int):
    """The config of a model name or file, set up for h x w inputs, and the model's name."""
    cfg, info = load_config(model_name)
    backbone = backbone_class(cfg)
    if backbone is not None and backbone.builds_for_input_size:
        # e.g. PiT's position embedding at the benchmarked size, as timm's (no interpolation per forward)
        cfg.model.backbone.img_size = (h, w)
    return cfg, info.name if info else model_name


def benchmark(model_name: str, args, device: torch.device, mallopt_ok: bool, shape: Optional[List[int]] = None,
              peak_gflops: Optional[float] = None) -> dict:
    shape = shape or args.shape
    h, w = shape[0], shape[-1]
    cfg, name = benchmark_config(model_name, h, w)
    torch.manual_seed(0)
    print(f'=== {name}')
    x = torch.randn(args.batch_size, 3, h, w, device=device)
    model, forward, loss, num_classes = build_vitzoo(cfg, x, device)
    runners = [Runner(f'vitzoo {name}', model, forward, loss, device)]
    classifier = num_classes is not None
    runners[0].flops = forward_flops(model, cfg, x[:1], forward if classifier else None)
    report = dict(model=name, task='classification' if classifier else cfg.model.type,
                  batch_size=args.batch_size, shape=[h, w], device=str(device),
                  warmup=args.warmup, iters=args.iters, rounds=args.rounds,
                  flops_per_image=dict(vitzoo=runners[0].flops))
    if 'aten' in args.compare:
        runners.append(Runner(f'vitzoo {name}, linear on ATen', model, forward, loss, device, linear_mode='aten'))
        runners[-1].key = 'vitzoo_aten'
        runners[-1].flops = runners[0].flops
    if 'timm' in args.compare:
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
            runners[-1].flops = report['flops_per_image']['timm'] = forward_flops(tmodel, None, x[:1], tmodel)
    if args.backend == 'onnxruntime':
        runners.append(onnxruntime_runner(model, cfg, x, report))
        runners[-1].flops = runners[0].flops
    if args.compile:
        if classifier:
            runners += [compiled_runner(r) for r in list(runners)]
        else:
            print('--compile: classifiers only (a dense model\'s predict/loss run toolbox code); eager only')
    flops = runners[0].flops
    if flops:
        print(f'forward: {flops / 1e9:.3f} GFLOPs per image (2 x MACs, attention matmuls included); '
              'a training step counts 3x')

    modes = ['infer', 'train'] if args.mode == 'both' else [args.mode]
    threads = f'{torch.get_num_threads()} threads' if device.type == 'cpu' else torch.cuda.get_device_name(device)
    print(f'batch {args.batch_size}, {h}x{w}, {device.type} ({threads}), fp32 eager; {args.warmup} warm-up, '
          f'{args.rounds} rounds x {args.iters} iterations (models alternate), median img/s')
    mem_label = 'peak alloc (MiB)' if device.type == 'cuda' else 'peak RSS growth (MiB)'
    if device.type == 'cpu' and not mallopt_ok:
        mem_label += ' [approximate: mallopt unavailable]'
    results = []
    for mode in modes:
        for runner in runners:
            runner.set_mode(mode)
            step = getattr(runner, mode)
            _sync(device)
            start = time.perf_counter()
            step(x)  # the first call (a compiled model compiles here)
            _sync(device)
            runner.first_call_s = time.perf_counter() - start
            for _ in range(args.warmup - 1):
                step(x)
            _sync(device)
            with PeakMemory(device) as peak:
                step(x)
            runner.peak = peak.peak
            runner.times = []
            runner.kernels.clear()
        for _ in range(args.rounds):
            for runner in runners:
                step = getattr(runner, mode)
                counts_before = collections.Counter(kernel_counts())
                _sync(device)
                start = time.perf_counter()
                for _ in range(args.iters):
                    step(x)
                _sync(device)
                runner.times.append(time.perf_counter() - start)
                runner.kernels.update(collections.Counter(kernel_counts()) - counts_before)
        print(f'{mode}:')
        print(f'  {"model":<52} {"img/s":>9} {mem_label:>22} {"GFLOP/s":>8} {"of peak":>8}')
        row = dict(mode=mode)
        for runner in runners:
            throughput = statistics.median(args.batch_size * args.iters / t for t in runner.times)
            key = getattr(runner, 'key', 'vitzoo')
            entry = row[key] = dict(model=runner.label, img_per_s=throughput, peak_mem_bytes=runner.peak,
                                    img_per_s_rounds=[args.batch_size * args.iters / t for t in runner.times])
            if key.startswith('vitzoo'):  # what ran, counted from the timed calls
                entry['linear_kernels'] = {f'{product}/{kernel}': calls
                                           for (product, kernel), calls in sorted(runner.kernels.items())}
            line = f'  {runner.label:<52} {throughput:>9.2f} '
            line += f'{runner.peak / 2**20:>22.1f}' if runner.peak is not None else f'{"n/a":>22}'
            if runner.flops:
                entry['gflop_per_s'] = runner.flops * (3 if mode == 'train' else 1) * throughput / 1e9
                line += f' {entry["gflop_per_s"]:>8.1f}'
                if peak_gflops:
                    entry['peak_fraction'] = entry['gflop_per_s'] / peak_gflops
                    line += f' {entry["peak_fraction"]:>8.1%}'
            if key.endswith('_compiled'):
                entry['compile_s'] = runner.first_call_s
                line += f'  (first call, compiling: {runner.first_call_s:.1f} s)'
            print(line)
        if 'vitzoo_aten' in row:
            row['kernel_gain'] = paired_ratio(row, 'vitzoo', 'vitzoo_aten')
            line = f'  vitzoo with its kernel choice / with ATen kernels ({mode}): {row["kernel_gain"]:.2f}x img/s'
            if 'timm' in row:
                row['aten_ratio'] = paired_ratio(row, 'vitzoo_aten', 'timm')
                line += f'; vitzoo on ATen / timm: {row["aten_ratio"]:.2f}x'
            print(line)
        onednn_share = sum(c for k, c in row['vitzoo']['linear_kernels'].items() if not k.endswith('/aten'))
        print(f'  vitzoo linear products on oneDNN: {onednn_share} of {sum(row["vitzoo"]["linear_kernels"].values())}')
        other = next((k for k in ('timm', 'onnxruntime') if k in row), None)
        if other:
            row['ratio'] = paired_ratio(row, 'vitzoo', other)
            line = f'  ratio vitzoo/{other} ({mode}): {row["ratio"]:.2f}x img/s'
            if row['vitzoo']['peak_mem_bytes'] and row[other]['peak_mem_bytes']:
                row['memory_ratio'] = row['vitzoo']['peak_mem_bytes'] / row[other]['peak_mem_bytes']
                line += f', {row["memory_ratio"]:.2f}x peak memory'
            print(line)
        if 'vitzoo_compiled' in row:
            row['compile_speedup'] = row['vitzoo_compiled']['img_per_s'] / row['vitzoo']['img_per_s']
            line = f'  compiled/eager vitzoo ({mode}): {row["compile_speedup"]:.2f}x img/s'
            if 'timm_compiled' in row:
                row['compiled_ratio'] = row['vitzoo_compiled']['img_per_s'] / row['timm_compiled']['img_per_s']
                line += f'; ratio compiled vitzoo/compiled timm: {row["compiled_ratio"]:.2f}x img/s'
            print(line)
        if mode == 'train' and args.with_cp_memory:
            cp = row['with_cp'] = with_cp_memory(model_name, args, [h, w], device)
            if 'ratio' in cp:
                print(f'  with_cp=True: {mem_label} {cp["peak_mem_bytes_with"] / 2**20:.1f} vs '
                      f'{cp["peak_mem_bytes_without"] / 2**20:.1f} without: {cp["ratio"]:.2f}x')
            else:
                print(f'  with_cp: {cp.get("why", "no memory measure")}')
        results.append(row)
    report['results'] = results
    return report


if __name__ == '__main__':
    main()
