"""Omniglot and Mini-ImageNet readers on small trees fabricated here, and the dispatcher."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reptile.data import DATASETS, ImageLoadError, load_dataset
from reptile.data.miniimagenet import load_miniimagenet
from reptile.data.omniglot import find_omniglot_characters, load_omniglot

ALPHABETS = {"Greek": 4, "Korean": 3, "Ojibwe": 3}  # characters per alphabet (10 in all)
DRAWINGS = 4


def _drawing(rng: np.random.Generator) -> Image.Image:
    """A 105x105 binary Omniglot-like drawing: white with a thick black bar."""
    img = np.ones((105, 105), dtype=bool)
    r, c = rng.integers(10, 80, size=2)
    img[r : r + 12, c : c + 20] = False
    return Image.fromarray(img)


def _omniglot_tree(root: Path, alphabets: dict[str, int] = ALPHABETS, rng_seed: int = 0) -> None:
    rng = np.random.default_rng(rng_seed)
    for alpha, n in alphabets.items():
        for k in range(1, n + 1):
            d = root / alpha / f"character{k:02d}"
            d.mkdir(parents=True)
            for j in range(DRAWINGS):
                _drawing(rng).save(d / f"{k:04d}_{j + 1:02d}.png")


def test_official_layout_split_and_rotations(tmp_path):
    _omniglot_tree(tmp_path / "omniglot")
    for data_dir in (tmp_path, tmp_path / "omniglot"):
        out = load_omniglot(data_dir, seed=0, n_train=7, n_val=2)
        assert out["train"].n_classes == 5 * 4  # (7 - 2) characters x 4 rotations
        assert out["val"].n_classes == 2 and out["test"].n_classes == 3
        base = {n.split("/rot")[0] for n in out["train"].class_names}
        names = [base, set(out["val"].class_names), set(out["test"].class_names)]
        assert sum(len(s) for s in names) == 10 and len(set.union(*names)) == 10  # disjoint, complete
        for ds in out.values():
            for arr in ds.images:
                assert arr.shape == (DRAWINGS, 28, 28) and arr.dtype == np.float32
                assert set(np.unique(arr)) <= {0.0, 1.0}  # nearest resize keeps Omniglot binary
                assert arr.mean() > 0.8  # white background, black ink
    rot = load_omniglot(tmp_path, seed=0, n_train=7, n_val=2)["train"]
    np.testing.assert_array_equal(rot.images[1], np.rot90(rot.images[0], 1, axes=(1, 2)))
    assert rot.class_names[1] == rot.class_names[0] + "/rot90"


def test_split_is_seeded_not_global(tmp_path):
    _omniglot_tree(tmp_path / "omniglot")
    np.random.seed(1)
    a = load_omniglot(tmp_path, seed=3, n_train=6, augment_rotations=False)
    np.random.seed(2)
    b = load_omniglot(tmp_path, seed=3, n_train=6, augment_rotations=False)
    c = load_omniglot(tmp_path, seed=4, n_train=6, augment_rotations=False)
    assert a["test"].class_names == b["test"].class_names
    assert a["train"].n_classes == 6 and a["val"].n_classes == 0
    assert a["test"].class_names != c["test"].class_names or a["train"].class_names != c["train"].class_names


def test_release_layout(tmp_path):
    _omniglot_tree(tmp_path / "images_background", {"Greek": 4, "Korean": 3})
    _omniglot_tree(tmp_path / "images_evaluation", {"Ojibwe": 3}, rng_seed=1)
    chars = find_omniglot_characters(tmp_path)
    assert len(chars) == 10 and {a for a, _, _ in chars} == set(ALPHABETS)
    out = load_omniglot(tmp_path, n_train=8, augment_rotations=False)
    assert out["train"].n_classes == 8 and out["test"].n_classes == 2
    assert set(out["train"].groups) | set(out["test"].groups) <= set(ALPHABETS)


def test_omniglot_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does_not_exist"):
        load_omniglot(tmp_path / "does_not_exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"no alphabet folders.*expected one of these Omniglot layouts"):
        load_omniglot(empty)
    bad = tmp_path / "bad" / "omniglot" / "Greek"
    (bad / "not_a_character").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"Greek has no character<NN>"):
        load_omniglot(tmp_path / "bad")
    nofiles = tmp_path / "nofiles" / "omniglot" / "Greek" / "character01"
    nofiles.mkdir(parents=True)
    with pytest.raises(ValueError, match=r"character01 has no image files"):
        load_omniglot(tmp_path / "nofiles")
    zipped = tmp_path / "zipped"
    zipped.mkdir()
    (zipped / "images_background.zip").write_bytes(b"PK")
    with pytest.raises(ValueError, match="unzip"):
        load_omniglot(zipped)
    _omniglot_tree(tmp_path / "small" / "omniglot", {"Greek": 3})
    with pytest.raises(ValueError, match="n_train=1200 with 3 characters"):
        load_omniglot(tmp_path / "small")


def test_omniglot_corrupt_image_names_the_file(tmp_path):
    _omniglot_tree(tmp_path / "omniglot")
    victim = tmp_path / "omniglot" / "Korean" / "character02" / "0002_03.png"
    victim.write_bytes(victim.read_bytes()[:40])  # truncated PNG
    with pytest.raises(ImageLoadError, match="0002_03.png"):
        load_omniglot(tmp_path, n_train=6)


def _mini_tree(root: Path, per_split: dict[str, int], n: int = 3) -> None:
    rng = np.random.default_rng(0)
    wnid = 1000
    for split, n_classes in per_split.items():
        for _ in range(n_classes):
            d = root / "miniimagenet" / split / f"n{wnid:08d}"
            wnid += 1
            d.mkdir(parents=True)
            for j in range(n):
                arr = rng.integers(0, 256, size=(100, 120, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"img{j}.JPEG", format="JPEG")


def test_miniimagenet_layout(tmp_path):
    _mini_tree(tmp_path, {"train": 4, "val": 2, "test": 3})
    for data_dir in (tmp_path, tmp_path / "miniimagenet"):
        out = load_miniimagenet(data_dir)
        assert [out[s].n_classes for s in ("train", "val", "test")] == [4, 2, 3]
        ds = out["train"]
        assert ds.images[0].shape == (3, 84, 84, 3) and ds.images[0].dtype == np.uint8
        assert ds.class_names[0].startswith("n") and ds.groups == ds.class_names
        x, y = ds.to_tensors()
        assert x.shape == (12, 3, 84, 84) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    f32 = load_miniimagenet(tmp_path, dtype="float32", max_per_class=2)
    assert f32["test"].images[0].shape == (2, 84, 84, 3) and f32["test"].images[0].dtype == np.float32


def test_miniimagenet_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_miniimagenet(tmp_path / "nowhere")
    _mini_tree(tmp_path / "a", {"train": 2, "val": 1})
    with pytest.raises(FileNotFoundError, match=r"test.*miniimagenet/\{train,val,test\}/<wnid>"):
        load_miniimagenet(tmp_path / "a")
    _mini_tree(tmp_path / "b", {"train": 2, "val": 1, "test": 1})
    (tmp_path / "b" / "miniimagenet" / "val" / "n99999999").mkdir()
    with pytest.raises(ValueError, match="n99999999 has no image files"):
        load_miniimagenet(tmp_path / "b")
    _mini_tree(tmp_path / "c", {"train": 2, "val": 1, "test": 1})
    bad = next((tmp_path / "c" / "miniimagenet" / "test").glob("*/img1.JPEG"))
    bad.write_bytes(bad.read_bytes()[:300])
    with pytest.raises(ImageLoadError, match="img1.JPEG"):
        load_miniimagenet(tmp_path / "c")


def test_dispatcher(tmp_path):
    assert DATASETS == ("glyphs", "omniglot", "miniimagenet")
    with pytest.raises(ValueError, match="glyphs, omniglot, miniimagenet"):
        load_dataset("cifar")
    with pytest.raises(ValueError, match="data_dir"):
        load_dataset("omniglot")
    _omniglot_tree(tmp_path / "omniglot")
    out = load_dataset("omniglot", tmp_path, seed=0, n_train=7, augment_rotations=False)
    assert set(out) == {"train", "val", "test"} and out["train"].n_classes == 7
    _mini_tree(tmp_path, {"train": 2, "val": 1, "test": 1}, n=2)
    assert load_dataset("mini-imagenet", tmp_path)["val"].n_classes == 1
