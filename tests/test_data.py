"""Offline data sets: toys, digits, photo patches, and the file loaders on files the tests write."""

import gzip
import json
import math
import pickle
import struct

import numpy as np
import pytest
import torch

from scoregen.data import (
    DATASETS,
    Dataset,
    dataset_options,
    from_data_space,
    load_dataset,
    noise2noise_pairs,
    split_indices,
    to_data_space,
)

N = 20_000  # draws for the statistical toy checks


def draw(name, n=N, seed=0, **options):
    return load_dataset(name, **options).sample(n, torch.Generator().manual_seed(seed))


def assert_binomial_fractions(counts, probs, what):
    """Each count within 5 binomial standard errors of n p."""
    n = counts.sum()
    for k, (count, p) in enumerate(zip(counts.tolist(), probs)):
        se = math.sqrt(n * p * (1 - p))
        assert abs(count - n * p) < 5 * se, f"{what} {k}: {count} vs {n * p:.0f} ± 5×{se:.1f}"


# ------------------------------------------------------------------------------ toys


@pytest.mark.parametrize("name", ["moons", "swiss_roll", "checkerboard", "rings"])
def test_toys_are_endless_seeded_and_reproducible(name):
    data = load_dataset(name, n_test=500)
    assert data.shape == (2,) and data.train is None and data.test.shape == (500, 2)
    a = data.sample(100, torch.Generator().manual_seed(5))
    b = data.sample(100, torch.Generator().manual_seed(5))
    c = data.sample(100, torch.Generator().manual_seed(6))
    assert a.shape == (100, 2) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(load_dataset(name, n_test=500).test, data.test)
    assert not torch.equal(load_dataset(name, n_test=500, seed=1).test, data.test)
    json.dumps(data.record())


def test_moons_without_noise_lie_on_the_two_arcs_in_equal_shares():
    x = draw("moons", noise=0.0) / 2 + torch.tensor([0.5, 0.25])  # back to the unit arcs
    upper = (x.norm(dim=1) - 1).abs()
    lower = ((x - torch.tensor([1.0, 0.5])).norm(dim=1) - 1).abs()
    on_upper = (upper < 1e-5) & (x[:, 1] >= -1e-6)
    on_lower = (lower < 1e-5) & (x[:, 1] <= 0.5 + 1e-6)
    assert (on_upper | on_lower).all(), f"{(~(on_upper | on_lower)).sum()} points off the arcs"
    assert_binomial_fractions(torch.stack([on_upper.sum(), (~on_upper).sum()]), [0.5, 0.5], "arc")


def test_swiss_roll_without_noise_lies_on_its_spiral():
    x = draw("swiss_roll", noise=0.0)
    t = 5 * x.norm(dim=1)  # the point is t (cos t, sin t) / 5
    assert t.min() >= 1.5 * math.pi - 1e-4 and t.max() <= 4.5 * math.pi + 1e-4
    angle_error = torch.remainder(torch.atan2(x[:, 1], x[:, 0]) - t + math.pi, 2 * math.pi)
    assert (angle_error - math.pi).abs().max() < 1e-3


@pytest.mark.parametrize("cells", [4, 3])
def test_checkerboard_is_uniform_on_the_dark_cells(cells):
    x = draw("checkerboard", cells=cells).double()
    cell = torch.floor(x + cells / 2).long()
    assert (cell >= 0).all() and (cell < cells).all()
    assert (cell.sum(dim=1) % 2 == 0).all(), "a point fell on a light cell"
    index = cell[:, 0] * cells + cell[:, 1]
    dark = [i * cells + j for i in range(cells) for j in range(cells) if (i + j) % 2 == 0]
    counts = torch.bincount(index, minlength=cells * cells)[dark]
    assert_binomial_fractions(counts, [1 / len(dark)] * len(dark), "dark cell")


def test_rings_without_noise_have_integer_radii_weighted_by_length():
    x = draw("rings", noise=0.0, n_rings=3)
    radius = x.norm(dim=1)
    nearest = radius.round()
    assert (radius - nearest).abs().max() < 1e-5
    counts = torch.stack([(nearest == r).sum() for r in (1, 2, 3)])
    assert_binomial_fractions(counts, [1 / 6, 2 / 6, 3 / 6], "ring")


