"""Data: the TFRecord reader on files written here, the embedded MNIST split, calibration picks."""

import os

import numpy as np
import pytest
import tensorflow as tf

from workbench.data.imagenet import encode_example, load_imagenet
from workbench.data.images import adapt_images
from workbench.data.mnist import load_mnist
from workbench.data.synthetic import make_synthetic


def _write_records(path, images, labels):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for image, label in zip(images, labels):
            jpeg = tf.io.encode_jpeg(tf.constant(image, tf.uint8), quality=100).numpy()
            writer.write(encode_example(jpeg, label))


def test_tfrecord_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    # smooth colour blocks survive JPEG nearly unchanged
    images = np.zeros((6, 40, 48, 3), np.uint8)
    for n in range(6):
        images[n] = rng.integers(0, 256, 3)
    labels = np.arange(1, 7)  # written 1-based, as the common conversion script does
    _write_records(tmp_path / "valid-00000-of-00001", images, labels)
    _write_records(tmp_path / "train-00000-of-00001", images[:3], labels[:3])

    data = load_imagenet(str(tmp_path), image_size=32, resize_size=36, mean=[0, 0, 0], std=[1, 1, 1], batch_size=4)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in data.val_batches()])
    x, y = np.concatenate(xs), np.concatenate(ys)
    assert x.shape == (6, 32, 32, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(y, labels - 1)
    np.testing.assert_allclose(x.mean(axis=(1, 2)), images.mean(axis=(1, 2)), atol=2.0)

    bgr = load_imagenet(str(tmp_path), image_size=32, resize_size=36, channel_order="bgr", mean=[0, 0, 0], std=[1, 1, 1])
    xb = np.concatenate([b[0].numpy() for b in bgr.val_batches()])
    np.testing.assert_allclose(xb[..., ::-1], x, atol=1e-4)

    norm = load_imagenet(str(tmp_path), image_size=32, resize_size=36, label_offset=0)
    xn, yn = next(iter(norm.val_batches()))
    np.testing.assert_allclose(xn.numpy(), (x[: len(xn)] - 127.5) / 127.5, atol=1e-5)
    np.testing.assert_array_equal(yn.numpy(), labels[: len(yn)])

    calib = np.concatenate([b[0].numpy() for b in data.calibration_batches(2)])
    assert calib.shape == (2, 32, 32, 3)


def test_missing_validation_files_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="valid"):
        load_imagenet(str(tmp_path))


def test_a_record_that_does_not_decode_is_named_before_any_pipeline(tmp_path):
    with tf.io.TFRecordWriter(str(tmp_path / "valid-0")) as w:
        w.write(encode_example(b"not a jpeg", 1))  # both features present, the image undecodable
    with pytest.raises(ValueError) as err:
        load_imagenet(str(tmp_path))
    message = str(err.value)
    assert message.startswith(f"{tmp_path}/valid-0 is not a TFRecord file of image/encoded") and "{{" not in message


@pytest.mark.slow  # several seconds: kept out of the fast loop
def test_mnist_split_is_seeded_and_disjoint():
    a, b = load_mnist(seed=0), load_mnist(seed=0)
    xa, ya = a.train_arrays
    assert a.num_train == 4000 and a.num_val == 1000
    np.testing.assert_array_equal(ya, b.train_arrays[1])
    assert xa.shape[1:] == (28, 28, 1) and 0.0 <= xa.min() and xa.max() <= 1.0
    val = np.concatenate([x.numpy() for x, _ in a.val_batches()])
    train_rows = {row.tobytes() for row in xa}
    assert sum(row.tobytes() in train_rows for row in val) == 0
    assert not np.array_equal(load_mnist(seed=1).train_arrays[1], ya)


def test_calibration_samples_are_spread_over_the_split():
    data = make_synthetic(num_train=1000, num_val=10)
    x = np.concatenate([b[0].numpy() for b in data.calibration_batches(100, seed=0)])
    train = data.train_arrays[0]
    idx = [int(np.flatnonzero((train == row).all(axis=(1, 2, 3)))[0]) for row in x]
    assert len(set(idx)) == 100 and max(idx) > 900 and min(idx) < 100


def test_eval_samples_limit_and_adapt_to_model_input():
    data = make_synthetic(num_train=10, num_val=50, eval_samples=20, batch_size=8)
    assert sum(int(x.shape[0]) for x, _ in data.val_batches()) == 20
    rgb = data.for_model((32, 32, 3))
    x, _ = next(iter(rgb.val_batches()))
    assert x.shape[1:] == (32, 32, 3)
    assert adapt_images(tf.zeros((2, 28, 28, 1)), (28, 28, 1)).shape == (2, 28, 28, 1)


def _write_image_folder(root, per_class=4, classes=("cat", "dog", "eel"), size=(30, 40)):
    """Class subfolders of PNG, JPEG and BMP files, each image a flat colour that names its class."""
    colours = {name: 60 * (i + 1) for i, name in enumerate(classes)}
    encoders = {".png": tf.io.encode_png, ".jpg": lambda x: tf.io.encode_jpeg(x, quality=100)}
    for name in classes:
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            image = np.full((*size, 3), colours[name], np.uint8)
            if i % 3 == 2:  # BMP through matplotlib's Pillow (TensorFlow decodes BMP but does not write it)
                from PIL import Image

                Image.fromarray(image).save(folder / f"img{i}.BMP")
                continue
            ext = ".png" if i % 3 == 0 else ".jpg"
            (folder / f"img{i}{ext}").write_bytes(encoders[ext](tf.constant(image)).numpy())
    (root / "cat" / "notes.txt").write_text("not an image: skipped by extension")
    return colours


