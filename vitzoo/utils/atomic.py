"""Files that appear complete or not at all, even when the writing process is killed midway.

A writer puts the bytes in a hidden temporary file next to the target (``.<name>.partial-<pid>``),
flushes it to disk, renames it over the target (atomic on POSIX file systems) and flushes the
directory, so the rename itself survives a power cut. A killed writer leaves at most a temporary
file behind, which :func:`remove_leftovers` deletes once its process is gone.
"""
import glob
import os
import os.path as osp
from typing import List, Union

_TEMP_MARK = '.partial-'


def temporary_name(path: str) -> str:
    """The hidden temporary file next to ``path`` that this process writes before renaming."""
    head, tail = osp.split(path)
    return osp.join(head, f'.{tail}{_TEMP_MARK}{os.getpid()}')


def fsync_directory(directory: str) -> None:
    """Flush ``directory``'s entries (new names, renames) to disk."""
    fd = os.open(directory or '.', os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(src: str, dst: str) -> None:
    """Rename ``src`` over ``dst`` in one step and make the rename durable."""
    os.replace(src, dst)
    fsync_directory(osp.dirname(dst))


def write_atomically(path: str, data: Union[bytes, str]) -> None:
    """Write ``data`` to ``path`` so that ``path`` holds either its old content or all of ``data``."""
    tmp = temporary_name(path)
    try:
        with open(tmp, 'wb') as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        replace_durably(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def remove_leftovers(directory: str) -> List[str]:
    """Delete the temporary files that killed writers left in ``directory``; return their paths.

    Files of writers that are still running (same machine) are left alone.
    """
    removed = []
    for path in glob.glob(osp.join(glob.escape(directory), f'.*{_TEMP_MARK}*')):
        pid = path.rpartition(_TEMP_MARK)[2]
        if pid.isdigit() and not _process_alive(int(pid)):
            os.remove(path)
            removed.append(path)
    return removed