def test_toy_noise_has_the_requested_scale():
    clean = draw("rings", noise=0.0, seed=3)
    noisy = draw("rings", noise=0.2, seed=3)
    # same generator stream up to the radial noise: radius difference is 0.2 z
    diff = noisy.norm(dim=1) - clean.norm(dim=1)
    se = 0.04 * math.sqrt(2 / (N - 1))  # standard error of a normal sample variance
    assert abs(diff.var().item() - 0.04) < 5 * se, f"variance {diff.var():.4f} vs 0.04 ± 5×{se:.4f}"


# ------------------------------------------------------------------------------ splits


def test_split_indices_are_disjoint_complete_and_seeded():
    train, test = split_indices(100, 17, seed=4)
    assert len(test) == 17 and len(train) == 83
    assert sorted(torch.cat([train, test]).tolist()) == list(range(100))
    again = split_indices(100, 17, seed=4)
    assert torch.equal(again[0], train) and torch.equal(again[1], test)
    assert not torch.equal(split_indices(100, 17, seed=5)[1], test)
    with pytest.raises(ValueError, match=r"n_test must be an integer in \[1, 99\]"):
        split_indices(100, 100)


# ------------------------------------------------------------------------------ digits


def rows(images):
    return sorted(tuple(r) for r in images.reshape(images.shape[0], -1).tolist())


def test_digits_split_partitions_the_real_images_in_minus_one_one():
    from sklearn.datasets import load_digits

    data = load_digits_cached()
    assert data.train.shape == (1500, 1, 8, 8) and data.test.shape == (297, 1, 8, 8)
    assert data.train.dtype == torch.float32
    assert data.train.min() == -1 and data.train.max() == 1
    assert data.normalization == {"scale": 0.5, "shift": 0.5}
    pixels = torch.cat([data.to_data_space(data.train), data.to_data_space(data.test)])
    reference = torch.from_numpy(load_digits().images).float()[:, None] / 16
    assert rows(pixels) == rows(reference)  # train ∪ test is exactly the 1,797 images
    again = load_dataset("digits")
    assert torch.equal(again.test, data.test)
    assert not torch.equal(load_dataset("digits", seed=1).test, data.test)


def test_digits_labels_follow_their_images():
    from sklearn.datasets import load_digits

    data = load_digits_cached()
    bunch = load_digits()
    reference = torch.from_numpy(bunch.images).float()[:, None] / 16
    label_of = {tuple(r): int(t) for r, t in zip(reference.flatten(1).tolist(), bunch.target)}
    for split in ("train", "test"):
        pixels = data.to_data_space(getattr(data, split)).flatten(1).tolist()
        labels = getattr(data, f"{split}_labels")
        assert labels.dtype == torch.int64 and labels.shape == (len(pixels),)
        # duplicated images in the set may carry either label; every image's label is one of its
        mismatches = sum(label_of[tuple(p)] != int(t) for p, t in zip(pixels, labels))
        assert mismatches <= 2, f"{mismatches} {split} labels do not match their images"
    with pytest.raises(ValueError, match="test_labels must be one label per test example"):
        Dataset("x", (2,), train=torch.zeros(3, 2), test=torch.zeros(2, 2),
                test_labels=torch.zeros(3))  # fmt: skip


_DIGITS = {}


def load_digits_cached(**options):
    key = tuple(sorted(options.items()))
    if key not in _DIGITS:
        _DIGITS[key] = load_dataset("digits", **options)
    return _DIGITS[key]


@pytest.mark.parametrize("size", [16, 32])
def test_digits_resize_keeps_pixels_in_range(size):
    data = load_digits_cached(size=size)
    assert data.train.shape == (1500, 1, size, size) and data.record()["size"] == size
    pixels = data.to_data_space(data.train)
    assert pixels.min() >= 0 and pixels.max() <= 1
    # a bilinear upsampling keeps each image's mean close to the 8×8 mean
    small = load_digits_cached().to_data_space(load_digits_cached().train)
    assert (pixels.mean(dim=(1, 2, 3)) - small.mean(dim=(1, 2, 3))).abs().max() < 0.05


def test_model_range_zero_one_keeps_pixels():
    data = load_dataset("digits", model_range=(0, 1))
    assert data.normalization == {"scale": 1.0, "shift": 0.0}
    assert data.train.min() == 0 and data.train.max() == 1
    with pytest.raises(ValueError, match="model_range must be finite with low < high"):
        load_dataset("digits", model_range=(1, 1))


