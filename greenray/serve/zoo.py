"""The serving models: the study's five torchvision classifiers under short names, any other
torchvision classification model by name, with pretrained weights when they can be had offline."""

from __future__ import annotations

import difflib
import os
import socket
import threading
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from greenray.config import PRECISIONS
from greenray.errors import UsageError

# The study's models, in its order; convnext is the base model, as the study's code loaded.
STUDY_MODELS = ("alexnet", "densenet121", "shufflenet_v2_x1_0", "vit_b_16", "convnext_base")
ALIASES = {
    "convnext": "convnext_base",
    "vit": "vit_b_16",
    "densenet": "densenet121",
    "shufflenet": "shufflenet_v2_x1_0",
    # The study's text says ShuffleNetV2; its code loaded the x0.5 variant.
    "shufflenet_x0_5": "shufflenet_v2_x0_5",
}
# How long a check for the weights' server may take before greenray calls the machine offline.
NETWORK_PROBE_S = 3.0


@dataclass(frozen=True)
class ModelSpec:
    """What a client must know to feed a model: its input size and normalisation."""

    name: str  # torchvision's name
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_classes: int
    weights_name: str  # the torchvision weights the defaults come from, e.g. "IMAGENET1K_V1"


@dataclass(frozen=True)
class LoadedModel:
    model: object  # torch.nn.Module, in eval mode, on the CPU
    spec: ModelSpec
    weights_source: str  # "torchvision:IMAGENET1K_V1", "random", "file:PATH"
    notice: str | None  # one line for the user when the weights asked for could not be had


def classification_models() -> list[str]:
    """Every torchvision image-classification model name."""
    from torchvision import models

    return models.list_models(module=models)


def resolve(name: str) -> str:
    """torchvision's name for a model name or alias, or a UsageError that suggests one."""
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    known = classification_models()
    if key in known:
        return key
    close = difflib.get_close_matches(key, [*ALIASES, *known], n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "see torchvision.models.list_models()"
    raise UsageError(
        f"unknown model {name!r}: use {', '.join(sorted(ALIASES))} "
        f"or a torchvision classification model ({hint})"
    )


def model_spec(name: str, image_size: int | None = None) -> ModelSpec:
    """The input a model expects, from its default weights' transforms (224 for the study's five)."""
    from torchvision import models

    name = resolve(name)
    weights = models.get_model_weights(name).DEFAULT
    transforms = weights.transforms()
    size = image_size if image_size is not None else int(transforms.crop_size[0])
    if size < 1:
        raise UsageError(f"--image-size must be a positive number of pixels, not {size}")
    return ModelSpec(
        name=name,
        image_size=size,
        mean=tuple(transforms.mean),
        std=tuple(transforms.std),
        num_classes=len(weights.meta["categories"]),
        weights_name=weights.name,
    )


def load_model(name: str, weights: str = "default", image_size: int | None = None) -> LoadedModel:
    """The model in eval mode on the CPU. `weights`: "default" loads torchvision's pretrained
    weights from torch.hub's cache or, when the server answers quickly, a download; otherwise
    random weights with a notice. "none": random. A path: a state dict saved with torch.save."""
    from torchvision import models

    spec = model_spec(name, image_size)
    enum = models.get_model_weights(spec.name).DEFAULT
    kwargs = _size_kwargs(spec, enum)
    notice = None
    if weights == "default" and (cached_checkpoint(enum.url) is not None or _reachable(enum.url)):
        if kwargs:
            raise UsageError(
                f"{spec.name}'s pretrained weights need {enum.transforms().crop_size[0]}px images; "
                "drop --image-size or use --weights none"
            )
        model, source = models.get_model(spec.name, weights=enum), f"torchvision:{enum.name}"
    else:
        model, source = models.get_model(spec.name, weights=None, **kwargs), "random"
        if weights == "default":
            notice = (
                f"{spec.name}: pretrained weights are not in torch.hub's cache and the download server "
                "does not answer; using random weights (time and energy are the same, labels are not)"
            )
        elif weights != "none":
            _load_state_dict(model, Path(weights))
            source = f"file:{weights}"
    return LoadedModel(model.eval(), spec, source, notice)


def cached_checkpoint(url: str) -> Path | None:
    """Where torch.hub keeps the file at `url`, if it is there."""
    import torch

    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    return path if path.is_file() else None


def autocast(precision: str, device_type: str) -> AbstractContextManager:
    """The autocast context for a precision: fp32 runs as is, bf16/fp16 through torch.autocast."""
    import torch

    check_precision(precision, device_type)
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device_type, dtype=dtype)


def check_precision(precision: str, device_type: str) -> None:
    if precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "fp16" and device_type != "cuda":
        raise UsageError("--precision fp16 needs a GPU; use bf16 or fp32 on the CPU")


def _size_kwargs(spec: ModelSpec, enum) -> dict:
    """Vision transformers fix their input size at construction; other models adapt."""
    default = int(enum.transforms().crop_size[0])
    if spec.image_size == default:
        return {}
    if spec.name.startswith("vit_"):
        return {"image_size": spec.image_size}
    return {}


def _load_state_dict(model, path: Path) -> None:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        model.load_state_dict(state)
    except Exception as exc:  # torch raises many types for a file that is not this model's state dict
        raise UsageError(
            f"--weights {path} is not a state dict of this model ({exc.__class__.__name__}); "
            "save one with torch.save(model.state_dict(), PATH)"
        ) from None


def _reachable(url: str, timeout_s: float = NETWORK_PROBE_S) -> bool:
    """Whether the weights' server accepts a connection within `timeout_s`; the resolver
    gets the same bound (a thread), since a socket timeout does not cover name lookup."""
    host = urlparse(url).hostname
    if not host or os.environ.get("GREENRAY_OFFLINE"):
        return False
    answer: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout_s).close()
            answer.append(True)
        except OSError:
            answer.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(answer and answer[0])


def categories(name: str) -> list[str]:
    """The class names of a model's default torchvision weights, in class-index order."""
    from torchvision import models

    return list(models.get_model_weights(resolve(name)).DEFAULT.meta["categories"])
