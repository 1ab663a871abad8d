from .transforms import LoadImageFromFile, UnreadableImageError, read_image

__all__ = ['LoadImageFromFile', 'UnreadableImageError', 'read_image']
