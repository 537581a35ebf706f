"""What an HTTP client sends, turned into what a model replica takes: the bytes of a JPEG or PNG
image, checked (content type, size, format, pixel count), decoded, resized on its shorter side
and centre-cropped to the model's input size, as uint8 CHW. Runs on the ingress replicas, never
on a model's thread; every refusal is an `ImageError` with the HTTP status and one sentence.

Decoding costs what the image's pixels cost, not what its bytes do (a 47 KB PNG can hold 49
megapixels), so an ingress replica does it in two steps, both on threads and off its event loop:
`open_image` reads the header (the size, checked against MAX_PIXELS; a JPEG is set to decode at
the smallest scale that still covers the model's input), then `finish` decodes once a
`PixelBudget` has room for the image's decoded pixels."""

from __future__ import annotations

import asyncio
import io
import warnings
from collections import deque
from contextlib import asynccontextmanager, contextmanager
from functools import cache

import numpy as np

CONTENT_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG"}
MAX_BODY_BYTES = 20 * 1024 * 1024  # a request body larger than this is refused (413)
DRAIN_BYTES = 2 * MAX_BODY_BYTES  # an oversized body is read (and dropped) up to this before the 413
MAX_PIXELS = 50_000_000  # a decoded image larger than this is refused (413): a small file can unpack huge
# Pixels an ingress replica decodes at once: one image at the cap, and room beside it for the
# usual photo-sized ones, so a queue of huge images does not hold back the small ones.
DECODE_PIXELS = MAX_PIXELS + 16_000_000
# An image of at most this many decoded pixels is decoded on the thread that read its header,
# outside the budget: a second thread hop costs more than a photo's decode at a JPEG's reduced
# scale, and the budget is there for the huge ones.
SMALL_PIXELS = 1_000_000


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
    return finish(open_image(body, size), size)


def open_image(body: bytes, size: int):
    """The image in `body`, its header read and checked, nothing decoded yet (a PIL Image);
    a JPEG is set to decode at the smallest scale that still covers `size`."""
    Image = _pil()
    if not body:
        raise ImageError(400, "the body is empty: send the bytes of a JPEG or PNG image")
    with _refusing_what_pil_cannot_read():
        image = Image.open(io.BytesIO(body), formats=list(CONTENT_TYPES.values()))
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise ImageError(413, f"the image has {width} x {height} pixels, more than {MAX_PIXELS} allowed")
        image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale, far cheaper
    return image


def decode_small(body: bytes, size: int):
    """`open_image`, and for an image of at most SMALL_PIXELS decoded pixels `finish` too: the
    opened image and its array, or None where the decode is left to the caller's budget."""
    image = open_image(body, size)
    return image, (finish(image, size) if decoded_pixels(image) <= SMALL_PIXELS else None)


def decoded_pixels(image) -> int:
    """The pixels `finish` decodes for an image from `open_image` (a JPEG's reduced scale)."""
    return image.width * image.height


def finish(image, size: int) -> np.ndarray:
    """Decode an image from `open_image`, resize its shorter side to `size`, crop the middle."""
    Image = _pil()
    with _refusing_what_pil_cannot_read():
        image = image.convert("RGB")
        width, height = image.size
        scale = size / min(width, height)
        resized = (max(size, round(width * scale)), max(size, round(height * scale)))
        image = image.resize(resized, Image.Resampling.BILINEAR, reducing_gap=3.0)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    pixels = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


@cache
def _pil():
    """PIL's Image, imported once, its bomb warning off (our own, lower, limit is MAX_PIXELS).
    Set once for the process: warnings.catch_warnings is not safe across threads."""
    from PIL import Image

    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    return Image


@contextmanager
def _refusing_what_pil_cannot_read():
    from PIL import Image, UnidentifiedImageError

    try:
        yield
    except UnidentifiedImageError:
        raise ImageError(400, "the body is not a JPEG or PNG image") from None
    except Image.DecompressionBombError:
        raise ImageError(413, f"the image has far more than {MAX_PIXELS} pixels") from None
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(400, f"the image cannot be decoded ({_first_line(exc)})") from None


class PixelBudget:
    """At most `capacity` pixels decoding at once on one event loop: a weighted semaphore.
    An image takes its pixels (at most `capacity`) while it decodes. One that does not fit
    waits, and waiting images are let in, oldest first, as pixels come back; an image that fits
    at once goes in at once, so small ones pass a queue of large ones."""

    def __init__(self, capacity: int = DECODE_PIXELS) -> None:
        self.capacity = capacity
        self.free = capacity
        self._waiting: deque[tuple[int, asyncio.Future]] = deque()

    @asynccontextmanager
    async def hold(self, pixels: int):
        weight = max(1, min(pixels, self.capacity))
        await self._acquire(weight)
        try:
            yield
        finally:
            self.free += weight
            self._wake()

    async def _acquire(self, weight: int) -> None:
        if weight <= self.free:
            self.free -= weight
            return
        entry = (weight, asyncio.get_running_loop().create_future())
        self._waiting.append(entry)
        try:
            await entry[1]
        except asyncio.CancelledError:
            if entry[1].done() and not entry[1].cancelled():  # let in just as it was cancelled
                self.free += weight
                self._wake()
            elif entry in self._waiting:
                self._waiting.remove(entry)
            raise

    def _wake(self) -> None:
        for entry in list(self._waiting):
            weight, future = entry
            if future.done():
                self._waiting.remove(entry)
            elif weight <= self.free:
                self.free -= weight
                self._waiting.remove(entry)
                future.set_result(None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:120] if text else type(exc).__name__
