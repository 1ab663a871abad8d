"""Checkpoint downloads: cached once, resumed, checked, and safe to run from many processes at once.

* A file enters the cache (``~/.cache/vitzoo/checkpoints``, or ``VITZOO_CACHE``) under its URL's
  file name only when complete: the bytes go to ``<name>.part``, which is renamed into place after
  its length matches the server's ``Content-Length`` and, when the name carries a hash
  (``name-<first hex digits of the sha256>.pth``, the OpenMMLab / torch.hub convention), its sha256
  starts with it.
* An interrupted transfer stays in ``<name>.part`` and is resumed with an HTTP Range request, hash or
  not. ``If-Range`` makes a server whose file changed meanwhile send it whole; a server that ignores
  Range (answers 200) is read from the start again. A transfer cut short is resumed up to
  :data:`ATTEMPTS` times in one call.
* One lock per cache entry (``<name>.lock``, :mod:`filelock`): concurrent processes and ranks
  download once; the others wait, then use the file. The OS releases the lock of a killed process.
* Unreachable URLs, HTTP errors and stalled servers (no byte for ``timeout`` seconds) raise
  ``ConnectionError`` naming the URL.

For a cached file that fails to load (written by an older vitzoo, or damaged on disk),
:func:`cached_copy_remedy` names it and says how to download it again.
"""
import hashlib
import http.client
import json
import os
import os.path as osp
import re
import shlex
import sys
import urllib.error
import urllib.request
from typing import Optional, Set, Tuple
from urllib.parse import urlparse

from filelock import FileLock, Timeout

from .atomic import replace_durably, write_atomically

DEFAULT_CACHE = osp.join(osp.expanduser('~'), '.cache', 'vitzoo', 'checkpoints')
# OpenMMLab / torch.hub convention: ``name-<first hex digits of the sha256>.pth``.
_HASH_IN_NAME = re.compile(r'-([0-9a-f]{8,64})\.(?:pth|pt|pth\.tar|bin|ckpt)$')
_CONTENT_RANGE = re.compile(r'bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)')
_CHUNK = 1 << 20
#: Transfers one call makes (the first one and resumptions) before it gives up on a server that
#: keeps cutting them short.
ATTEMPTS = 3
_DOWNLOADED: Set[str] = set()


def is_url(path) -> bool:
    return str(path).startswith(('http://', 'https://'))


def default_cache_dir() -> str:
    return os.environ.get('VITZOO_CACHE', DEFAULT_CACHE)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(_CHUNK), b''):
            digest.update(chunk)
    return digest.hexdigest()


def download_checkpoint(url: str, cache_dir: Optional[str] = None, timeout: float = 60.) -> str:
    """Download ``url`` into ``cache_dir`` once and return the local path.

    Raises ``ConnectionError`` (naming the URL) when the server cannot be reached, answers with an
    HTTP error, stalls for ``timeout`` seconds or keeps cutting the transfer short (what arrived is
    kept and resumed by the next call), and ``ValueError`` when the file's sha256 does not start
    with the hash in its name (the download is removed).
    """
    cache_dir = cache_dir or default_cache_dir()
    filename = osp.basename(urlparse(url).path)
    if not filename:
        raise ValueError(f'cannot tell a file name from the URL {url!r}')
    dst = osp.join(cache_dir, filename)
    if not osp.isfile(dst):
        os.makedirs(cache_dir, exist_ok=True)
        lock = FileLock(dst + '.lock')
        try:
            lock.acquire(timeout=0)
        except Timeout:
            print(f'waiting for another process that downloads {url} into {cache_dir}', file=sys.stderr)
            lock.acquire()  # the holder finishes, fails, or dies and the OS releases its lock
        try:
            if not osp.isfile(dst):
                _download(url, dst, timeout)
        finally:
            lock.release()
    _DOWNLOADED.add(osp.realpath(dst))
    return dst


def _download(url: str, dst: str, timeout: float) -> None:
    part = dst + '.part'
    expected_hash = _HASH_IN_NAME.search(osp.basename(dst))
    resumed = osp.exists(part)
    for _ in range(ATTEMPTS):
        if _transfer(url, part, timeout):
            break
    else:
        raise ConnectionError(f'cannot download {url}: the server cut the transfer short {ATTEMPTS} times; '
                              f'the {osp.getsize(part)} bytes received are kept in {part} and resumed next time')
    if expected_hash:
        expected, actual = expected_hash.group(1), _sha256(part)
        if not actual.startswith(expected):
            _discard_part(part)
            if resumed:  # the kept bytes may be of an older version of the file: once more from scratch
                return _download(url, dst, timeout)
            raise ValueError(f'{url} is corrupt: its sha256 starts with {actual[:len(expected)]}, '
                             f'the file name says {expected}; the download was removed')
    with open(part, 'rb') as f:
        os.fsync(f.fileno())
    replace_durably(part, dst)
    _discard(_validator_path(part))


