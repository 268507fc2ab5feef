"""Bad input at dataset readers, images and episodes: a clear error and nothing half-written (issue 9; split from the
former tests/test_bad_inputs.py, issue 16 item 6). Harness: tests/bad_input_harness.py."""
from __future__ import annotations

from bad_input_harness import *  # noqa: F401,F403  (fixtures ctx, sine_run, server and the helpers)


def test_cli_missing_data_folder(ctx):
    ctx.cli(["train", "fewshot", "--dataset", "omniglot", "--data-dir", ctx.tmp / "nope", "--out", ctx.tmp / "run"],
            1, "Omniglot folder not found", "images_background")


def test_cli_no_data_folder_given(ctx):
    ctx.cli(["train", "fewshot", "--dataset", "miniimagenet", "--out", ctx.tmp / "run"], 1,
            "read from a folder you provide", "docs/data.md")


def test_cli_more_ways_than_classes(ctx):
    _register_tiny(ctx)
    ctx.cli(["train", "fewshot", "--dataset", "tiny", "--ways", "10", "--out", ctx.tmp / "run"], 1,
            "has 6 classes, fewer than --ways 10")


def test_cli_shots_larger_than_a_class(ctx):
    _register_tiny(ctx)
    ctx.cli(["train", "fewshot", "--dataset", "tiny", "--ways", "3", "--train-shots", "10", "--out", ctx.tmp / "run"],
            1, "--train-shots 10 exceed the 5 examples")


def test_data_missing_folder(ctx):
    with ctx.unchanged(), pytest.raises(FileNotFoundError, match="Omniglot folder not found.*expected one of"):
        load_dataset("omniglot", ctx.tmp / "nope")
    with ctx.unchanged(), pytest.raises(FileNotFoundError, match="Mini-ImageNet folder not found.*layout"):
        load_dataset("miniimagenet", ctx.tmp / "nope")


def test_data_empty_folder(ctx):
    (ctx.tmp / "empty").mkdir()
    with ctx.unchanged(), pytest.raises(ValueError, match="no alphabet folders in .*empty"):
        load_dataset("omniglot", ctx.tmp / "empty")
    with ctx.unchanged(), pytest.raises(FileNotFoundError, match=r"split folder not found: .*empty/train"):
        load_dataset("miniimagenet", ctx.tmp / "empty")


def test_data_omniglot_wrong_layout(ctx):
    d = ctx.tmp / "omniglot" / "Greek"
    d.mkdir(parents=True)
    Image.new("L", (105, 105), 255).save(d / "0001_01.png")  # drawings directly in the alphabet folder
    with ctx.unchanged(), pytest.raises(ValueError, match="Greek has no character<NN> subfolders.*expected one of"):
        load_dataset("omniglot", ctx.tmp)


def test_data_omniglot_still_zipped(ctx):
    (ctx.tmp / "images_background.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    with ctx.unchanged(), pytest.raises(ValueError, match="unzip them"):
        load_dataset("omniglot", ctx.tmp)


def test_data_miniimagenet_wrong_layout(ctx):
    _mini_tree(ctx.tmp, splits=("train", "test"))  # no val/
    with ctx.unchanged(), pytest.raises(FileNotFoundError, match=r"miniimagenet/val.*\{train,val,test\}/<wnid>"):
        load_dataset("miniimagenet", ctx.tmp)
    (ctx.tmp / "miniimagenet" / "val" / "n99999999").mkdir(parents=True)  # a class without images
    with ctx.unchanged(), pytest.raises(ValueError, match="n99999999 has no image files"):
        load_dataset("miniimagenet", ctx.tmp)


def test_data_corrupt_image(ctx):
    _omniglot_tree(ctx.tmp / "omniglot")
    victim = ctx.tmp / "omniglot" / "Korean" / "character02" / "0002_01.png"
    victim.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    with ctx.unchanged(), pytest.raises(ImageLoadError, match="cannot read image .*0002_01.png"):
        load_dataset("omniglot", ctx.tmp, n_train=2)


def test_data_truncated_image(ctx):
    _mini_tree(ctx.tmp)
    victim = ctx.tmp / "miniimagenet" / "test" / "n01532829" / "a.JPEG"
    img = np.random.default_rng(0).integers(0, 256, (90, 90, 3), dtype=np.uint8)
    Image.fromarray(img).save(victim, format="JPEG")
    victim.write_bytes(victim.read_bytes()[:400])
    with ctx.unchanged(), pytest.raises(ImageLoadError, match="cannot read image .*a.JPEG"):
        load_dataset("miniimagenet", ctx.tmp)


def test_image_cmyk_converted(ctx):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[...] = (200, 50, 10)
    Image.fromarray(rgb).convert("CMYK").save(ctx.tmp / "cmyk.jpg", quality=100)
    out = load_image(ctx.tmp / "cmyk.jpg", mode="RGB", dtype="uint8")
    assert out.shape == (16, 16, 3) and np.abs(out.astype(int) - rgb).max() <= 3


def test_image_16_bit_scaled_not_clipped(ctx):  # mid-grey 16-bit was read as white
    a16 = np.array([[0, 32896, 65535]], dtype=np.uint16)  # black, mid-grey (128 * 257), white
    Image.fromarray(a16).save(ctx.tmp / "g16.png")
    assert load_image(ctx.tmp / "g16.png", mode="L", dtype="uint8").tolist() == [[0, 128, 255]]
    assert load_image(ctx.tmp / "g16.png", mode="RGB", dtype="uint8")[0, 1].tolist() == [128, 128, 128]


def test_image_float_refused(ctx):  # 32-bit float pixels were truncated to 0/1
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(ctx.tmp / "f.tiff")
    with pytest.raises(ImageLoadError, match="f.tiff: 32-bit floating-point pixels.*save it as an 8- or 16-bit PNG"):
        load_image(ctx.tmp / "f.tiff")


def test_image_bad_arguments(ctx):  # mode="CMYK" returned 4 channels; size=0 blamed the file
    Image.new("L", (8, 8)).save(ctx.tmp / "x.png")
    with pytest.raises(ValueError, match="mode must be 'L'.*or 'RGB', got 'CMYK'"):
        load_image(ctx.tmp / "x.png", mode="CMYK")
    with pytest.raises(ValueError, match="size must be a positive whole number"):
        load_image(ctx.tmp / "x.png", size=0)
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'uint8'"):
        load_image(ctx.tmp / "x.png", dtype="float16")


def test_data_unknown_dataset(ctx):
    with pytest.raises(ValueError, match="unknown dataset 'cifar'; choose one of glyphs, omniglot, miniimagenet"):
        load_dataset("cifar")


def test_episode_more_ways_than_classes(ctx):
    with pytest.raises(ValueError, match="cannot draw a 10-way task from a dataset of 6 classes; use n_way <= 6"):
        sample_episode(_tiny_dataset(), np.random.default_rng(0), n_way=10, train_shots=1)


def test_episode_shots_larger_than_a_class(ctx):
    with pytest.raises(ValueError, match=r"5 \+ 1 = 6 examples per class.*only 5; lower the shots"):
        sample_episode(_tiny_dataset(), np.random.default_rng(0), n_way=3, train_shots=5, test_shots=1)
    with pytest.raises(ValueError, match="train_shots >= 1"):
        sample_episode(_tiny_dataset(), np.random.default_rng(0), n_way=3, train_shots=-1)