def test_image_folder_reads_class_subfolders_with_a_seeded_split(tmp_path):
    from workbench.data.image_folder import load_image_folder

    colours = _write_image_folder(tmp_path / "train")
    data = load_image_folder(
        str(tmp_path / "train"), validation_split=0.25, image_size=16, resize_size=20, mean=[0, 0, 0], std=[1, 1, 1], batch_size=5, seed=3
    )
    assert (data.num_classes, data.num_train, data.num_val) == (3, 9, 3)
    val = [(x.numpy(), y.numpy()) for x, y in data.val_batches()]
    images, labels = np.concatenate([v[0] for v in val]), np.concatenate([v[1] for v in val])
    assert images.shape == (3, 16, 16, 3)
    expected = np.array([colours[["cat", "dog", "eel"][label]] for label in labels], np.float32)
    assert np.allclose(images.mean(axis=(1, 2, 3)), expected, atol=1.0)  # labels = sorted folder names
    train_labels = np.concatenate([y.numpy() for _, y in data.train_batches(shuffle=False)])
    assert np.bincount(np.concatenate([train_labels, labels]), minlength=3).tolist() == [4, 4, 4]
    again = load_image_folder(str(tmp_path / "train"), validation_split=0.25, image_size=16, resize_size=20, seed=3)
    assert np.array_equal(np.concatenate([y.numpy() for _, y in again.val_batches()]), labels)  # the seed fixes the split

    _write_image_folder(tmp_path / "val", per_class=2)
    separate = load_image_folder(str(tmp_path / "train"), validation_path=str(tmp_path / "val"), image_size=16, resize_size=20)
    assert (separate.num_train, separate.num_val) == (12, 6)


def test_image_folder_errors_name_the_setting(tmp_path):
    from workbench.data.image_folder import load_image_folder

    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "b").mkdir()
    with pytest.raises(ValueError, match=r"^dataset.path: class folder '.*empty/a' holds no JPEG/PNG/BMP images"):
        load_image_folder(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match=r"^dataset.path='.*empty' holds 0 class subfolder\(s\) and 0 JPEG/PNG/BMP images"):
        load_image_folder(str(tmp_path / "empty"), allow_empty_classes=True)
    for name in ("a", "b"):
        (tmp_path / "broken" / name).mkdir(parents=True)
        (tmp_path / "broken" / name / "x.jpg").write_text("not a jpeg")
    with pytest.raises(ValueError, match=r"^dataset.path: .*x.jpg is not a readable JPEG/PNG/BMP image"):
        load_image_folder(str(tmp_path / "broken"), validation_split=0.5)
    _write_image_folder(tmp_path / "train")
    _write_image_folder(tmp_path / "other", classes=("cat", "dog"))
    with pytest.raises(ValueError, match="both need the same class subfolders"):
        load_image_folder(str(tmp_path / "train"), validation_path=str(tmp_path / "other"))


def test_image_folder_walks_each_folder_once_and_names_a_corrupt_image_up_front(tmp_path):
    """Symlink loops end, two links to one image are one image, an empty class is an error (or skipped), and a
    corrupt PNG among good ones is named when the dataset is built, not during calibration."""
    from workbench.data.image_folder import load_image_folder

    root = tmp_path / "train"
    _write_image_folder(root)
    os.symlink(root, root / "cat" / "loop")  # a loop back to the top
    os.symlink(root / "dog", root / "dog" / "self")  # and one onto itself
    os.symlink(root / "eel" / "img0.png", root / "eel" / "again.png")  # the same image twice
    (root / "empty").mkdir()
    with pytest.raises(ValueError, match=r"class folder '.*empty' holds no JPEG/PNG/BMP images: .*dataset.allow_empty_classes=true"):
        load_image_folder(str(root), image_size=16, resize_size=20)
    data = load_image_folder(str(root), image_size=16, resize_size=20, allow_empty_classes=True, validation_split=0.25)
    assert data.num_classes == 3 and data.num_train + data.num_val == 12  # 4 per class, nothing listed twice
    (root / "dog" / "img9.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    with pytest.raises(ValueError, match=r"dataset.path: .*dog/img9.png is not a readable JPEG/PNG/BMP image"):
        load_image_folder(str(root), image_size=16, resize_size=20, allow_empty_classes=True, validation_split=0.25)


def test_image_folder_crops_at_the_models_input_size_by_default(tmp_path):
    """32×32 images for a 16×16 model: decoded and cropped at 16 (not at ImageNet's 224, then resized), no resize note."""
    import keras

    from workbench.data.image_folder import load_image_folder
    from workbench.stages.setup import check_pairing

    _write_image_folder(tmp_path / "train", size=(32, 32))
    data = load_image_folder(str(tmp_path / "train"), validation_split=0.25, mean=[0, 0, 0], std=[1, 1, 1])
    assert next(iter(data.val_batches(limit=1)))[0].shape[1:] == (224, 224, 3)  # no model to follow: ImageNet's size
    i = keras.Input((16, 16, 3))
    model = keras.Model(i, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(i)))
    assert "data.resized" not in check_pairing(model, data)
    x, _ = next(iter(data.for_model((16, 16, 3)).val_batches(limit=1)))
    assert x.shape[1:] == (16, 16, 3)
    fixed = load_image_folder(str(tmp_path / "train"), validation_split=0.25, image_size=24, resize_size=28)
    assert check_pairing(model, fixed)["data.resized"] == "24x24 resized to 16x16"  # a size the user set is kept, and said
