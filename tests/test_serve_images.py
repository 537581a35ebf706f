"""What an HTTP client's body becomes before a model replica sees it: JPEG and PNG decoded,
resized and cropped to the model's input; everything else refused with its HTTP status and one
sentence (greenray.serve.images). No Ray here."""

import io

import numpy as np
import pytest
from PIL import Image

from greenray.serve import images


def encoded(fmt: str, size=(48, 30), color=(200, 10, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_an_image_becomes_a_chw_uint8_array_of_the_model_size(fmt):
    pixels = images.decode(encoded(fmt), 32)
    assert pixels.shape == (3, 32, 32) and pixels.dtype == np.uint8
    assert pixels.flags.c_contiguous
    red, green, blue = (pixels[c].mean() for c in range(3))
    assert red > 150 and green < 60 and blue < 60  # the colour survives: channels in RGB order


def test_the_shorter_side_is_resized_and_the_middle_kept():
    image = Image.new("RGB", (90, 30), (0, 0, 0))
    image.paste((255, 255, 255), (30, 0, 60, 30))  # a white middle third
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    pixels = images.decode(buffer.getvalue(), 30)
    assert pixels.shape == (3, 30, 30) and pixels.min() > 200  # only the middle is left


@pytest.mark.parametrize(
    ("content_type", "ok"),
    [("image/jpeg", True), ("image/png; charset=binary", True), ("text/plain", False), (None, False)],
)
def test_only_jpeg_and_png_content_types_are_served(content_type, ok):
    if ok:
        assert images.check_content_type(content_type) in ("JPEG", "PNG")
        return
    with pytest.raises(images.ImageError, match="send image/jpeg or image/png") as info:
        images.check_content_type(content_type)
    assert info.value.status == 415


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"", 400, "the body is empty"),
        (b"hello, not an image", 400, "not a JPEG or PNG image"),
        (encoded("GIF"), 400, "not a JPEG or PNG image"),
        (encoded("JPEG")[:200], 400, "cannot be decoded"),
    ],
)
def test_a_body_that_is_not_a_whole_jpeg_or_png_is_a_400(body, status, message):
    with pytest.raises(images.ImageError, match=message) as info:
        images.decode(body, 32)
    assert info.value.status == status and "\n" not in str(info.value)


def test_too_many_bytes_or_pixels_are_a_413(monkeypatch):
    with pytest.raises(images.ImageError, match="more than the") as info:
        images.check_length(str(images.MAX_BODY_BYTES + 1))
    assert info.value.status == 413
    images.check_length(str(images.MAX_BODY_BYTES))  # the limit itself is allowed
    images.check_length(None)  # chunked: counted while read
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)  # a small file can unpack to many pixels
    with pytest.raises(images.ImageError, match="48 x 30 pixels") as info:
        images.decode(encoded("PNG"), 32)
    assert info.value.status == 413
