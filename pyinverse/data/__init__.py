"""Datasets that ship with installed packages (no downloads) and a loader for image folders.

Every loader returns float32 numpy arrays ``(N, C, H, W)`` with values in [0, 1].
"""
from .bundled import (BUNDLED_PHOTOS, PHOTO_SPLITS, digits, lfw_faces, load_photo, photo_patches,
                      rgb_to_gray, sklearn_photos)
from .folders import IMAGE_EXTENSIONS, image_folder

__all__ = [
    "BUNDLED_PHOTOS",
    "IMAGE_EXTENSIONS",
    "PHOTO_SPLITS",
    "digits",
    "image_folder",
    "lfw_faces",
    "load_photo",
    "photo_patches",
    "rgb_to_gray",
    "sklearn_photos",
]
