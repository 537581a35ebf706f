"""FashionMNIST from its idx files in the layouts users have: Debian's dataset-fashion-mnist
(gzipped files in one folder, found with no --data-dir) and torchvision's (DIR/FashionMNIST/raw,
gzipped or unpacked). The tests build tiny idx files, so they need neither the package nor a network."""

import gzip
import struct

import numpy as np
import pytest
import torch

from greenray.errors import UsageError
from greenray.tune import data as data_module
from greenray.tune import fashion
from greenray.tune.data import load

TRAIN, TEST = 12, 5


def _idx(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _arrays(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_x": rng.integers(0, 256, (TRAIN, 28, 28)),
        "train_y": rng.integers(0, 10, TRAIN),
        "test_x": rng.integers(0, 256, (TEST, 28, 28)),
        "test_y": rng.integers(0, 10, TEST),
    }


def _write(folder, arrays, gzipped=True):
    folder.mkdir(parents=True, exist_ok=True)
    for key, name in fashion.FILES.items():
        raw = _idx(arrays[key])
        if gzipped:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)


def _check(loaded, arrays):
    assert loaded.name == "fashionmnist" and loaded.n_classes == 10
    assert loaded.input_shape == (1, 28, 28)
    assert loaded.train_x.shape == (TRAIN, 1, 28, 28) and loaded.test_x.shape == (TEST, 1, 28, 28)
    assert torch.equal(loaded.train_y, torch.as_tensor(arrays["train_y"], dtype=torch.int64))
    assert torch.equal(loaded.test_y, torch.as_tensor(arrays["test_y"], dtype=torch.int64))
    # normalised from the training pixels: the same order of images as the file's
    pixels = arrays["train_x"].astype(np.float32) / 255.0
    expected = (pixels - pixels.mean()) / pixels.std(ddof=1)
    assert np.allclose(loaded.train_x[:, 0].numpy(), expected, atol=1e-4)


@pytest.mark.parametrize(
    ("where", "gzipped"),
    [
        ("fashion-mnist", True),  # --data-dir = Debian's parent, /usr/share/datasets
        ("", True),  # --data-dir = Debian's folder itself
        ("FashionMNIST/raw", True),  # torchvision's layout, as downloaded
        ("FashionMNIST/raw", False),  # torchvision's layout, unpacked
    ],
)
def test_each_layout_a_user_has_is_read(tmp_path, where, gzipped):
    arrays = _arrays(1)
    _write(tmp_path / where if where else tmp_path, arrays, gzipped)
    _check(load("fashionmnist", data_dir=tmp_path), arrays)


def test_with_no_data_dir_the_system_package_is_found(tmp_path, monkeypatch):
    arrays = _arrays(2)
    system = tmp_path / "usr-share-datasets" / "fashion-mnist"
    _write(system, arrays)
    monkeypatch.setattr(fashion, "SYSTEM_DIR", system)
    monkeypatch.setattr(data_module, "DEFAULT_DATA_DIR", str(tmp_path / "empty-cache"))
    _check(load("fashionmnist"), arrays)
    # a folder the user names is the one meant: no silent fallback to the system's copy
    with pytest.raises(UsageError, match="is not in --data-dir"):
        load("fashionmnist", data_dir=tmp_path / "elsewhere")


def test_a_damaged_file_is_one_sentence(tmp_path):
    _write(tmp_path, _arrays(3))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x01" + b"\x00" * 8))
    with pytest.raises(UsageError, match="could not be read"):
        load("fashionmnist", data_dir=tmp_path)


def test_read_idx_checks_the_header_against_the_payload(tmp_path):
    path = tmp_path / "short-idx1-ubyte"
    path.write_bytes(_idx(np.arange(6))[:-2])
    with pytest.raises(ValueError, match="holds 4 values"):
        fashion.read_idx(path)
