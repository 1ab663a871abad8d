"""vitzoo: Twins, DaViT, PiT and LVT backbones for the OpenMMLab 2.x toolboxes."""
import os
import os.path as osp
import shutil
import sys

from setuptools import find_packages, setup

MIM_FILES = ('configs', 'tools', 'model-index.yml')


def get_version() -> str:
    scope = {}
    with open('vitzoo/version.py') as f:
        exec(compile(f.read(), 'vitzoo/version.py', 'exec'), scope)
    return scope['__version__']


def parse_requirements(fname: str) -> list:
    """Requirement lines of ``fname``, following ``-r other.txt`` includes."""
    requirements = []
    with open(fname) as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if not line:
                continue
            if line.startswith('-r '):
                requirements += parse_requirements(osp.join(osp.dirname(fname), line[3:].strip()))
            elif not line.startswith('-'):
                requirements.append(line)
    return requirements


def add_mim_extension() -> None:
    """Expose configs/ and tools/ as vitzoo/.mim/* so ``vitzoo::`` config paths resolve.

    Editable installs get symlinks, wheels and sdists get copies.
    """
    if any(cmd in sys.argv for cmd in ('develop', 'editable_wheel')):
        mode = 'symlink'
    elif any(cmd in sys.argv for cmd in ('sdist', 'bdist_wheel', 'build', 'install')):
        mode = 'copy'
    else:
        return
    root = osp.dirname(osp.abspath(__file__))
    mim_dir = osp.join(root, 'vitzoo', '.mim')
    os.makedirs(mim_dir, exist_ok=True)
    for name in MIM_FILES:
        src, dst = osp.join(root, name), osp.join(mim_dir, name)
        if not osp.exists(src):
            continue
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            os.symlink(osp.relpath(src, mim_dir), dst)
        elif osp.isdir(src):
            shutil.copytree(src, dst)
        else:
            shutil.copyfile(src, dst)


if __name__ == '__main__':
    add_mim_extension()
    with open('README.md', encoding='utf-8') as f:
        long_description = f.read()
    setup(
        name='vitzoo',
        version=get_version(),
        description='Twins, DaViT, PiT and LVT backbones for mmpretrain, mmsegmentation and mmdetection',
        long_description=long_description,
        long_description_content_type='text/markdown',
        license='Apache License 2.0',
        python_requires='>=3.10',
        packages=find_packages(exclude=('configs', 'tools', 'demo', 'tests', 'tests.*')),
        include_package_data=True,
        install_requires=parse_requirements('requirements/runtime.txt'),
        extras_require={
            'all': parse_requirements('requirements.txt'),
            'tests': parse_requirements('requirements/tests.txt'),
            'deploy': parse_requirements('requirements/deploy.txt'),
            'mim': parse_requirements('requirements/mminstall.txt'),
        },
        zip_safe=False,
    )
