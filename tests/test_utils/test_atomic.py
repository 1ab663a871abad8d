"""vitzoo.utils.atomic: a file is complete or absent, even when its writer dies midway."""
import glob
import os
import os.path as osp
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from vitzoo.utils import atomic
from vitzoo.utils.atomic import remove_leftovers, temporary_name, write_atomically

from helpers import REPO


def test_write_replaces_the_whole_file_and_leaves_nothing_else(tmp_path):
    path = str(tmp_path / 'last_checkpoint')
    write_atomically(path, 'old')
    write_atomically(path, b'new bytes')
    assert open(path, 'rb').read() == b'new bytes' and os.listdir(tmp_path) == ['last_checkpoint']
    assert temporary_name(path) == str(tmp_path / f'.last_checkpoint.partial-{os.getpid()}')


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path, monkeypatch):
    """A full disk (the flush fails) leaves the previous content, complete, and no temporary file."""
    path = str(tmp_path / 'epoch_1.pth')
    write_atomically(path, b'complete')

    def full_disk(fd):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(atomic.os, 'fsync', full_disk)
    with pytest.raises(OSError, match='No space left'):
        write_atomically(path, b'x' * 1000)
    assert open(path, 'rb').read() == b'complete' and os.listdir(tmp_path) == ['epoch_1.pth']


def test_a_writer_killed_midway_leaves_the_old_file_and_a_temporary_that_the_next_run_removes(tmp_path):
    """SIGKILL between writing the temporary file and the rename: the target keeps its old content; the
    temporary file of the dead writer is removed, one of a live writer is not."""
    path = str(tmp_path / 'epoch_2.pth')
    write_atomically(path, b'previous')
    ready = tmp_path / 'ready'
    writer = subprocess.Popen([sys.executable, '-c', textwrap.dedent(f'''
        import os, time
        from vitzoo.utils import atomic
        def stall(src, dst):  # killed here: the temporary file is complete, the rename not done
            open({str(ready)!r}, 'w').close()
            time.sleep(60)
        atomic.replace_durably = stall
        atomic.write_atomically({path!r}, b'y' * 100000)
    ''')], env=dict(os.environ, PYTHONPATH=REPO))
    deadline = time.time() + 60
    while not ready.exists() and writer.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert ready.exists(), 'the writer never reached the rename'
    live_other = tmp_path / f'.other.pth.partial-{os.getpid()}'  # a live writer's file (this process)
    live_other.write_bytes(b'in progress')
    assert sorted(remove_leftovers(str(tmp_path))) == []  # the writer is still alive: nothing is removed
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    torn = glob.glob(str(tmp_path / '.*.partial-*'))
    assert sorted(map(osp.basename, torn)) == sorted([f'.epoch_2.pth.partial-{writer.pid}', live_other.name])
    assert open(path, 'rb').read() == b'previous'
    assert remove_leftovers(str(tmp_path)) == [str(tmp_path / f'.epoch_2.pth.partial-{writer.pid}')]
    assert sorted(os.listdir(tmp_path)) == sorted(['epoch_2.pth', 'ready', live_other.name])