def _transfer(url: str, part: str, timeout: float) -> bool:
    """Fetch what ``part`` lacks of ``url``; True when ``part`` then holds the whole file."""
    have = osp.getsize(part) if osp.exists(part) else 0
    headers = {}
    if have:
        headers['Range'] = f'bytes={have}-'
        validator = _read_validator(part)
        if validator:
            headers['If-Range'] = validator
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to send: complete, or longer than the file
            start, total = _content_range(err.headers.get('Content-Range'))
            if total == have:
                return True
            _discard_part(part)
            return False
        raise ConnectionError(f'cannot download {url}: HTTP {err.code} {err.reason}') from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, 'reason', err)
        if isinstance(reason, TimeoutError):
            reason = f'no answer within {timeout:g} s'
        raise ConnectionError(f'cannot download {url}: {reason}') from err
    with response:
        if have and response.status == 206:
            start, total = _content_range(response.headers.get('Content-Range'))
            if start != have:  # not the part that was asked for
                _discard_part(part)
                return False
        else:  # the whole file: the server ignores Range, or the file changed since the first part
            have, total = 0, _int_or_none(response.headers.get('Content-Length'))
            _write_validator(part, response.headers)
        try:
            with open(part, 'ab' if have else 'wb') as f:
                for chunk in iter(lambda: response.read1(_CHUNK), b''):
                    f.write(chunk)
        except TimeoutError as err:
            raise ConnectionError(f'cannot download {url}: the server sent nothing for {timeout:g} s; the '
                                  f'{osp.getsize(part)} bytes received are kept in {part} and resumed next time'
                                  ) from err
        except (http.client.IncompleteRead, ConnectionError):
            return False
    size = osp.getsize(part)
    if total is None:  # no length announced: the end of the stream is the end of the file
        return True
    if size > total:  # cannot be a prefix of the file
        _discard_part(part)
        return False
    return size == total


def _content_range(value: Optional[str]) -> Tuple[Optional[int], Optional[int]]:
    """``(first byte, total length)`` of a ``Content-Range`` header; None where unknown."""
    match = _CONTENT_RANGE.match(value or '')
    if not match:
        return None, None
    return _int_or_none(match.group(1)), _int_or_none(match.group(2))


def _int_or_none(value: Optional[str]) -> Optional[int]:
    return int(value) if value and value.isdigit() else None


def _validator_path(part: str) -> str:
    return part + '.json'


def _write_validator(part: str, headers) -> None:
    """Remember what identifies this version of the file (ETag or Last-Modified) for ``If-Range``."""
    validator = headers.get('ETag') or headers.get('Last-Modified')
    if validator:
        write_atomically(_validator_path(part), json.dumps(dict(validator=validator)))
    else:
        _discard(_validator_path(part))


def _read_validator(part: str) -> Optional[str]:
    try:
        with open(_validator_path(part)) as f:
            return json.load(f)['validator']
    except (OSError, ValueError, KeyError):
        return None


def _discard(path: str) -> None:
    if osp.exists(path):
        os.remove(path)


def _discard_part(part: str) -> None:
    """Forget a partial download: its bytes and what identified their version."""
    _discard(part)
    _discard(_validator_path(part))


def resolve_checkpoint(path_or_url, cache_dir: Optional[str] = None) -> str:
    """A local path for a checkpoint given as a local path or an http(s) URL."""
    path_or_url = os.fspath(path_or_url)
    if is_url(path_or_url):
        return download_checkpoint(path_or_url, cache_dir)
    if not osp.isfile(path_or_url):
        raise FileNotFoundError(f'checkpoint {path_or_url!r} does not exist')
    return path_or_url


def cached_copy_remedy(path: str, cache_dir: Optional[str] = None) -> Optional[str]:
    """How to replace ``path`` when it is a downloaded copy in the cache that fails to load, else None.

    For the error a checkpoint reader raises (see ``vitzoo.models.checkpoint.read_checkpoint``)::

        remedy = cached_copy_remedy(path) or 'delete it and save it again'
        raise UnreadableCheckpointError(f'cannot read checkpoint {path} ({err}); {remedy}') from err
    """
    real = osp.realpath(path)
    if real in _DOWNLOADED or osp.dirname(real) == osp.realpath(cache_dir or default_cache_dir()):
        return (f'it is the downloaded copy in the cache, damaged: remove it (rm {shlex.quote(path)}) and the '
                'next run downloads it again')
    return None
