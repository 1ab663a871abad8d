"""Which kernel runs each matrix product of the linear layers, chosen by measurement on this machine.

oneDNN's fp32 GEMM, which ships inside PyTorch, is about twice as fast as MKL's sgemm (what
``F.linear`` calls) on an AVX-512 AMD EPYC, and slower than it on others (an AVX2-only EPYC,
oneDNN capped with ``ONEDNN_MAX_CPU_ISA=AVX2``). No fixed rule holds on every processor, so the
first product of each kind and shape is timed with every candidate kernel, on its own operands,
and the fastest is kept: oneDNN only where it beats ATen by more than :data:`MARGIN`.

A choice is written to the cache *before* it is first used, and a choice already in the cache
wins over a new measurement: every process on the machine (ranks, a resumed run, the tests)
runs a product with the same kernel, so results stay reproducible bit for bit.

Cache: one JSON file per processor signature (vendor, model, ISA flags and the ISA caps of the
environment) and torch version, in ``~/.cache/vitzoo/kernels`` or ``VITZOO_KERNEL_CACHE``, written
atomically under a file lock; delete it to measure again. Entries are keyed by thread count,
product, tokens (rounded up to a power of two) and the two widths. Where the folder cannot be
written, choices live in memory only (with one warning).
"""
import hashlib
import json
import os
import os.path as osp
import platform
import re
import time
import warnings
from typing import Callable, Dict, Mapping, Optional

import torch
from filelock import FileLock

from vitzoo.utils.atomic import write_atomically

__all__ = ['ATEN', 'MARGIN', 'cache_path', 'cpu_signature', 'choose', 'known_choices', 'forget_choices']

ATEN = 'aten'
# oneDNN must be this much faster than ATen to be chosen: one measurement of a few calls varies by a few
# percent, and a product timed alone can run differently amid a model's memory traffic.
MARGIN = 0.10
DEFAULT_CACHE = osp.join(osp.expanduser('~'), '.cache', 'vitzoo', 'kernels')
# Environment variables that change which code path MKL or oneDNN takes on the same processor.
ISA_VARIABLES = ('ONEDNN_MAX_CPU_ISA', 'DNNL_MAX_CPU_ISA', 'MKL_ENABLE_INSTRUCTIONS', 'MKL_DEBUG_CPU_TYPE',
                 'MKL_CBWR', 'ONEDNN_DEFAULT_FPMATH_MODE')
ISA_FLAGS = ('avx', 'avx2', 'fma', 'avx512f', 'avx512bw', 'avx512vl', 'avx512_vnni', 'avx512_bf16', 'amx_tile',
             'amx_bf16', 'asimd', 'sve')
_TARGET_SECONDS = 1e-3  # each timed repetition lasts at least this long (tiny products are repeated)
_ROUNDS = 3

_choices: Dict[str, str] = {}
_loaded_from: Optional[str] = None
_warned_unwritable = False


def cpu_signature() -> Dict[str, str]:
    """What decides the speed of a kernel here: processor, ISA flags, ISA caps, torch version."""
    info = {'machine': platform.machine(), 'torch': torch.__version__}
    try:
        with open('/proc/cpuinfo') as f:
            text = f.read()
    except OSError:
        text = ''
    for field, name in (('vendor_id', 'vendor'), ('model name', 'model_name'), ('cpu family', 'family'),
                        ('model', 'model'), ('stepping', 'stepping')):
        match = re.search(rf'^{field}\s*:\s*(.*)$', text, re.M)
        if match:
            info[name] = match.group(1).strip()
    flags = re.search(r'^(?:flags|Features)\s*:\s*(.*)$', text, re.M)
    present = set(flags.group(1).split()) if flags else set()
    info['isa'] = ' '.join(flag for flag in ISA_FLAGS if flag in present) or platform.processor()
    for variable in ISA_VARIABLES:
        if os.environ.get(variable):
            info[variable] = os.environ[variable]
    return info


def cache_path() -> str:
    """The cache file of this processor signature and torch version."""
    signature = cpu_signature()
    digest = hashlib.sha256(json.dumps(signature, sort_keys=True).encode()).hexdigest()[:16]
    folder = os.environ.get('VITZOO_KERNEL_CACHE', DEFAULT_CACHE)
    return osp.join(folder, f'linear-{signature["torch"].split("+")[0]}-{digest}.json')


