"""Image loading whose errors name the file (``vitzoo.LoadImageFromFile`` in the dataset configs)."""
import os.path as osp

import numpy as np
from mmcv.transforms import LoadImageFromFile as MMCVLoadImageFromFile

from ..registry import TRANSFORMS


class UnreadableImageError(ValueError):
    """An image file that is missing, empty or cannot be decoded."""


def _why_unreadable(path: str, err: Exception) -> str:
    if not osp.exists(path):
        return f'cannot read the image {path}: it does not exist'
    size = osp.getsize(path)
    if size == 0:
        return f'cannot read the image {path}: the file is empty (0 bytes)'
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (f'cannot read the image {path} ({size} bytes): not an image OpenCV/Pillow can decode '
            f'(truncated or another format?): {reason}')


def read_image(path: str, color_type: str = 'color') -> np.ndarray:
    """``mmcv.imread(path)`` (BGR), raising :class:`UnreadableImageError` naming ``path`` on failure."""
    import mmcv
    try:
        img = mmcv.imread(path, flag=color_type)
        if img is None:
            raise ValueError('decoding returned nothing')
    except Exception as err:  # noqa: BLE001  (cv2, Pillow and the file backends raise many types)
        raise UnreadableImageError(_why_unreadable(path, err)) from err
    return img


@TRANSFORMS.register_module()
class LoadImageFromFile(MMCVLoadImageFromFile):
    """mmcv's ``LoadImageFromFile`` (same arguments) whose errors name the image and say what is wrong.

    mmcv's raises OpenCV's ``!buf.empty()`` for a 0-byte file, without the path; this one raises
    :class:`UnreadableImageError` with the path and the reason (missing, empty, not decodable).
    ``ignore_empty=True`` still skips such files. An image already loaded (``img`` without
    ``img_path``, as mmpretrain's and mmdet's inferencers pass them) goes through unchanged.

    mmseg's ``MMSegInferencer`` looks for the type name ``'LoadImageFromFile'`` exactly, so the
    ADE20K configs keep mmcv's transform.
    """

    def transform(self, results: dict):
        if 'img_path' not in results and 'img' in results:
            return results
        try:
            return super().transform(results)
        except Exception as err:  # noqa: BLE001
            raise UnreadableImageError(_why_unreadable(str(results.get('img_path')), err)) from err
