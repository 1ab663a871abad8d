import functools
import http.server
import os
import os.path as osp
import shutil
import sys
import tempfile
import threading

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO, 'tests'))


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: longer than the 15-minute CI budget allows (make test-slow)')
    config.addinivalue_line('markers', 'kernel_path: results depend on the CPU kernels that run (parity, contract); '
                            'make test and make test-slow repeat them under other kernel paths (README "Tests")')
    # One kernel cache for the whole run and the tools it starts (vitzoo.models.kernel_choice): measured
    # afresh by every run, shared by its processes (which then pick the same kernels), and never the user's.
    if 'VITZOO_KERNEL_CACHE' not in os.environ:
        config._vitzoo_kernel_cache = os.environ['VITZOO_KERNEL_CACHE'] = tempfile.mkdtemp(prefix='vitzoo-kernels-')


def pytest_unconfigure(config):
    folder = getattr(config, '_vitzoo_kernel_cache', None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def served(tmp_path):
    """A directory served on http://127.0.0.1:<port>/ during the test: ``(root, base_url)``."""
    root = tmp_path / 'served'
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()


@pytest.fixture(scope='session')
def digits_root(tmp_path_factory):
    """scikit-learn's digits exported in the ImageNet folder layout (32x32 RGB PNGs)."""
    sys.path.insert(0, osp.join(REPO, 'tools', 'dataset_converters'))
    from digits_to_imagenet import export
    root = str(tmp_path_factory.mktemp('digits'))
    export(root, size=32)
    return root


@pytest.fixture(scope='session')
def trained_demo(digits_root, tmp_path_factory):
    """The digits demo model after 3 epochs of tools/train.py on the full training split.

    Returns ``(work_dir, checkpoint)``; the work dir holds MMEngine's logs (vis_data/scalars.json).
    """
    from helpers import run_tool
    work_dir = str(tmp_path_factory.mktemp('trained_demo'))
    options = [f'{loader}.{key}' for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
               for key in (f'dataset.data_root={digits_root}', 'num_workers=0', 'persistent_workers=False')]
    options += ['train_cfg.max_epochs=3', 'train_cfg.val_interval=3', 'default_hooks.checkpoint.interval=3']
    run_tool('tools/train.py', 'configs/demo/twins-pcpvt-tiny_1xb64_digits.py', '--work-dir', work_dir,
             '--cfg-options', *options)
    return work_dir, osp.join(work_dir, 'epoch_3.pth')


@pytest.fixture(autouse=True)
def _restore_default_scope():
    """Building a Runner or a toolbox model sets MMEngine's global default scope; undo it per test."""
    from mmengine.registry import DefaultScope
    saved = dict(DefaultScope._instance_dict)
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(saved)
