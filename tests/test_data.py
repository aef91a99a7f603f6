"""Bundled data loaders (shapes, ranges, agreement with the packages' own loaders, the split by
photo) and the image-folder loader on small files written here (including its error cases)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pyinverse.data import (BUNDLED_PHOTOS, PHOTO_SPLITS, digits, image_folder, lfw_faces, load_photo,
                            photo_patches, rgb_to_gray, sklearn_photos)


def check_images(images, shape):
    assert isinstance(images, np.ndarray) and images.dtype == np.float32
    assert images.shape == shape
    assert images.flags.c_contiguous
    assert np.isfinite(images).all() and images.min() >= 0.0 and images.max() <= 1.0


# -------------------------------------------------------------------------------------------------
# Bundled data
# -------------------------------------------------------------------------------------------------
def test_lfw_faces_layout_matches_scikit_image():
    skimage_data = pytest.importorskip("skimage.data")
    raw = skimage_data.lfw_subset()  # (200, 25, 25): 100 faces then 100 non-faces
    faces, non_faces, everything = lfw_faces(), lfw_faces("non_faces"), lfw_faces("all")
    check_images(faces, (100, 1, 25, 25))
    check_images(non_faces, (100, 1, 25, 25))
    check_images(everything, (200, 1, 25, 25))
    np.testing.assert_array_equal(faces[:, 0], raw[:100].astype(np.float32))
    np.testing.assert_array_equal(non_faces[:, 0], raw[100:].astype(np.float32))
    np.testing.assert_array_equal(everything[:100], faces)
    with pytest.raises(ValueError, match="lfw_faces: 'which' must be one of"):
        lfw_faces("cats")


def test_digits_matches_scikit_learn():
    datasets = pytest.importorskip("sklearn.datasets")
    images, labels = digits(return_labels=True)
    check_images(images, (1797, 1, 8, 8))
    bunch = datasets.load_digits()
    np.testing.assert_allclose(images[:, 0], bunch.images / 16.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(labels, bunch.target)
    assert images.max() == 1.0


def test_sklearn_photos():
    datasets = pytest.importorskip("sklearn.datasets")
    photos = sklearn_photos()
    check_images(photos, (2, 3, 427, 640))
    np.testing.assert_allclose(photos.transpose(0, 2, 3, 1) * 255, np.stack(datasets.load_sample_images().images),
                               rtol=0, atol=1e-4)
    check_images(sklearn_photos(gray=True), (2, 1, 427, 640))


@pytest.mark.parametrize("name", ["chelsea", "camera", "retina"])
def test_load_photo_matches_scikit_image(name):
    skimage_data = pytest.importorskip("skimage.data")
    reference = getattr(skimage_data, name)().astype(np.float32) / 255
    photo = load_photo(name)
    if reference.ndim == 2:  # grayscale photos are repeated to RGB
        assert photo.shape == (3, *reference.shape)
        np.testing.assert_array_equal(photo[0], reference)
        np.testing.assert_array_equal(photo[2], reference)
        np.testing.assert_allclose(load_photo(name, gray=True)[0], reference, rtol=0, atol=1e-6)
    else:
        np.testing.assert_array_equal(photo, reference.transpose(2, 0, 1))


def test_every_bundled_photo_loads_without_download():
    for name in BUNDLED_PHOTOS:
        if BUNDLED_PHOTOS[name][0].startswith("sklearn"):
            pytest.importorskip("sklearn")
        photo = load_photo(name, gray=True)
        assert photo.ndim == 3 and photo.shape[0] == 1 and photo.dtype == np.float32
    with pytest.raises(ValueError, match="load_photo: unknown photo 'lena'"):
        load_photo("lena")


@pytest.mark.parametrize("size,stride", [(16, None), (32, 8), (7, 5)])
def test_photo_patches_grid_and_content(size, stride):
    patches = photo_patches(["chelsea"], size=size, stride=stride)
    step = stride or size
    photo = load_photo("chelsea")  # (3, 300, 451)
    rows, cols = (300 - size) // step + 1, (451 - size) // step + 1
    check_images(patches, (rows * cols, 3, size, size))
    for index in [0, cols - 1, cols, rows * cols - 1]:  # row-major from the top-left corner
        r, c = divmod(index, cols)
        np.testing.assert_array_equal(patches[index], photo[:, r * step:r * step + size, c * step:c * step + size])


def test_photo_splits_are_disjoint_and_load():
    names = [name for split in PHOTO_SPLITS.values() for name in split]
    assert len(names) == len(set(names))
    for split in PHOTO_SPLITS:
        patches = photo_patches(split, size=32, gray=True)
        assert patches.shape[1:] == (1, 32, 32) and len(patches) > 300
    gray = photo_patches(["coffee"], size=8, gray=True)
    np.testing.assert_allclose(gray, rgb_to_gray(photo_patches(["coffee"], size=8)), rtol=0, atol=0)


def test_photo_patches_bad_arguments():
    with pytest.raises(ValueError, match="photo_patches: 'names' must be one of the splits"):
        photo_patches("validation")
    with pytest.raises(ValueError, match="photo_patches: 'size' must be a positive int"):
        photo_patches("train", size=0)
    with pytest.raises(ValueError, match="photo_patches: 'stride' must be a positive int"):
        photo_patches("train", stride=2.5)
    with pytest.raises(ValueError, match="smaller than size=400"):
        photo_patches(["chelsea"], size=400)
    with pytest.raises(ValueError, match="photo_patches: 'names' is empty"):
        photo_patches([])


def test_rgb_to_gray_is_bt601():
    rng = np.random.default_rng(0)
    rgb = rng.uniform(size=(2, 3, 4, 5)).astype(np.float32)
    want = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    np.testing.assert_allclose(rgb_to_gray(rgb)[:, 0], want, rtol=1e-6)
    with pytest.raises(ValueError, match=r"rgb_to_gray: 'images' must have shape \(..., 3, H, W\)"):
        rgb_to_gray(rgb[:, :2])


# -------------------------------------------------------------------------------------------------
# Image folders
# -------------------------------------------------------------------------------------------------
def write_rgb(path, rng, height=6, width=5, mode="RGB"):
    array = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    image = Image.fromarray(array, "RGB")
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path)
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255


@pytest.mark.parametrize("seed", [0, 1])
def test_image_folder_reads_sorted_png_and_jpeg(tmp_path, seed):
    rng = np.random.default_rng(seed)
    expected = {}
    expected["b.png"] = write_rgb(tmp_path / "b.png", rng)
    expected["a.PNG"] = write_rgb(tmp_path / "a.PNG", rng, mode="L")
    expected["c.png"] = write_rgb(tmp_path / "c.png", rng, mode="RGBA")
    expected["d.png"] = write_rgb(tmp_path / "d.png", rng, mode="P")
    Image.fromarray(rng.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)).save(tmp_path / "e.jpg", quality=95)
    with Image.open(tmp_path / "e.jpg") as jpeg:
        expected["e.jpg"] = np.asarray(jpeg.convert("RGB"), dtype=np.float32) / 255
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    images = image_folder(tmp_path)
    check_images(images, (5, 3, 6, 5))
    for index, name in enumerate(sorted(expected)):
        np.testing.assert_array_equal(images[index], expected[name].transpose(2, 0, 1))
    gray = image_folder(tmp_path, gray=True)
    check_images(gray, (5, 1, 6, 5))
    np.testing.assert_allclose(gray, rgb_to_gray(images), rtol=0, atol=1e-7)


def test_image_folder_sixteen_bit_png(tmp_path):
    values = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    images = image_folder(tmp_path, gray=True)
    np.testing.assert_allclose(images[0, 0], values / 65535.0, rtol=1e-6)


def test_image_folder_resizes_with_pillow_bicubic(tmp_path):
    rng = np.random.default_rng(3)
    small = write_rgb(tmp_path / "small.png", rng, 6, 5)
    large = write_rgb(tmp_path / "large.png", rng, 9, 11)
    with pytest.raises(ValueError, match=r"different sizes: 6x5 \(e.g. small.png\), 9x11 \(e.g. large.png\); "
                                         r"resize them to one size"):
        image_folder(tmp_path)
    images = image_folder(tmp_path, size=(4, 7))
    check_images(images, (2, 3, 4, 7))
    for index, array in enumerate([large, small]):  # sorted: large.png, small.png
        for channel in range(3):
            plane = Image.fromarray(array[:, :, channel], mode="F").resize((7, 4), Image.Resampling.BICUBIC)
            np.testing.assert_allclose(images[index, channel], np.clip(np.asarray(plane), 0, 1), rtol=0, atol=1e-7)
    assert image_folder(tmp_path, size=3).shape == (2, 3, 3, 3)


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="image_folder: 'path' .* does not exist"):
        image_folder(tmp_path / "missing")
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        image_folder(tmp_path / "file.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images")
    with pytest.raises(ValueError, match=r"image_folder: no .png/.jpg/.jpeg files in"):
        image_folder(empty)
    with pytest.raises(ValueError, match=r"image_folder: could not read '.*file.png' as an image"):
        image_folder(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    write_rgb(broken / "good.png", np.random.default_rng(0))
    (broken / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ValueError, match="could not read .*truncated.jpg"):
        image_folder(broken)
    for bad in (0, (3,), (2, -1), 2.5, True):
        with pytest.raises(ValueError, match="image_folder: 'size' must be None, a positive int or"):
            image_folder(empty, size=bad)
    # A decompression bomb (a small file of 15000 x 15000 pixels) is an unreadable image, named.
    bomb = tmp_path / "bomb"
    bomb.mkdir()
    Image.new("1", (15000, 15000)).save(bomb / "huge.png")
    with pytest.raises(ValueError, match=r"could not read '.*huge.png' as an image: Image size"):
        image_folder(bomb)
    # Hidden files (macOS's ._name sidecars) are skipped.
    (broken / "truncated.jpg").unlink()
    (broken / "._good.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    assert image_folder(broken).shape[0] == 1


def test_image_folder_keeps_one_channel_when_every_image_is_gray(tmp_path):
    rng = np.random.default_rng(5)
    planes = rng.integers(0, 256, size=(3, 6, 5), dtype=np.uint8)
    Image.fromarray(planes[0], "L").save(tmp_path / "a.png")
    Image.fromarray(np.dstack([planes[1], planes[2]]), "LA").save(tmp_path / "b.png")  # alpha dropped
    Image.fromarray(planes[2] > 127).save(tmp_path / "c.png")  # mode "1"
    deep = rng.integers(0, 65536, size=(6, 5), dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.png")  # mode "I;16"
    expected = np.stack([planes[0] / 255, planes[1] / 255, (planes[2] > 127) * 1.0, deep / 65535])[:, None]
    gray = image_folder(tmp_path, gray=None)
    check_images(gray, (4, 1, 6, 5))
    np.testing.assert_allclose(gray, expected, rtol=0, atol=1e-7)
    assert image_folder(tmp_path).shape == (4, 3, 6, 5)  # the default stays RGB
    # one colour image makes the folder RGB, the gray images repeating their channel
    colour = write_rgb(tmp_path / "e.png", rng).transpose(2, 0, 1)
    mixed = image_folder(tmp_path, gray=None)
    check_images(mixed, (5, 3, 6, 5))
    np.testing.assert_allclose(mixed[:4], np.repeat(expected, 3, axis=1), rtol=0, atol=1e-7)
    np.testing.assert_array_equal(mixed[4], colour)


def test_image_folder_sorts_numbers_as_numbers(tmp_path):
    names = ["2.png", "10.png", "1.png", "img9.png", "img10.png", "007.png"]
    for value, name in enumerate(names):
        Image.fromarray(np.full((2, 2), 10 * value, dtype=np.uint8), "L").save(tmp_path / name)
    order = ["1.png", "2.png", "007.png", "10.png", "img9.png", "img10.png"]
    images = image_folder(tmp_path, gray=True)
    np.testing.assert_array_equal(np.round(images[:, 0, 0, 0] * 255), [10 * names.index(name) for name in order])


@pytest.mark.parametrize("orientation,turns", [(1, 0), (3, 2), (6, -1), (8, 1)])
def test_image_folder_applies_exif_orientation(tmp_path, orientation, turns):
    """A phone photo's EXIF orientation tag is applied (6: the stored pixels turned 90 degrees clockwise)."""
    rng = np.random.default_rng(orientation)
    stored = rng.integers(0, 256, size=(4, 6, 3), dtype=np.uint8)  # 4 rows, 6 columns as written
    exif = Image.Exif()
    exif[0x0112] = orientation  # the Orientation tag
    Image.fromarray(stored).save(tmp_path / "photo.jpg", quality=95, exif=exif)
    with Image.open(tmp_path / "photo.jpg") as jpeg:
        assert jpeg.getexif()[0x0112] == orientation
        decoded = np.asarray(jpeg.convert("RGB"), dtype=np.float32) / 255  # the pixels as stored
    upright = np.rot90(decoded, k=turns)  # numpy: k > 0 turns counter-clockwise
    images = image_folder(tmp_path)
    check_images(images, (1, 3) + upright.shape[:2])
    np.testing.assert_array_equal(images[0], upright.transpose(2, 0, 1))
