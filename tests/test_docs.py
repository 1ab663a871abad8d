"""Every ``>>>`` example in vitzoo's docstrings runs as a doctest, so no example can go stale.

Modules are found by scanning the package, so a new example is tested without editing this file.
Examples that need the network are written as plain code blocks (``Example::``), not doctests.
"""
import doctest
import importlib
import os.path as osp
import pkgutil

import pytest

import vitzoo


def modules_with_examples():
    names = []
    for info in pkgutil.walk_packages(vitzoo.__path__, prefix='vitzoo.'):
        spec = importlib.util.find_spec(info.name)
        if spec.origin and spec.origin.endswith('.py') and osp.isfile(spec.origin):
            with open(spec.origin, encoding='utf-8') as f:
                if '>>>' in f.read():
                    names.append(info.name)
    return sorted(names)


def test_examples_are_found():
    assert 'vitzoo.models.backbones.twins' in modules_with_examples()


@pytest.mark.parametrize('name', modules_with_examples())
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0, f'{result.failed} of {result.attempted} examples in {name} failed (output above)'
