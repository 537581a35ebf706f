"""The study's data sets (FashionMNIST from its idx files, CIFAR-10 from torchvision) and two that
need no download (scikit-learn's 8x8 digits, seeded synthetic data), held as normalised tensors on
the training device and shuffled there by index, so small nets are not starved by a DataLoader."""

from __future__ import annotations

import functools
import gzip
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from greenray.config import DATASETS, DEFAULT_DATA_DIR
from greenray.errors import UsageError
from greenray.tune import fashion

# The digits split is fixed (not the study's seed): every study trains on the same 80%, in the
# same order. The file holds scikit-learn's train_test_split(test_size=0.2, stratify=labels,
# random_state=0) of the indices, train then test.
DIGITS_SPLIT = Path(__file__).with_name("digits_split.npy")
DIGITS_TEST_SIZE = 360


@dataclass(frozen=True)
class TensorData:
    """A train/test split as tensors: x float32 (N, C, H, W) normalised per channel with the
    training split's mean and std, y int64 class indices."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    n_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        channels, height, width = self.train_x.shape[1:]
        return int(channels), int(height), int(width)

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    def to(self, device: torch.device | str) -> TensorData:
        """The same data on `device` (one copy, made once: batches are then slices of it)."""
        return TensorData(
            self.name,
            self.train_x.to(device),
            self.train_y.to(device),
            self.test_x.to(device),
            self.test_y.to(device),
            self.n_classes,
        )


@dataclass(frozen=True)
class SyntheticSpec:
    """Seeded class-clustered images: `shape` per image, `train`/`test` samples."""

    shape: tuple[int, int, int] = (1, 28, 28)
    n_classes: int = 10
    train: int = 6000
    test: int = 1000
    seed: int = 0


def load(
    name: str,
    *,
    data_dir: str | Path | None = None,
    download: bool = False,
    synthetic: SyntheticSpec | None = None,
) -> TensorData:
    """A data set on the CPU. fashionmnist comes from its idx files in `data_dir` (Debian's or
    torchvision's layout; with the default folder also from Debian's dataset-fashion-mnist package),
    cifar10 from `data_dir` in torchvision's layout; `download` fetches either there first when it is
    missing. Missing offline, a UsageError says how to get it."""
    if name == "digits":
        return _digits()
    if name == "synthetic":
        return _synthetic(synthetic or SyntheticSpec())
    default = Path(DEFAULT_DATA_DIR).expanduser().absolute()
    root = Path(data_dir).expanduser().absolute() if data_dir else default
    if name == "fashionmnist":
        return _fashionmnist(root, download, root == default)
    if name == "cifar10":
        return _cifar10(root, download)
    raise UsageError(f"unknown dataset {name!r}: use one of {', '.join(DATASETS)}")


@functools.lru_cache(maxsize=2)
def load_on(
    name: str,
    device: str,
    data_dir: str | None = None,
    download: bool = False,
    synthetic: SyntheticSpec | None = None,
) -> TensorData:
    """`load` moved to `device`, cached for the life of the process: a Ray worker that runs
    trial after trial (reused actors) loads its data once."""
    return load(name, data_dir=data_dir, download=download, synthetic=synthetic).to(device)


def batch_bounds(n: int, batch_size: int) -> list[int]:
    """Slice edges covering 0..n in batches of `batch_size`; a last batch of one sample is
    merged into the one before (BatchNorm cannot train on one value per channel)."""
    if batch_size < 1:
        raise ValueError(f"the batch size must be positive, not {batch_size}")
    bounds = [*range(0, n, batch_size), n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
        del bounds[-2]
    return bounds


def shuffled_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled batches, every sample once: a permutation drawn on the data's own
    device (the generator must live there too), then gathers by slices of it."""
    order = torch.randperm(x.shape[0], device=x.device, generator=generator)
    bounds = batch_bounds(x.shape[0], batch_size)
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        index = order[start:end]
        yield x[index], y[index]


