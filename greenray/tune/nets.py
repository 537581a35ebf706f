"""The study's three image classifiers, DenseLinearNN, DensePolyNN and SimpleCNN, built for any
input shape (channels, height, width) and class count, with their layer counts as parameters.

Widths follow the study's code (README, "Hyperparameter search"): a DensePoly layer d of N is
floor(inputs / 2^(d+1)) wide, a DenseLinear layer d of L is floor(inputs * (1 - (d+1)/L)),
the last layer is the class count, and no hidden layer is narrower than the class count.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from greenray.config import canonical_net

InputShape = tuple[int, int, int]  # (channels, height, width)


def poly_widths(inputs: int, n_classes: int, n_linear: int) -> list[int]:
    """Output widths of N DensePoly-style layers: each half the one before, the last the classes."""
    _check_layers("linear", n_linear)
    hidden = [max(inputs // 2 ** (d + 1), n_classes) for d in range(n_linear - 1)]
    return [*hidden, n_classes]


def linear_widths(inputs: int, n_classes: int, n_linear: int) -> list[int]:
    """Output widths of L DenseLinear layers: shrinking linearly from the input to the classes."""
    _check_layers("linear", n_linear)
    hidden = [max(inputs * (n_linear - d - 1) // n_linear, n_classes) for d in range(n_linear - 1)]
    return [*hidden, n_classes]


def _check_layers(kind: str, count: int) -> None:
    if count < 1:
        raise ValueError(f"a net needs at least one {kind} layer, not {count}")


def _linear_stack(inputs: int, widths: list[int], activation: str | None) -> list[nn.Module]:
    """Linear layers of the given output widths; `activation` ("relu") between them, or none:
    without it the stack is one linear map, as the study trained its dense nets."""
    if activation not in (None, "relu"):
        raise ValueError(f"activation is None or 'relu', not {activation!r}")
    layers: list[nn.Module] = []
    for i, width in enumerate(widths):
        layers.append(nn.Linear(inputs, width))
        if activation == "relu" and i < len(widths) - 1:
            layers.append(nn.ReLU(inplace=True))
        inputs = width
    return layers


def _size(shape: InputShape) -> int:
    channels, height, width = shape
    if min(shape) < 1:
        raise ValueError(f"an input shape needs positive sizes, not {shape}")
    return channels * height * width


class _DenseNN(nn.Sequential):
    """A flattened image through linear layers whose widths `widths_of` gives."""

    widths_of: Callable[[int, int, int], list[int]]

    def __init__(
        self, input_shape: InputShape, n_classes: int, n_linear: int = 3, activation: str | None = None
    ) -> None:
        inputs = _size(input_shape)
        widths = type(self).widths_of(inputs, n_classes, n_linear)
        super().__init__(nn.Flatten(), *_linear_stack(inputs, widths, activation))
        self.widths = widths


class DenseLinearNN(_DenseNN):
    """N linear layers whose widths shrink linearly towards the number of classes."""

    widths_of = staticmethod(linear_widths)


class DensePolyNN(_DenseNN):
    """N linear layers, each half as wide as the one before, the last one the classes."""

    widths_of = staticmethod(poly_widths)


class SimpleCNN(nn.Sequential):
    """M conv blocks (conv 3x3 with padding 1, BatchNorm2d, ReLU when `relu`, MaxPool2d(2)), then
    N DensePoly-style linear layers.

    Conv block d has C * 3^(d+1) channels (C: the input's). A block whose map is already 1 pixel
    high or wide skips its pooling, so 4 blocks stay legal on 8x8 input (8 -> 4 -> 2 -> 1 -> 1);
    28x28 gives 14, 7, 3, 1 and 32x32 gives 16, 8, 4, 2. As in the study's code, the linear
    widths halve from the *image's* size (C*H*W / 2, / 4, ...), not from the conv features: the
    first linear layer maps the conv features to C*H*W/2.
    """

    def __init__(
        self, input_shape: InputShape, n_classes: int, n_conv: int = 2, n_linear: int = 3, relu: bool = True
    ) -> None:
        inputs = _size(input_shape)
        _check_layers("conv", n_conv)
        channels, height, width = input_shape
        blocks: list[nn.Module] = []
        for d in range(n_conv):
            out = input_shape[0] * 3 ** (d + 1)
            blocks += [nn.Conv2d(channels, out, kernel_size=3, padding=1), nn.BatchNorm2d(out)]
            if relu:
                blocks.append(nn.ReLU(inplace=True))
            if height >= 2 and width >= 2:
                blocks.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            channels = out
        feature_shape = (channels, height, width)
        widths = poly_widths(inputs, n_classes, n_linear)
        super().__init__(*blocks, nn.Flatten(), *_linear_stack(_size(feature_shape), widths, None))
        self.feature_shape: InputShape = feature_shape
        self.widths = widths


def build_net(
    name: str,
    input_shape: InputShape,
    n_classes: int,
    *,
    n_conv: int = 2,
    n_linear: int = 3,
    relu: bool | None = None,
) -> nn.Module:
    """The net `name` names (never another: the study's early code trained DensePolyNN whatever
    was asked). `relu` None means each net's studied default: on for SimpleCNN, off (a purely
    linear stack) for the dense nets."""
    net = canonical_net(name)
    if net == "cnn":
        return SimpleCNN(input_shape, n_classes, n_conv=n_conv, n_linear=n_linear, relu=relu is not False)
    make: Callable[..., nn.Module] = DenseLinearNN if net == "dense-linear" else DensePolyNN
    return make(input_shape, n_classes, n_linear=n_linear, activation="relu" if relu else None)
