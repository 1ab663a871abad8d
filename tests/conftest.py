import os
import os.path as osp
import sys

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO, 'tests'))


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: longer than the 15-minute CI budget allows (make test-slow)')


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope='session')
def digits_root(tmp_path_factory):
    """scikit-learn's digits exported in the ImageNet folder layout (32x32 RGB PNGs)."""
    sys.path.insert(0, osp.join(REPO, 'tools', 'dataset_converters'))
    from digits_to_imagenet import export
    root = str(tmp_path_factory.mktemp('digits'))
    export(root, size=32)
    return root
