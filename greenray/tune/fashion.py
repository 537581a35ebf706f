"""FashionMNIST's four idx files, found in the layouts a user already has and read directly.

torchvision checks each file's MD5 against its own copies and, on a mismatch, goes to the network;
Debian's `dataset-fashion-mnist` ships the same images recompressed (other checksums), so an
offline machine with the package installed could not train on it through torchvision. Reading the
idx format ourselves (a few lines) takes either copy, gzipped or not."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

# Where Debian's (and Ubuntu's) dataset-fashion-mnist package puts the files.
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
# The idx format's type byte (third of the magic number) for unsigned bytes, the only one used here.
_UBYTE = 0x08


def layouts(root: Path) -> list[Path]:
    """The folders under `root` that may hold the four files, in the order they are tried: the
    files in `root` itself, Debian's layout below it (`root/fashion-mnist`, so both the package's
    folder and its parent work), torchvision's (`root/FashionMNIST/raw`)."""
    return [root, root / "fashion-mnist", root / "FashionMNIST" / "raw"]


def expected(root: Path) -> str:
    """The layouts `find` accepts under `root`, for a message."""
    return (
        f"{FILES['train_x']}[.gz] and its three siblings in {root}, {root / 'fashion-mnist'} "
        f"(Debian's dataset-fashion-mnist) or {root / 'FashionMNIST' / 'raw'} (torchvision's)"
    )


def find(roots: list[Path]) -> dict[str, Path] | None:
    """The four files (each gzipped or not) from the first folder of the first root that holds
    them all, or None."""
    for root in roots:
        for folder in layouts(root):
            found = {key: _file(folder, name) for key, name in FILES.items()}
            if all(found.values()):
                return found  # type: ignore[return-value]
    return None


def read(files: dict[str, Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images N x 1 x 28 x 28 in [0, 1], train labels, test images, test labels)."""
    train_x, test_x = (_images(read_idx(files[key])) for key in ("train_x", "test_x"))
    train_y, test_y = (read_idx(files[key]).astype(np.int64) for key in ("train_y", "test_y"))
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise ValueError(f"the image and label files in {files['train_x'].parent} hold different counts")
    return train_x, train_y, test_x, test_y


def read_idx(path: Path) -> np.ndarray:
    """An idx file of unsigned bytes (gzipped or not) as an array of its own shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _UBYTE:
        raise ValueError(f"{path} is not an idx file of unsigned bytes")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path} holds {data.size} values, not the {shape} its header says")
    return data.reshape(shape)


def _images(pixels: np.ndarray) -> np.ndarray:
    return pixels[:, None].astype(np.float32) / 255.0


def _file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None
