"""Data sets: the fixed stratified digits split, seeded synthetic data, the device-resident
shuffle, and one sentence when a torchvision data set is missing offline."""

import numpy as np
import pytest
import torch

from greenray.errors import UsageError
from greenray.tune.data import SyntheticSpec, _tensor_data, batch_bounds, load, load_on, shuffled_batches


def test_digits_split_is_stratified_fixed_and_normalised():
    first, second = load("digits"), load("digits")
    assert first.input_shape == (1, 8, 8) and first.n_classes == 10
    assert len(first.train_y) + len(first.test_y) == 1797
    assert len(first.test_y) == 360
    assert torch.equal(first.test_x, second.test_x) and torch.equal(first.train_y, second.train_y)
    train_share = np.bincount(first.train_y.numpy(), minlength=10) / len(first.train_y)
    test_share = np.bincount(first.test_y.numpy(), minlength=10) / len(first.test_y)
    assert np.abs(train_share - test_share).max() < 0.01  # stratified: the same class mix
    assert abs(float(first.train_x.mean())) < 1e-4 and abs(float(first.train_x.std()) - 1) < 1e-2
    assert first.train_x.dtype == torch.float32 and first.train_y.dtype == torch.int64


def test_digits_are_scikit_learns_in_its_own_split_order():
    """The embedded split is scikit-learn's stratified train_test_split, order included (a
    trial's seeded shuffle draws from that order), and the images its load_digits."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32)[:, None] / 16.0
    train_x, test_x, train_y, test_y = train_test_split(
        images, digits.target, test_size=0.2, stratify=digits.target, random_state=0
    )
    ours, theirs = load("digits"), _tensor_data("digits", train_x, train_y, test_x, test_y, 10)
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(ours, field), getattr(theirs, field)), field


def test_synthetic_data_is_seeded_and_takes_any_shape():
    spec = SyntheticSpec(shape=(3, 32, 32), n_classes=4, train=64, test=16, seed=7)
    a, b = load("synthetic", synthetic=spec), load("synthetic", synthetic=spec)
    other = load(
        "synthetic", synthetic=SyntheticSpec(shape=(3, 32, 32), n_classes=4, train=64, test=16, seed=8)
    )
    assert a.train_x.shape == (64, 3, 32, 32) and a.test_x.shape == (16, 3, 32, 32)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.train_x, other.train_x)
    assert set(a.train_y.tolist()) <= {0, 1, 2, 3}


def test_shuffled_batches_cover_every_sample_once_per_epoch():
    x = torch.arange(1037, dtype=torch.float32).reshape(-1, 1, 1, 1)
    y = torch.arange(1037)
    generator = torch.Generator().manual_seed(3)
    epochs = [torch.cat([yb for _, yb in shuffled_batches(x, y, 100, generator)]) for _ in range(2)]
    for seen in epochs:
        assert sorted(seen.tolist()) == list(range(1037))
    assert not torch.equal(epochs[0], epochs[1])  # a new order every epoch
    for xb, yb in shuffled_batches(x, y, 100, generator):
        assert torch.equal(xb.flatten().long(), yb)  # images stay with their labels


def test_a_last_batch_of_one_is_merged_so_batchnorm_can_train():
    assert batch_bounds(1025, 512) == [0, 512, 1025]
    assert batch_bounds(1024, 512) == [0, 512, 1024]
    assert batch_bounds(1, 512) == [0, 1]


def test_data_lives_on_the_device_it_was_asked_for_and_is_cached():
    data = load_on("digits", "cpu")
    assert data.device.type == "cpu"
    assert load_on("digits", "cpu") is data  # a worker reloads nothing between trials


@pytest.mark.parametrize(("name", "folder"), [("fashionmnist", "FashionMNIST"), ("cifar10", "CIFAR10")])
def test_a_missing_torchvision_dataset_offline_is_one_sentence_naming_both_ways(tmp_path, name, folder):
    with pytest.raises(UsageError) as caught:
        load(name, data_dir=tmp_path, download=False)
    message = str(caught.value)
    assert "--download" in message and f"copy torchvision's {folder} files into {tmp_path}" in message
    assert "\n" not in message and ". " not in message


def test_a_missing_fashionmnist_names_the_layouts_it_reads(tmp_path):
    with pytest.raises(UsageError) as caught:
        load("fashionmnist", data_dir=tmp_path)
    message = str(caught.value)
    for folder in (tmp_path / "fashion-mnist", tmp_path / "FashionMNIST" / "raw"):
        assert str(folder) in message
    assert "train-images-idx3-ubyte" in message and "dataset-fashion-mnist" in message


@pytest.mark.parametrize("name", ["fashionmnist", "cifar10"])
def test_a_failed_download_never_tells_the_user_to_pass_download(tmp_path, monkeypatch, name):
    from urllib.error import URLError

    from torchvision import datasets

    def offline(*args, **kwargs):
        raise URLError("no route to host")

    monkeypatch.setattr(datasets, "FashionMNIST", offline)
    monkeypatch.setattr(datasets, "CIFAR10", offline)
    with pytest.raises(UsageError) as caught:
        load(name, data_dir=tmp_path, download=True)
    message = str(caught.value)
    assert "could not be downloaded" in message and "no route to host" in message
    assert "pass --download" not in message


def test_an_unknown_dataset_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown dataset"):
        load("imagenet")