def test_record_maps_samples_back_to_clipped_pixels():
    data = load_digits_cached()
    record = json.loads(json.dumps(data.record()))
    assert record["value_range"] == [0.0, 1.0] and record["channels"] == 1
    x = torch.tensor([-1.4, -1.0, 0.0, 1.0, 1.2])
    assert torch.allclose(to_data_space(x, record), torch.tensor([-0.2, 0.0, 0.5, 1.0, 1.1]))
    assert torch.equal(to_data_space(x, record, clip=True), torch.tensor([0, 0, 0.5, 1, 1.0]))
    assert torch.equal(data.to_data_space(x, clip=True), to_data_space(x, record, clip=True))
    assert torch.allclose(data.from_data_space(data.to_data_space(x)), x)


@pytest.mark.parametrize(
    "normalization",
    [{}, {"scale": 0.5, "shift": 0.5}, {"scale": 1 / 3, "shift": -0.25}, {"scale": 7.5, "shift": 2.0}],
)
def test_from_data_space_is_the_inverse_of_to_data_space(normalization):
    record = {"normalization": normalization}
    x = torch.randn(64, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # float64 round trips: two roundings of relative size 2^-53 each
    torch.testing.assert_close(from_data_space(to_data_space(x, record), record), x, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(to_data_space(from_data_space(x, record), record), x, rtol=1e-14, atol=1e-14)
    scale, shift = normalization.get("scale", 1.0), normalization.get("shift", 0.0)
    torch.testing.assert_close(from_data_space(x, record), (x - shift) / scale, rtol=0, atol=0)


def test_from_data_space_gives_back_the_model_inputs_of_an_image_dataset():
    data = load_digits_cached()
    pixels = data.to_data_space(data.train)  # k/16 in [0, 1]: every step exact in float32
    assert torch.equal(from_data_space(pixels, data.record()), data.train)
    assert torch.equal(data.from_data_space(pixels), data.train)


# ------------------------------------------------------------------------------ patches


def test_patches_split_by_photograph():
    from skimage.color import rgb2gray
    from skimage.data import chelsea

    data = load_dataset("patches", patch_size=8)
    info = data.record()
    assert info["test_photos"] == ["chelsea"] and "chelsea" not in info["train_photos"]
    photo = rgb2gray(chelsea())
    rows_, cols = photo.shape[0] // 8, photo.shape[1] // 8
    assert data.test.shape == (rows_ * cols, 1, 8, 8)
    first = torch.from_numpy(photo[:8, :8]).float()
    assert torch.allclose(data.to_data_space(data.test[0, 0]), first, atol=1e-6)
    second_row = torch.from_numpy(photo[8:16, :8]).float()
    assert torch.allclose(data.to_data_space(data.test[cols, 0]), second_row, atol=1e-6)
    pixels = data.to_data_space(data.train)
    assert pixels.min() >= 0 and pixels.max() <= 1 and data.train.dtype == torch.float32


def test_colour_patches_with_overlap_and_subsets():
    data = load_dataset("patches", patch_size=16, grayscale=False, stride=8, max_per_photo=50)
    assert data.shape == (3, 16, 16) and data.record()["channels"] == 3
    assert data.train.shape[0] == 50 * 3 and data.test.shape[0] == 50
    again = load_dataset("patches", patch_size=16, grayscale=False, stride=8, max_per_photo=50)
    assert torch.equal(again.train, data.train)
    with pytest.raises(ValueError, match="grayscale photograph; use grayscale=True"):
        load_dataset("patches", grayscale=False, photos=["camera", "coffee"])
    with pytest.raises(ValueError, match=r"n_test_photos must be an integer in \[1, 1\]"):
        load_dataset("patches", photos=["camera", "coffee"], n_test_photos=2)


# ------------------------------------------------------------------------------ MNIST-style files


def write_idx(path, array, compress):
    header = struct.pack(">I", 0x0800 | array.ndim)  # magic: unsigned bytes, ndim
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(f"{path}.gz", "wb") as file:
            file.write(payload)
    else:
        path.write_bytes(payload)


def write_mnist_files(root, folder, n_train, n_test, compress, seed=0):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    images = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images[split] = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        # each label is its image's first pixel mod 10, so a test can check they stay paired
        images[f"{split}_labels"] = images[split][:, 0, 0] % 10
        write_idx(raw / f"{split}-images-idx3-ubyte", images[split], compress)
        write_idx(raw / f"{split}-labels-idx1-ubyte", images[f"{split}_labels"], compress)
    return images


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
@pytest.mark.parametrize("compress", [False, True])
def test_mnist_style_loader_reads_idx_files(tmp_path, name, folder, compress):
    images = write_mnist_files(tmp_path, folder, 6, 4, compress)
    data = load_dataset(name, data_dir=tmp_path)
    assert data.train.shape == (6, 1, 28, 28) and data.test.shape == (4, 1, 28, 28)
    expected = torch.from_numpy(images["train"]).float()[:, None] / 255
    assert torch.allclose(data.to_data_space(data.train), expected, atol=1e-6)
    assert data.record()["name"] == name and data.record()["value_range"] == [0.0, 1.0]
    assert data.train_labels.tolist() == images["train_labels"].tolist()
    assert data.test_labels.tolist() == images["t10k_labels"].tolist()
    subset = load_dataset(name, data_dir=tmp_path, n_train=3, n_test=2, size=14)
    assert subset.train.shape == (3, 1, 14, 14)
    kept = load_dataset(name, data_dir=tmp_path, n_train=3, n_test=2)
    for split in ("train", "test"):
        first_pixel = (kept.to_data_space(getattr(kept, split))[:, 0, 0, 0] * 255).round().long()
        assert torch.equal(getattr(kept, f"{split}_labels"), first_pixel % 10)


def test_a_corrupt_archive_is_named(tmp_path):
    write_mnist_files(tmp_path, "MNIST", 2, 2, compress=True)
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match=r"cannot extract '.*train-images-idx3-ubyte.gz'"):
        load_dataset("mnist", data_dir=tmp_path)
    names = sorted(p.name for p in (tmp_path / "MNIST" / "raw").iterdir())
    assert "train-images-idx3-ubyte" not in names and not any(n.startswith(".") for n in names)
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"\0\0\x08\x09" * 4)
    with pytest.raises(ValueError, match="are not valid idx files"):
        load_dataset("mnist", data_dir=tmp_path)


