"""ImageClassDataset, image loading (clear errors naming the file) and rotation augmentation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from reptile.data.images import (
    ImageClassDataset,
    ImageLoadError,
    images_to_tensor,
    load_image,
    rotate_classes,
)


def _dataset(n_classes: int = 3, n: int = 4, shape: tuple[int, ...] = (6, 6)) -> ImageClassDataset:
    rng = np.random.default_rng(0)
    return ImageClassDataset(
        images=[rng.random((n + i, *shape), dtype=np.float32) for i in range(n_classes)],
        class_names=[f"a/c{i}" for i in range(n_classes)],
        groups=["a"] * n_classes,
    )


def test_dataset_sizes_and_tensors():
    ds = _dataset()
    assert ds.n_classes == 3
    assert len(ds) == 4 + 5 + 6
    assert ds.min_class_size == 4
    assert ds.channels == 1 and ds.image_shape == (6, 6)
    x, y = ds.to_tensors()
    assert x.shape == (15, 1, 6, 6) and x.dtype == torch.float32
    assert y.tolist() == [0] * 4 + [1] * 5 + [2] * 6
    torch.testing.assert_close(x[4, 0], torch.from_numpy(ds.images[1][0]))


def test_rgb_uint8_is_scaled_channels_first():
    arr = np.full((2, 5, 5, 3), 255, dtype=np.uint8)
    arr[:, :, :, 1] = 0
    t = images_to_tensor(arr, dtype=torch.float64)
    assert t.shape == (2, 3, 5, 5) and t.dtype == torch.float64
    assert t[:, 0].eq(1).all() and t[:, 1].eq(0).all()


def test_dataset_validation():
    with pytest.raises(ValueError, match="one name and one group"):
        ImageClassDataset([np.zeros((2, 4, 4), np.float32)], ["a", "b"], ["g"])
    with pytest.raises(ValueError, match="shape"):
        ImageClassDataset(
            [np.zeros((2, 4, 4), np.float32), np.zeros((2, 5, 5), np.float32)], ["a", "b"], ["g", "g"]
        )
    with pytest.raises(ValueError, match="dtype"):
        ImageClassDataset([np.zeros((2, 4, 4), np.float64)], ["a"], ["g"])
    with pytest.raises(ValueError, match="image_shape"):
        ImageClassDataset([], [], [])
    empty = ImageClassDataset([], [], [], image_shape=(28, 28))
    assert empty.n_classes == 0 and len(empty) == 0


def test_rotate_classes_counts_and_content():
    ds = _dataset(n_classes=2)
    rot = rotate_classes(ds)
    assert rot.n_classes == 8
    assert rot.class_names[:4] == ["a/c0", "a/c0/rot90", "a/c0/rot180", "a/c0/rot270"]
    assert rot.groups == ["a"] * 8
    np.testing.assert_array_equal(rot.images[1][0], np.rot90(ds.images[0][0]))
    np.testing.assert_array_equal(rot.images[2][2], ds.images[0][2][::-1, ::-1])
    with pytest.raises(ValueError, match="multiples of 90"):
        rotate_classes(ds, angles=(0, 45))


def test_load_image_modes_and_resize(tmp_path):
    p = tmp_path / "x.png"
    img = Image.new("1", (105, 105), 1)  # Omniglot: binary, white background
    for i in range(30, 75):
        for j in range(50, 54):  # a 4-pixel-wide stroke
            img.putpixel((i, j), 0)
    img.save(p)
    a = load_image(p, mode="L", size=28)
    assert a.shape == (28, 28) and a.dtype == np.float32
    assert a.max() == 1.0 and a.min() < 0.6  # ink darker than the white background
    rgb = load_image(p, mode="RGB", size=(10, 12), dtype="uint8")
    assert rgb.shape == (12, 10, 3) and rgb.dtype == np.uint8


def test_load_image_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(ImageLoadError, match="nope.png"):
        load_image(missing)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not an image at all")
    with pytest.raises(ValueError, match="garbage.png"):
        load_image(garbage)
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(ImageLoadError, match="truncated.jpg"):
        load_image(truncated, mode="RGB")
    png = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8)).save(png)
    cut_png = tmp_path / "cut.png"
    cut_png.write_bytes(png.read_bytes()[:200])
    with pytest.raises(ImageLoadError, match="cut.png"):
        load_image(cut_png)
