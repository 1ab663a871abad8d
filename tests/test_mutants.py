"""One mutant per guarantee: break the code behind a promise in a copy of the repository and the tests
that guard it must fail.

Each mutant replaces one line of the real source (the text must occur exactly once, so a change to the
code that moves the line fails here instead of testing nothing) in a temporary copy of the repository,
and runs the guarding tests there in a fresh process. They must *fail* (pytest exit status 1): a
collection error or "no tests" does not count. A control run of every guarding test on the unmutated
copy must pass first. ``make mutation`` runs the full mutation testing; this is the subset CI keeps,
so that a later change that weakens a guarding test goes red at once.
"""
import os
import shutil
import subprocess
import sys
from typing import NamedTuple, Tuple

import pytest

from helpers import REPO


class Mutant(NamedTuple):
    guarantee: str
    path: str
    original: str
    mutated: str
    guards: Tuple[str, ...]


MUTANTS = [
    Mutant('parity: the MLP branch normalised by norm1 instead of norm2', 'vitzoo/models/layers.py',
           'return self.drop_path.add(x, self.mlp(self.norm2(x), size))',
           'return self.drop_path.add(x, self.mlp(self.norm1(x), size))',
           ('tests/test_models/test_twins.py::test_odd_sizes_match_timm',)),
    Mutant('strict loading: a checkpoint that does not fit loads whatever fits', 'vitzoo/models/checkpoint.py',
           'if not fit.exact and (strict or not fit.matched):', 'if not fit.matched:',
           ('tests/test_strict_loading.py::test_get_model_loads_strictly',)),
    Mutant('SIGKILL-safe files: written in place instead of through a temporary file', 'vitzoo/utils/atomic.py',
           '    tmp = temporary_name(path)\n    try:\n        with open(tmp, \'wb\') as f:',
           '    tmp = path\n    try:\n        with open(tmp, \'wb\') as f:',
           ('tests/test_utils/test_atomic.py',)),
    Mutant('exact resume: torch\'s generator not restored', 'vitzoo/engine/hooks/random_state.py',
           "    torch.set_rng_state(state['torch'])\n    if state['cuda']", "    if state['cuda']",
           ('tests/test_engine/test_random_state.py',)),
    Mutant('non-finite loss stops: the check never fires', 'vitzoo/engine/hooks/non_finite.py',
           'if self._non_finite_on_any_rank(loss):', 'if False:',
           ('tests/test_reliability.py::test_non_finite_loss_stops_before_the_step',)),
    Mutant('trusted downloads: the sha256 in the file name is not checked', 'vitzoo/utils/download.py',
           'if not actual.startswith(expected):', 'if False:',
           ('tests/test_reliability.py::test_download_hash_mismatch_is_refused_and_removed',)),
    Mutant('verified exports: "as exact as PyTorch" allows 1000x PyTorch\'s error', 'vitzoo/deploy/export.py',
           'ok = export_error <= 2 * torch_error', 'ok = export_error <= 1000 * torch_error',
           ('tests/test_export.py::test_verification_beyond_the_tolerance_needs_an_export_as_exact_as_pytorch',)),
    Mutant('linear kernels: oneDNN never runs where it is chosen', 'vitzoo/models/linear.py',
           '_FORWARD = {ATEN: _aten_forward, ONEDNN: _onednn}',
           '_FORWARD = {ATEN: _aten_forward, ONEDNN: _aten_forward}',
           ('tests/test_models/test_linear.py::test_kernel_counts_are_what_ran',)),
    Mutant('kernel choice: used before it is written to the cache', 'vitzoo/models/kernel_choice.py',
           'kernel = _persist(key, pick(seconds), seconds)', 'kernel = pick(seconds)',
           ('tests/test_models/test_kernel_choice.py',)),
]
IGNORED = shutil.ignore_patterns('.venv', '.git', 'work_dirs', 'data', '__pycache__', '*.egg-info', '.pytest_cache')


def run_guards(root: str, guards) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=root)  # the copy's vitzoo before the installed (editable) one
    return subprocess.run([sys.executable, '-m', 'pytest', '-x', '-q', '-p', 'no:randomly', '-p', 'no:cacheprovider',
                           *guards], cwd=root, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope='module')
def copy(tmp_path_factory):
    """A copy of the repository whose guarding tests pass unmutated (the control run)."""
    root = str(tmp_path_factory.mktemp('mutants') / 'repo')
    shutil.copytree(REPO, root, ignore=IGNORED)
    control = run_guards(root, sorted({guard for mutant in MUTANTS for guard in mutant.guards}))
    assert control.returncode == 0, f'the guarding tests fail unmutated:\n{control.stdout[-3000:]}'
    return root


@pytest.mark.parametrize('mutant', MUTANTS, ids=[m.path.split('/')[-1] for m in MUTANTS])
def test_the_guarding_tests_fail_on_the_mutant(copy, mutant):
    path = os.path.join(copy, mutant.path)
    with open(path) as f:
        source = f.read()
    assert source.count(mutant.original) == 1, f'{mutant.path} no longer holds the mutated line once'
    try:
        with open(path, 'w') as f:
            f.write(source.replace(mutant.original, mutant.mutated))
        result = run_guards(copy, mutant.guards)
    finally:
        with open(path, 'w') as f:
            f.write(source)
    assert result.returncode == 1, (f'{mutant.guarantee}: the guarding tests {mutant.guards} did not fail '
                                    f'(pytest exit status {result.returncode}):\n{result.stdout[-3000:]}')
