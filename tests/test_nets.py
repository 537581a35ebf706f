"""The study's nets: widths as its code had them, any input shape and class count, and each
name building its own net."""

import pytest
import torch
from torch import nn

from greenray.config import NET_NAMES, canonical_net
from greenray.tune.nets import (
    DenseLinearNN,
    DensePolyNN,
    SimpleCNN,
    build_net,
    linear_widths,
    poly_widths,
)

SHAPES = [(1, 28, 28), (3, 32, 32), (1, 8, 8)]


def out_widths(net: nn.Module) -> list[int]:
    return [m.out_features for m in net.modules() if isinstance(m, nn.Linear)]


def test_dense_poly_widths_halve_from_the_input_as_in_the_study():
    # FashionMNIST: 784 inputs, 3 layers -> 392, 196, 10
    assert poly_widths(784, 10, 3) == [392, 196, 10]
    assert poly_widths(3 * 32 * 32, 10, 4) == [1536, 768, 384, 10]
    assert poly_widths(64, 10, 1) == [10]


def test_dense_linear_widths_shrink_linearly_as_in_the_study():
    # layer d of L: floor(input * (1 - (d+1)/L)); the last one the classes
    assert linear_widths(784, 10, 3) == [522, 261, 10]
    assert linear_widths(784, 10, 4) == [588, 392, 196, 10]


def test_hidden_layers_are_never_narrower_than_the_classes():
    # 8x8 digits halve fast: 32, 16, 8 -> 10
    assert poly_widths(64, 10, 5) == [32, 16, 10, 10, 10]
    assert min(linear_widths(64, 10, 7)) == 10
    assert poly_widths(64, 40, 3) == [40, 40, 40]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", NET_NAMES)
@pytest.mark.parametrize("classes", [10, 3])
def test_every_net_classifies_every_input_shape(name, shape, classes):
    net = build_net(name, shape, classes, n_conv=2, n_linear=3).eval()
    assert net(torch.randn(5, *shape)).shape == (5, classes)
    assert out_widths(net)[-1] == classes


@pytest.mark.parametrize(
    ("shape", "features"), [((1, 28, 28), (81, 1, 1)), ((3, 32, 32), (243, 2, 2)), ((1, 8, 8), (81, 1, 1))]
)
def test_four_conv_layers_stay_legal_and_pooling_stops_at_one_pixel(shape, features):
    net = SimpleCNN(shape, 10, n_conv=4, n_linear=7).eval()
    assert net.feature_shape == features
    assert net(torch.randn(2, *shape)).shape == (2, 10)
    convs = [m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [shape[0] * 3 ** (d + 1) for d in range(4)]
    pools = sum(isinstance(m, nn.MaxPool2d) for m in net.modules())
    assert pools == (3 if shape == (1, 8, 8) else 4)  # 8 -> 4 -> 2 -> 1, then no more pooling


def test_simple_cnn_blocks_are_conv_batchnorm_relu_pool_and_relu_can_be_off():
    net = SimpleCNN((1, 28, 28), 10, n_conv=1, n_linear=3, relu=True)
    kinds = [type(m) for m in net][:4]
    assert kinds == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d]
    no_relu = SimpleCNN((1, 28, 28), 10, n_conv=1, n_linear=3, relu=False)
    assert not any(isinstance(m, nn.ReLU) for m in no_relu.modules())
    # the head halves from the image's size (the study's code), from the conv features in
    assert out_widths(net) == [392, 196, 10]
    assert [m.in_features for m in net.modules() if isinstance(m, nn.Linear)][0] == 3 * 14 * 14


def test_dense_nets_have_no_activation_unless_asked():
    for make in (DenseLinearNN, DensePolyNN):
        plain = make((1, 8, 8), 10, n_linear=3)
        assert not any(isinstance(m, nn.ReLU) for m in plain.modules())
        relu = make((1, 8, 8), 10, n_linear=3, activation="relu")
        assert sum(isinstance(m, nn.ReLU) for m in relu.modules()) == 2  # between layers only


def test_each_name_builds_its_own_net():
    # the study's early code trained DensePolyNN whatever was named
    built = {name: type(build_net(name, (1, 28, 28), 10)) for name in NET_NAMES}
    assert built == {"dense-linear": DenseLinearNN, "dense-poly": DensePolyNN, "cnn": SimpleCNN}
    assert type(build_net("SimpleCNN", (1, 28, 28), 10)) is SimpleCNN
    assert type(build_net("denselinearnn", (1, 28, 28), 10)) is DenseLinearNN


def test_relu_default_is_the_studied_one():
    assert any(isinstance(m, nn.ReLU) for m in build_net("cnn", (1, 8, 8), 10).modules())
    assert not any(isinstance(m, nn.ReLU) for m in build_net("dense-poly", (1, 8, 8), 10).modules())
    assert any(isinstance(m, nn.ReLU) for m in build_net("dense-poly", (1, 8, 8), 10, relu=True).modules())


def test_unknown_names_and_layer_counts_are_refused():
    with pytest.raises(ValueError, match="unknown net"):
        canonical_net("resnet")
    with pytest.raises(ValueError, match="at least one"):
        build_net("cnn", (1, 8, 8), 10, n_conv=0)
    with pytest.raises(ValueError, match="at least one"):
        build_net("dense-poly", (1, 8, 8), 10, n_linear=0)
