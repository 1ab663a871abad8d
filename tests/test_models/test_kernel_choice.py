"""vitzoo.models.kernel_choice: kernels chosen by measurement, written before use, shared by processes."""
import json
import os
import os.path as osp
import subprocess
import sys
import textwrap

import pytest
import torch

from vitzoo.models import kernel_choice
from vitzoo.models.kernel_choice import ATEN, MARGIN, cache_path, choose, cpu_signature, forget_choices, pick
from vitzoo.models.linear import kernel_counts, linear, onednn_available, onednn_linear, reset_kernel_counts

from helpers import REPO


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty kernel cache folder for this test; choices held in memory are dropped before and after."""
    monkeypatch.setenv('VITZOO_KERNEL_CACHE', str(tmp_path / 'kernels'))
    forget_choices()
    yield tmp_path / 'kernels'
    forget_choices()


def counting(kernels: dict, calls: list) -> dict:
    """Candidates that record their calls and return nothing."""
    return {name: (lambda name=name: calls.append(name)) for name in kernels}


def test_pick_keeps_aten_unless_clearly_slower():
    assert pick({ATEN: 1.0, 'onednn': 0.5}) == 'onednn'
    assert pick({ATEN: 1.0, "onednn": 1 - MARGIN / 2}) == ATEN  # within the margin: ATen
    assert pick({ATEN: 1.0, 'onednn': 1.2}) == ATEN
    assert pick({ATEN: 1.0, 'onednn-nk': 0.95, 'onednn-kn': 0.6}) == 'onednn-kn'


def test_a_choice_is_measured_once_written_before_use_and_read_by_the_next_process(cache, monkeypatch):
    calls = []
    monkeypatch.setattr(kernel_choice, 'measure', lambda candidates: calls.append(sorted(candidates))
                        or {ATEN: 2.0, 'onednn': 1.0})
    candidates = lambda: counting([ATEN, 'onednn'], [])  # noqa: E731
    assert choose('forward', 3000, (64, 512), candidates) == 'onednn'
    assert choose('forward', 4096, (64, 512), candidates) == 'onednn'  # same bucket: not measured again
    assert calls == [[ATEN, 'onednn']]
    stored = json.load(open(cache_path()))
    key = f't{torch.get_num_threads()} forward m4096 64 512'
    assert stored['choices'] == {key: {'kernel': 'onednn', 'ms': {ATEN: 2000.0, 'onednn': 1000.0}}}
    assert stored['signature'] == cpu_signature()
    # another process with the same cache folder uses the stored choice and measures nothing
    script = textwrap.dedent(f'''
        import torch
        torch.set_num_threads({torch.get_num_threads()})
        from vitzoo.models import kernel_choice
        kernel_choice.measure = lambda candidates: 1 / 0
        print(kernel_choice.choose('forward', 2049, (64, 512), lambda: 1 / 0))
    ''')
    out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, cwd=REPO,
                         env=dict(os.environ, PYTHONPATH=REPO), check=True).stdout
    assert out.strip() == 'onednn'


def test_a_choice_in_the_file_wins_over_a_new_measurement(cache, monkeypatch):
    """Two processes measuring the same product at once end up running the same kernel: the first
    written wins (here the other process wrote while this one measured)."""
    key = kernel_choice.key_of('weight_grad', 100, 96, 96)

    def measure_while_another_process_writes(candidates):
        other = {'choices': {key: {'kernel': 'onednn-kn', 'ms': {}}}}
        os.makedirs(osp.dirname(cache_path()), exist_ok=True)
        with open(cache_path(), 'w') as f:
            json.dump(other, f)
        return {ATEN: 1.0, 'onednn-nk': 2.0, 'onednn-kn': 2.0}

    monkeypatch.setattr(kernel_choice, 'measure', measure_while_another_process_writes)
    assert choose('weight_grad', 100, (96, 96), lambda: {}) == 'onednn-kn'
    assert json.load(open(cache_path()))['choices'][key]['kernel'] == 'onednn-kn'


def test_the_cache_file_belongs_to_the_processor_signature_and_isa_caps(cache, monkeypatch):
    for variable in kernel_choice.ISA_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    plain = cache_path()
    monkeypatch.setenv('ONEDNN_MAX_CPU_ISA', 'AVX2')
    capped = cache_path()
    assert capped != plain and osp.dirname(capped) == osp.dirname(plain) == str(cache)
    assert cpu_signature()['ONEDNN_MAX_CPU_ISA'] == 'AVX2'
    assert osp.basename(plain).startswith(f'linear-{torch.__version__.split("+")[0]}-')


def test_an_unwritable_cache_keeps_choices_in_memory_with_a_warning(tmp_path, monkeypatch):
    blocker = tmp_path / 'a-file'
    blocker.write_text('')
    monkeypatch.setenv('VITZOO_KERNEL_CACHE', str(blocker / 'kernels'))  # below a file: cannot be created
    monkeypatch.setattr(kernel_choice, '_warned_unwritable', False)
    monkeypatch.setattr(kernel_choice, 'measure', lambda candidates: {ATEN: 1.0, 'onednn': 0.1})
    forget_choices()
    try:
        with pytest.warns(UserWarning, match='cannot write the kernel cache .*VITZOO_KERNEL_CACHE'):
            assert choose('forward', 10, (8, 8), lambda: {}) == 'onednn'
        assert choose('forward', 10, (8, 8), lambda: 1 / 0) == 'onednn'  # from memory
    finally:
        forget_choices()


def test_a_damaged_cache_file_is_named_and_measured_again(cache, monkeypatch):
    os.makedirs(cache)
    with open(cache_path(), 'w') as f:
        f.write('{"choices": ')  # a truncated file (a full disk)
    monkeypatch.setattr(kernel_choice, 'measure', lambda candidates: {ATEN: 1.0, 'onednn': 2.0})
    with pytest.warns(UserWarning, match='unreadable kernel cache .*linear-'):
        assert choose('forward', 10, (8, 8), lambda: {}) == ATEN
    assert json.load(open(cache_path()))['choices']


def test_measure_times_every_candidate_alternating():
    calls = []
    seconds = kernel_choice.measure(counting(['a', 'b'], calls))
    assert set(seconds) == {'a', 'b'} and all(0 < s < 1e-2 for s in seconds.values())
    assert calls.count('a') == calls.count('b') > kernel_choice._ROUNDS  # tiny calls are repeated
    assert calls[0] == 'a' and calls[1] == 'b'  # the warm-up calls, then rounds of each in turn


@pytest.mark.skipif(not onednn_available(), reason='PyTorch built without oneDNN')
def test_auto_runs_the_kernels_written_in_the_cache(cache):
    """What the file says is what runs: a prepared cache makes auto run oneDNN for the forward
    product and ATen for the gradients, without measuring."""
    x, weight = torch.randn(50, 32, requires_grad=True), torch.randn(48, 32, requires_grad=True)
    threads = torch.get_num_threads()
    choices = {f't{threads} forward m64 32 48': 'onednn', f't{threads} input_grad m64 48 32': ATEN,
               f't{threads} weight_grad m64 48 32': ATEN}
    os.makedirs(cache)
    with open(cache_path(), 'w') as f:
        json.dump({'choices': {key: {'kernel': kernel} for key, kernel in choices.items()}}, f)
    reset_kernel_counts()
    with onednn_linear('auto'):
        linear(x, weight).sum().backward()
    assert kernel_counts() == {('forward', 'onednn'): 1, ('input_grad', ATEN): 1, ('weight_grad', ATEN): 1}


def test_the_cache_file_is_fixed_for_the_process_once_read(cache, tmp_path, monkeypatch):
    """A kernel that ran stays the process's choice: changing VITZOO_KERNEL_CACHE later neither drops the
    choices in use (a product would be measured, and might switch kernels, mid-run) nor splits them
    over two files."""
    monkeypatch.setattr(kernel_choice, 'measure', lambda candidates: {ATEN: 1.0, 'onednn': 0.5})
    assert choose('forward', 10, (8, 8), lambda: {}) == 'onednn'
    first_file = cache_path()
    monkeypatch.setenv('VITZOO_KERNEL_CACHE', str(tmp_path / 'elsewhere'))
    monkeypatch.setattr(kernel_choice, 'measure', lambda candidates: 1 / 0)
    assert choose('forward', 10, (8, 8), lambda: {}) == 'onednn'
    monkeypatch.setattr(kernel_choice, 'measure', lambda candidates: {ATEN: 1.0, 'onednn': 2.0})
    assert choose('input_grad', 10, (8, 8), lambda: {}) == ATEN
    assert len(json.load(open(first_file))['choices']) == 2 and not osp.exists(tmp_path / 'elsewhere')
