"""Checkpoint downloads: cached, resumable, checked against the hash in the file name."""
import hashlib
import os
import os.path as osp
import re
import time
import urllib.error
import urllib.request
from typing import Optional
from urllib.parse import urlparse

DEFAULT_CACHE = osp.join(osp.expanduser('~'), '.cache', 'vitzoo', 'checkpoints')
# OpenMMLab / torch.hub convention: ``name-<first hex digits of the sha256>.pth``.
_HASH_IN_NAME = re.compile(r'-([0-9a-f]{8,64})\.(?:pth|pt|pth\.tar|bin|ckpt)$')
_CHUNK = 1 << 20


def is_url(path: str) -> bool:
    return path.startswith(('http://', 'https://'))


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(_CHUNK), b''):
            digest.update(chunk)
    return digest.hexdigest()


def download_checkpoint(url: str, cache_dir: Optional[str] = None, timeout: float = 60.) -> str:
    """Download ``url`` into ``cache_dir`` once and return the local path.

    A partial download (``<file>.part``) is resumed with an HTTP Range request. When the file
    name carries a hash (``...-<sha256 prefix>.pth``) the download is checked against it; a
    mismatch removes the file and raises ``ValueError``. An unreachable URL raises
    ``ConnectionError`` naming the URL.
    """
    cache_dir = cache_dir or os.environ.get('VITZOO_CACHE', DEFAULT_CACHE)
    filename = osp.basename(urlparse(url).path)
    if not filename:
        raise ValueError(f'cannot tell a file name from the URL {url!r}')
    dst = osp.join(cache_dir, filename)
    if osp.exists(dst):
        return dst
    os.makedirs(cache_dir, exist_ok=True)
    if int(os.environ.get('LOCAL_RANK', 0)) != 0:
        return _wait_for(dst, timeout=600)
    part = dst + '.part'
    start = osp.getsize(part) if osp.exists(part) else 0
    headers = {'Range': f'bytes={start}-'} if start else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
            mode = 'ab' if start and response.status == 206 else 'wb'
            with open(part, mode) as f:
                for chunk in iter(lambda: response.read(_CHUNK), b''):
                    f.write(chunk)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:  # the partial file is already complete
            pass
        else:
            raise ConnectionError(f'cannot download {url}: HTTP {err.code} {err.reason}') from err
    except (urllib.error.URLError, OSError) as err:
        raise ConnectionError(f'cannot download {url}: {getattr(err, "reason", err)} '
                              f'(a partial download is kept in {part} and resumed next time)') from err
    match = _HASH_IN_NAME.search(filename)
    if match:
        expected, actual = match.group(1), _sha256(part)
        if not actual.startswith(expected):
            os.remove(part)
            raise ValueError(f'{url} is corrupt: its sha256 starts with {actual[:len(expected)]}, '
                             f'the file name says {expected}; the download was removed')
    os.replace(part, dst)
    return dst


def _wait_for(path: str, timeout: float) -> str:
    deadline = time.time() + timeout
    while not osp.exists(path):
        if time.time() > deadline:
            raise TimeoutError(f'rank 0 did not finish downloading {path} within {timeout:.0f} s')
        time.sleep(1)
    return path


def resolve_checkpoint(path_or_url: str, cache_dir: Optional[str] = None) -> str:
    """A local path for a checkpoint given as a local path or an http(s) URL."""
    if is_url(path_or_url):
        return download_checkpoint(path_or_url, cache_dir)
    if not osp.isfile(path_or_url):
        raise FileNotFoundError(f'checkpoint {path_or_url!r} does not exist')
    return path_or_url
