"""What an HTTP client sends, turned into what a model replica takes: the bytes of a JPEG or PNG
image, checked (content type, size, format, pixel count), decoded, resized on its shorter side
and centre-cropped to the model's input size, as uint8 CHW. Runs on the ingress replicas, never
on a model's thread; every refusal is an `ImageError` with the HTTP status and one sentence."""

from __future__ import annotations

import io
import warnings

import numpy as np

CONTENT_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG"}
MAX_BODY_BYTES = 20 * 1024 * 1024  # a request body larger than this is refused (413)
MAX_PIXELS = 50_000_000  # a decoded image larger than this is refused (413): a small file can unpack huge


class ImageError(ValueError):
    """A request whose image cannot be served: `status` is the HTTP code, the message one sentence."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_content_type(content_type: str | None) -> str:
    """The image format a Content-Type header names (JPEG or PNG), or a 415."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind not in CONTENT_TYPES:
        shown = kind or "none"
        raise ImageError(415, f"Content-Type {shown} is not served: send image/jpeg or image/png")
    return CONTENT_TYPES[kind]


def check_length(length: str | None, limit: int = MAX_BODY_BYTES) -> None:
    """A 413 for a Content-Length over `limit` bytes (before any of the body is read)."""
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_large(int(length))


def too_large(size: int) -> ImageError:
    return ImageError(413, f"the body has {size} bytes, more than the {MAX_BODY_BYTES} allowed")


def decode(body: bytes, size: int) -> np.ndarray:
    """The image in `body` (JPEG or PNG) as a 3 x size x size uint8 array: its shorter side
    resized to `size`, the middle cropped; a 400 or 413 for what cannot be."""
    from PIL import Image, UnidentifiedImageError

    if not body:
        raise ImageError(400, "the body is empty: send the bytes of a JPEG or PNG image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is below
            image = Image.open(io.BytesIO(body), formats=list(CONTENT_TYPES.values()))
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageError(
                    413, f"the image has {width} x {height} pixels, more than {MAX_PIXELS} allowed"
                )
            image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale, far cheaper
            image = image.convert("RGB")
            width, height = image.size
            scale = size / min(width, height)
            resized = (max(size, round(width * scale)), max(size, round(height * scale)))
            image = image.resize(resized, Image.Resampling.BILINEAR, reducing_gap=3.0)
    except UnidentifiedImageError:
        raise ImageError(400, "the body is not a JPEG or PNG image") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, ImageError):
            raise
        raise ImageError(400, f"the image cannot be decoded ({_first_line(exc)})") from None
    left, top = (image.width - size) // 2, (image.height - size) // 2
    pixels = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:120] if text else type(exc).__name__