def _normalised(train_x: torch.Tensor, test_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both splits scaled per channel by the training split's mean and std."""
    mean = train_x.mean(dim=(0, 2, 3), keepdim=True)
    std = train_x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return (train_x - mean) / std, (test_x - mean) / std


def _tensor_data(name, train_x, train_y, test_x, test_y, n_classes) -> TensorData:
    train_x, test_x = _normalised(
        torch.as_tensor(train_x, dtype=torch.float32), torch.as_tensor(test_x, dtype=torch.float32)
    )
    return TensorData(
        name,
        train_x.contiguous(),
        torch.as_tensor(train_y, dtype=torch.int64),
        test_x.contiguous(),
        torch.as_tensor(test_y, dtype=torch.int64),
        n_classes,
    )


def _digits() -> TensorData:
    """scikit-learn's 8x8 digits (1,797 images, shipped inside scikit-learn), split 80/20,
    stratified by class, always the same way: the split of `DIGITS_SPLIT`. Read from
    scikit-learn's file without importing scikit-learn, which costs a fresh trial process
    about 3 s of CPU (test_data checks both against scikit-learn's own)."""
    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("the digits data set comes with scikit-learn, which is not installed")
    csv = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(csv, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.float32)
    images = table[:, :64].reshape(-1, 1, 8, 8) / 16.0  # pixel values are 0..16
    labels = table[:, 64].astype(np.int64)
    order = np.load(DIGITS_SPLIT)
    train, test = order[: len(order) - DIGITS_TEST_SIZE], order[len(order) - DIGITS_TEST_SIZE :]
    return _tensor_data("digits", images[train], labels[train], images[test], labels[test], 10)


def _synthetic(spec: SyntheticSpec) -> TensorData:
    """Images drawn around one random prototype per class, plus noise: learnable, any shape."""
    if spec.n_classes < 2 or spec.train < 1 or spec.test < 1 or min(spec.shape) < 1:
        raise UsageError(f"synthetic data needs 2+ classes, samples and a positive shape, not {spec}")
    generator = torch.Generator().manual_seed(spec.seed)
    prototypes = torch.randn(spec.n_classes, *spec.shape, generator=generator)
    n = spec.train + spec.test
    labels = torch.randint(spec.n_classes, (n,), generator=generator)
    images = prototypes[labels] + 1.5 * torch.randn(n, *spec.shape, generator=generator)
    return _tensor_data(
        "synthetic",
        images[: spec.train],
        labels[: spec.train],
        images[spec.train :],
        labels[spec.train :],
        spec.n_classes,
    )


def _fashionmnist(root: Path, download: bool, default_dir: bool) -> TensorData:
    """FashionMNIST from the first layout that holds its four idx files; the system's copy is
    tried only when --data-dir was left at its default (a folder given is the one meant)."""
    roots = [root, fashion.SYSTEM_DIR] if default_dir else [root]
    files = fashion.find(roots)
    if files is None and download:
        _download("fashionmnist", root)
        files = fashion.find([root])
    if files is None:
        raise UsageError(
            f"fashionmnist is not in --data-dir {root}: greenray reads {fashion.expected(root)}; "
            "install Debian's dataset-fashion-mnist (found with no --data-dir), pass --download where this "
            f"machine is online, or copy torchvision's FashionMNIST files into {root}/FashionMNIST/raw"
        )
    try:
        arrays = fashion.read(files)
    except (ValueError, OSError, EOFError) as exc:  # a truncated or foreign file
        raise UsageError(f"fashionmnist could not be read: {exc}") from None
    return _tensor_data("fashionmnist", *arrays, 10)


def _cifar10(root: Path, download: bool) -> TensorData:
    """CIFAR-10 from torchvision, read whole from its arrays (no per-image transform): uint8 pixels
    to [0, 1], then normalised."""
    from torchvision import datasets

    if download:
        _download("cifar10", root)
    try:
        train = datasets.CIFAR10(root=str(root), train=True)
        test = datasets.CIFAR10(root=str(root), train=False)
    except (RuntimeError, OSError):
        raise UsageError(
            f"cifar10 is not in --data-dir {root} (torchvision's layout, {root / 'cifar-10-batches-py'}): "
            f"pass --download where this machine is online, or copy torchvision's CIFAR10 files into {root}"
        ) from None
    return _tensor_data("cifar10", *_arrays(train), *_arrays(test), len(train.classes))


def _download(name: str, root: Path) -> None:
    """torchvision's download of `name` into `root` (it skips files already there and checked)."""
    from torchvision import datasets

    cls = datasets.FashionMNIST if name == "fashionmnist" else datasets.CIFAR10
    try:
        cls(root=str(root), train=True, download=True)
        cls(root=str(root), train=False, download=True)
    except (RuntimeError, OSError) as exc:  # a failed download (URLError), a refused checksum
        reason = str(exc).splitlines()[0][:120] if str(exc) else exc.__class__.__name__
        raise UsageError(
            f"{name} could not be downloaded into --data-dir {root} ({reason}): check that this machine "
            f"reaches the internet, or copy torchvision's {cls.__name__} files into {root}"
        ) from None


def _arrays(dataset) -> tuple[np.ndarray, np.ndarray]:
    """(images N x C x H x W in [0, 1], labels) from a torchvision CIFAR10."""
    images = np.asarray(dataset.data, dtype=np.float32) / 255.0
    images = images.transpose(0, 3, 1, 2)  # HWC colour
    return images, np.asarray(dataset.targets)