def test_missing_files_name_the_folder(tmp_path):
    with pytest.raises(
        ValueError, match=rf"files not found in '{tmp_path}/MNIST/raw'.*download=True"
    ):
        load_dataset("mnist", data_dir=tmp_path)
    with pytest.raises(ValueError, match=rf"'{tmp_path}/cifar-10-batches-py': data_batch_1"):
        load_dataset("cifar10", data_dir=tmp_path)
    with pytest.raises(ValueError, match="needs data_dir \\(CLI: --data-dir\\)"):
        load_dataset("fashion_mnist")
    with pytest.raises(ValueError, match=rf"'{tmp_path}/none' is not a folder"):
        load_dataset("image_folder", data_dir=tmp_path / "none")
    assert list(tmp_path.iterdir()) == []  # nothing was created or downloaded


# ------------------------------------------------------------------------------ CIFAR-10 files


def write_cifar_files(root, n_per_batch, seed=0):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        entry = {
            "batch_label": name,
            "labels": rng.integers(0, 10, n_per_batch).tolist(),
            "data": data,
            "filenames": [f"{name}_{i}.png" for i in range(n_per_batch)],
        }
        with open(folder / name, "wb") as file:
            pickle.dump(entry, file, protocol=2)
        batches[name] = data
    return folder, batches


def test_cifar10_reads_the_python_batches(tmp_path):
    _, batches = write_cifar_files(tmp_path, 3)
    data = load_dataset("cifar10", data_dir=tmp_path)
    assert data.train.shape == (15, 3, 32, 32) and data.test.shape == (3, 3, 32, 32)
    # each row holds the red plane, then green, then blue, each 32×32 row-major
    first = torch.from_numpy(batches["data_batch_1"][0]).float().reshape(3, 32, 32) / 255
    assert torch.allclose(data.to_data_space(data.train[0]), first, atol=1e-6)
    last = torch.from_numpy(batches["data_batch_5"][2]).float().reshape(3, 32, 32) / 255
    assert torch.allclose(data.to_data_space(data.train[14]), last, atol=1e-6)
    gray = load_dataset("cifar10", data_dir=tmp_path, grayscale=True, size=16, n_train=4)
    assert gray.train.shape == (4, 1, 16, 16) and gray.record()["channels"] == 1


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_cifar10_refuses_pickles_that_would_run_code(tmp_path, capsys):
    folder, _ = write_cifar_files(tmp_path, 2)
    with open(folder / "data_batch_3", "wb") as file:
        pickle.dump({"data": Payload()}, file, protocol=2)
    with pytest.raises(
        ValueError, match=r"data_batch_3'.*refusing to load (__builtin__|builtins).print"
    ):
        load_dataset("cifar10", data_dir=tmp_path)
    assert "must never run" not in capsys.readouterr().out