def _read(path: str) -> Dict[str, dict]:
    try:
        with open(path) as f:
            return json.load(f)['choices']
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as e:
        warnings.warn(f'vitzoo: ignoring the unreadable kernel cache {path} ({e}); measuring again')
        return {}


def _load() -> str:
    """The process's cache file, read once: a kernel that ran stays this process's choice, whatever
    the environment says later. Returns its path."""
    global _loaded_from
    if _loaded_from is None:
        path = cache_path()
        _choices.update({key: entry['kernel'] for key, entry in _read(path).items()})
        _loaded_from = path
    return _loaded_from


def known_choices() -> Dict[str, str]:
    """``{key: kernel}`` of every product chosen so far (this process and the cache file)."""
    _load()
    return dict(_choices)


def forget_choices() -> None:
    """Drop the choices held in memory; the next product reads the cache file (``VITZOO_KERNEL_CACHE``) again."""
    global _loaded_from
    _choices.clear()
    _loaded_from = None


def _persist(key: str, kernel: str, seconds: Mapping[str, float]) -> str:
    """Add ``key`` to the cache file unless another process got there first; returns the kernel to use."""
    global _warned_unwritable
    path = _load()
    try:
        os.makedirs(osp.dirname(path), exist_ok=True)
        with FileLock(path + '.lock', timeout=60):
            choices = _read(path)
            if key in choices:
                return choices[key]['kernel']
            choices[key] = {'kernel': kernel, 'ms': {name: round(s * 1e3, 4) for name, s in seconds.items()}}
            write_atomically(path, json.dumps({'signature': cpu_signature(), 'choices': choices}, indent=0,
                                              sort_keys=True))
    except OSError as e:
        if not _warned_unwritable:
            warnings.warn(f'vitzoo: cannot write the kernel cache {path} ({e}); kernel choices are kept in '
                          'memory only, so other processes may choose differently (set VITZOO_KERNEL_CACHE '
                          'to a writable folder)')
            _warned_unwritable = True
    return kernel


def _time(run: Callable[[], object], repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    return (time.perf_counter() - start) / repeats


def measure(candidates: Mapping[str, Callable[[], object]]) -> Dict[str, float]:
    """Seconds per call of each candidate: the best of a few rounds, the candidates alternating."""
    first = {name: _time(run, 1) for name, run in candidates.items()}  # warm-up (oneDNN builds its primitive)
    repeats = {name: max(1, min(50, round(_TARGET_SECONDS / max(first[name], 1e-7)))) for name in candidates}
    best = {name: float('inf') for name in candidates}
    for _ in range(_ROUNDS):
        for name, run in candidates.items():
            best[name] = min(best[name], _time(run, repeats[name]))
    return best


def pick(seconds: Mapping[str, float]) -> str:
    """The fastest candidate, ATen unless another is faster than it by more than :data:`MARGIN`."""
    fastest = min(seconds, key=seconds.get)
    if ATEN in seconds and seconds[fastest] > (1 - MARGIN) * seconds[ATEN]:
        return ATEN
    return fastest


def key_of(product: str, tokens: int, *widths: int) -> str:
    """Cache key: threads, product, tokens rounded up to a power of two, widths."""
    bucket = 1 << max(0, int(tokens) - 1).bit_length()
    return f't{torch.get_num_threads()} {product} m{bucket} ' + ' '.join(map(str, widths))


def choose(product: str, tokens: int, widths, candidates: Callable[[], Mapping[str, Callable[[], object]]]) -> str:
    """The kernel for ``product`` at this size: from memory, the cache file, or measured now.

    ``candidates()`` returns ``{kernel name: a call that runs the product with it}`` (only called
    when the choice is measured; the calls run without autograd and their results are dropped).
    """
    key = key_of(product, tokens, *widths)
    kernel = _choices.get(key)
    if kernel is None:
        _load()
        kernel = _choices.get(key)
    if kernel is None:
        with torch.no_grad():
            seconds = measure(candidates())
        kernel = _persist(key, pick(seconds), seconds)
        _choices[key] = kernel
    return kernel
