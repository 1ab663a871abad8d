"""tools/install.sh stops at the first failure, and before it starts when the disk is too small.

The venv's python is replaced by a shim that logs its calls, so no test installs anything.
"""
import os
import os.path as osp
import stat
import subprocess

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
INSTALL = osp.join(REPO, 'tools', 'install.sh')
DISK_FULL = 'ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device'


def make_venv(tmp_path, has_torch: bool):
    """A venv whose python logs every call, fails `pip install` as a full disk does, and has torch or not."""
    venv = tmp_path / 'venv'
    (venv / 'bin').mkdir(parents=True)
    calls = tmp_path / 'calls.log'
    shim = venv / 'bin' / 'python'
    shim.write_text(f"""#!/bin/sh
echo "$*" >> {calls}
case "$*" in
    *"-m pip install"*) echo "{DISK_FULL}" >&2; exit 1 ;;
    *"import torch"*) exit {0 if has_torch else 1} ;;
esac
""")
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    return venv, calls


def run_install(venv, tmp_path, need_mb: int):
    env = dict(os.environ, VENV=str(venv), VITZOO_WHEEL_CACHE=str(tmp_path / 'wheels'),
               VITZOO_INSTALL_NEED_MB=str(need_mb))
    return subprocess.run(['bash', INSTALL], env=env, capture_output=True, text=True, timeout=60)


def test_install_stops_at_the_first_failing_pip(tmp_path):
    venv, calls = make_venv(tmp_path, has_torch=True)
    result = run_install(venv, tmp_path, need_mb=0)
    assert result.returncode == 1
    assert DISK_FULL in result.stdout + result.stderr
    assert '[install] ERROR: pip install --upgrade pip setuptools wheel failed' in result.stderr
    # Nothing ran after the failed pip: not the torch step, not the mmcv build.
    assert 'torch 2.14.1' not in result.stdout
    assert calls.read_text().count('-m pip') == 1


def test_install_refuses_to_start_without_room_for_torch(tmp_path):
    venv, calls = make_venv(tmp_path, has_torch=False)
    result = run_install(venv, tmp_path, need_mb=10**9)
    assert result.returncode == 1
    assert f'MB free on the file system of {venv}; the venv {venv} needs about 1000000000 MB' in result.stderr
    assert '-m pip' not in calls.read_text()


def test_install_goes_on_when_the_disk_has_room_or_torch_is_there(tmp_path):
    for has_torch, need_mb in ((False, 1), (True, 10**9)):
        root = tmp_path / f'torch_{has_torch}'
        venv, calls = make_venv(root, has_torch)
        result = run_install(venv, root, need_mb)
        assert 'MB free on the file system' not in result.stderr
        assert '-m pip install --disable-pip-version-check -q --upgrade pip' in calls.read_text()
