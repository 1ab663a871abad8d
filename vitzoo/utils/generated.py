"""Directories written by vitzoo's dataset generators, marked with the settings that made them.

A generator reuses a directory it wrote with the same settings and refuses every other non-empty
directory, so nothing a user put there is overwritten.
"""
import json
import os
import os.path as osp
from typing import Optional


def earlier_export(out_dir: str, marker: str, settings: dict, what: str) -> Optional[dict]:
    """The counts of an export of ``settings`` already in ``out_dir``, or None if the directory is free.

    Raises SystemExit if ``out_dir`` holds an export with other settings or anything that is not
    ``what`` (as recorded by :func:`mark_export` in the file ``marker``).
    """
    path = osp.join(out_dir, marker)
    if osp.exists(path):
        with open(path) as f:
            done = json.load(f)
        if done['settings'] != settings:
            raise SystemExit(f'{out_dir} holds {what} with other settings ({done["settings"]}); '
                             'choose another directory')
        return done['counts']
    if osp.isdir(out_dir) and os.listdir(out_dir):
        raise SystemExit(f'{out_dir} exists and is not {what}; choose another directory')
    return None


def mark_export(out_dir: str, marker: str, settings: dict, counts: dict) -> None:
    """Record a finished export (written last, so an interrupted one is never taken as done)."""
    with open(osp.join(out_dir, marker), 'w') as f:
        json.dump(dict(settings=settings, counts=counts), f)
