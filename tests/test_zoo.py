"""The serving models: names and aliases, input sizes, weights from cache, file or nowhere, precision."""

import socket

import pytest
import torch

from greenray.errors import UsageError
from greenray.serve import zoo


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("convnext", "convnext_base"),
        ("vit", "vit_b_16"),
        ("densenet", "densenet121"),
        ("shufflenet", "shufflenet_v2_x1_0"),
        ("shufflenet_x0_5", "shufflenet_v2_x0_5"),
        ("alexnet", "alexnet"),
        ("ConvNeXt", "convnext_base"),
        ("shufflenet-v2-x0-5", "shufflenet_v2_x0_5"),
        ("resnet18", "resnet18"),  # any torchvision classification model
    ],
)
def test_names_and_aliases_resolve_to_torchvision_models(name, expected):
    assert zoo.resolve(name) == expected


def test_an_unknown_model_is_one_sentence_with_a_suggestion():
    with pytest.raises(UsageError, match="did you mean convnext") as info:
        zoo.resolve("convnxt")
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match="unknown model 'fasterrcnn_resnet50_fpn'"):
        zoo.resolve("fasterrcnn_resnet50_fpn")  # a detection model is not a classifier


def test_the_study_models_take_224_pixel_imagenet_inputs():
    for name in zoo.STUDY_MODELS:
        spec = zoo.model_spec(name)
        assert spec.image_size == 224, name
        assert spec.mean == pytest.approx((0.485, 0.456, 0.406))
        assert spec.num_classes == 1000
    assert zoo.model_spec("vit_h_14").image_size == 518  # from the weights, not a constant
    assert zoo.model_spec("shufflenet", image_size=64).image_size == 64


def test_random_weights_without_a_cache_and_offline_come_with_a_notice(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("GREENRAY_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("no connection may be tried offline")

    monkeypatch.setattr(socket, "create_connection", no_network)
    loaded = zoo.load_model("shufflenet_x0_5", "default", image_size=32)
    assert loaded.weights_source == "random"
    assert "random weights" in loaded.notice and "\n" not in loaded.notice
    assert not loaded.model.training
    assert zoo.load_model("shufflenet_x0_5", "none").notice is None


def test_pretrained_weights_come_from_torch_hub_cache(tmp_path, monkeypatch):
    from torchvision import models

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = models.get_model("shufflenet_v2_x0_5", weights=None)
    url = models.get_model_weights("shufflenet_v2_x0_5").DEFAULT.url
    cached = tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    cached.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cached)
    assert zoo.cached_checkpoint(url) == cached
    loaded = zoo.load_model("shufflenet_x0_5", "default")
    assert loaded.weights_source == "torchvision:IMAGENET1K_V1"
    assert loaded.notice is None
    assert torch.equal(loaded.model.fc.weight, reference.fc.weight)


def test_weights_from_a_state_dict_file(tmp_path):
    from torchvision import models

    reference = models.get_model("shufflenet_v2_x0_5", weights=None)
    path = tmp_path / "weights.pt"
    torch.save(reference.state_dict(), path)
    loaded = zoo.load_model("shufflenet_v2_x0_5", str(path))
    assert loaded.weights_source == f"file:{path}"
    assert torch.equal(loaded.model.fc.weight, reference.fc.weight)
    torch.save({"not": torch.zeros(1)}, path)
    with pytest.raises(UsageError, match="not a state dict of this model"):
        zoo.load_model("shufflenet_v2_x0_5", str(path))
    with pytest.raises(UsageError, match="is not a state dict of this model"):
        zoo.load_model("shufflenet_v2_x0_5", str(tmp_path / "missing.pt"))


def test_precision_runs_through_autocast_and_fp16_needs_a_gpu():
    model = zoo.load_model("shufflenet_x0_5", "none", image_size=32).model
    with torch.inference_mode(), zoo.autocast("bf16", "cpu"):
        assert model(torch.rand(2, 3, 32, 32)).dtype == torch.bfloat16
    with torch.inference_mode(), zoo.autocast("fp32", "cpu"):
        assert model(torch.rand(2, 3, 32, 32)).dtype == torch.float32
    with pytest.raises(UsageError, match="fp16 needs a GPU"):
        zoo.autocast("fp16", "cpu")
    with pytest.raises(UsageError, match="--precision must be one of"):
        zoo.check_precision("fp64", "cuda")