# ------------------------------------------------------------------------------ image folders


def test_image_folder_crops_resizes_and_splits(tmp_path):
    from PIL import Image

    (tmp_path / "sub").mkdir()
    values = [0, 60, 120, 180, 240]
    for i, v in enumerate(values):
        # wide image: a centre square of value v between black side bands -> centre crop = v
        image = np.zeros((10, 30, 3), dtype=np.uint8)
        image[:, 10:20] = v
        folder = tmp_path / "sub" if i % 2 else tmp_path
        Image.fromarray(image).save(folder / f"img{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    data = load_dataset("image_folder", data_dir=tmp_path, size=8, n_test=2)
    assert data.train.shape == (3, 3, 8, 8) and data.test.shape == (2, 3, 8, 8)
    pixels = torch.cat([data.to_data_space(data.train), data.to_data_space(data.test)])
    means = sorted(round(255 * m) for m in pixels.mean(dim=(1, 2, 3)).tolist())
    assert means == values
    assert (pixels.amax(dim=(1, 2, 3)) - pixels.amin(dim=(1, 2, 3))).max() < 1e-6
    gray = load_dataset("image_folder", data_dir=tmp_path, size=4, grayscale=True)
    assert gray.shape == (1, 4, 4) and gray.train.shape[0] + gray.test.shape[0] == 5


def test_image_folder_names_an_unreadable_file(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=rf"cannot read image '{tmp_path}/b.png'"):
        load_dataset("image_folder", data_dir=tmp_path)


# ------------------------------------------------------------------------------ Noise2Noise


def test_noise2noise_pairs_are_two_independent_noisy_copies():
    clean = load_digits_cached()
    data = noise2noise_pairs(clean, sigma=0.3, seed=1)
    assert data.train is None and data.pairs.shape == (1500, 2, 1, 8, 8)
    assert data.record()["pair_sigma"] == 0.3 and torch.equal(data.test, clean.test)
    noise = (data.pairs - clean.train[:, None]).reshape(1500, 2, -1)
    first, second = noise[:, 0].reshape(-1), noise[:, 1].reshape(-1)
    n = first.numel()
    se = 0.09 * math.sqrt(2 / (n - 1))
    for copy in (first, second):
        assert abs(copy.var().item() - 0.09) < 5 * se, f"{copy.var():.5f} vs 0.09 ± 5×{se:.5f}"
    corr = torch.corrcoef(torch.stack([first, second]))[0, 1].item()
    assert abs(corr) < 5 / math.sqrt(n), f"copies correlate: {corr:.4f}"
    inputs, targets = data.sample_pairs(4, torch.Generator().manual_seed(0))
    assert inputs.shape == targets.shape == (4, 1, 8, 8)
    with pytest.raises(ValueError, match="holds only noisy pairs"):
        data.sample(4)
    with pytest.raises(ValueError, match="needs a dataset with a finite train set"):
        noise2noise_pairs(load_dataset("moons"), sigma=0.1)


# ------------------------------------------------------------------------------ registry


def test_registry_and_dataset_errors():
    assert {"moons", "digits", "patches", "mnist", "cifar10", "image_folder"} <= set(DATASETS)
    with pytest.raises(ValueError, match=r"unknown options \['size'\] for dataset 'moons'"):
        load_dataset("moons", size=3)
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet")
    assert {"data_dir", "download"} <= set(dataset_options("mnist"))
    assert "data_dir" not in dataset_options("digits")
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        dataset_options("imagenet")
    with pytest.raises(ValueError, match="exactly one of train"):
        Dataset("x", (2,), train=torch.zeros(3, 2), sampler=lambda n, g: torch.zeros(n, 2))
    with pytest.raises(ValueError, match="pairs must have shape"):
        Dataset("x", (2,), pairs=torch.zeros(3, 2))
    assert load_dataset("ncsn2d", n_test=10).oracle is not None
