"""What an HTTP client's body becomes before a model replica sees it: JPEG and PNG decoded,
resized and cropped to the model's input; everything else refused with its HTTP status and one
sentence (greenray.serve.images). No Ray here."""

import asyncio
import io
import threading
from types import SimpleNamespace

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


def huge_png(side: int = 7000) -> bytes:
    """A few tens of KB that unpack to side x side pixels (the probe's 47 KB, 49 MP PNG)."""
    buffer = io.BytesIO()
    Image.new("L", (side, side), 90).save(buffer, "PNG")
    return buffer.getvalue()


def test_the_header_gives_the_pixels_to_decode_before_any_decoding():
    body = huge_png()
    assert len(body) < 256 * 1024  # small in bytes: a body-size rule would decode it inline
    image = images.open_image(body, 32)
    assert images.decoded_pixels(image) == 7000 * 7000
    assert image.tile  # nothing decoded yet: the decoder's work is still ahead
    jpeg = images.open_image(encoded("JPEG", size=(1600, 1200)), 32)
    assert images.decoded_pixels(jpeg) == 200 * 150  # a JPEG decodes at 1/8 scale for a small input
    assert images.finish(jpeg, 32).shape == (3, 32, 32)


def test_an_image_over_the_pixel_cap_is_refused_from_its_header_alone():
    with pytest.raises(images.ImageError, match="10000 x 10000 pixels") as info:
        images.open_image(huge_png(10000), 32)
    assert info.value.status == 413


def test_small_images_pass_a_queue_of_huge_ones_and_huge_ones_take_turns():
    async def scenario() -> list[str]:
        budget = images.PixelBudget(capacity=60)
        done: list[str] = []
        release = asyncio.Event()

        async def decode(name: str, pixels: int, wait: bool) -> None:
            async with budget.hold(pixels):
                if wait:
                    await release.wait()
                done.append(name)

        first = asyncio.ensure_future(decode("huge-1", 50, wait=True))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(decode("huge-2", 50, wait=False))
        await asyncio.sleep(0)
        assert budget.free == 10 and not second.done()  # the second huge one waits for the first
        await decode("small", 4, wait=False)  # fits beside the first: not queued behind the second
        assert done == ["small"] and not second.done()
        release.set()
        await asyncio.gather(first, second)
        assert budget.free == 60
        return done

    assert asyncio.run(scenario()) == ["small", "huge-1", "huge-2"]


def test_a_request_waiting_for_pixels_that_is_cancelled_gives_nothing_back_twice():
    async def scenario() -> int:
        budget = images.PixelBudget(capacity=10)
        async with budget.hold(8):
            waiting = asyncio.ensure_future(budget.hold(8).__aenter__())
            await asyncio.sleep(0)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
        return budget.free

    assert asyncio.run(scenario()) == 10


def test_the_ingress_decodes_off_its_event_loop(monkeypatch):
    """Every decode, small or huge, runs on a thread other than the loop's: a huge image cannot
    stall the requests that the loop is answering meanwhile."""
    from greenray.serve.app import Ingress

    threads: dict[str, int] = {}
    for name in ("open_image", "finish"):
        real = getattr(images, name)

        def recorded(*args, _real=real, _name=name):
            threads[_name] = threading.get_ident()
            return _real(*args)

        monkeypatch.setattr(images, name, recorded)
    replica = SimpleNamespace(_pixel_budget=None, _image_size=32)

    async def decode(body: bytes):
        return threading.get_ident(), await Ingress.func_or_class._decode(replica, body)

    for body in (encoded("JPEG"), huge_png()):
        threads.clear()
        loop_thread, pixels = asyncio.run(decode(body))
        assert pixels.shape == (3, 32, 32)
        assert set(threads) == {"open_image", "finish"} and loop_thread not in threads.values()


def test_a_small_image_decodes_in_one_hop_and_a_large_one_under_the_budget(monkeypatch):
    from greenray.serve.app import Ingress

    held = []

    class Budget(images.PixelBudget):
        def hold(self, pixels: int):
            held.append(pixels)
            return super().hold(pixels)

    monkeypatch.setattr(images, "PixelBudget", Budget)
    replica = SimpleNamespace(_pixel_budget=None, _image_size=32)
    small = asyncio.run(Ingress.func_or_class._decode(replica, encoded("JPEG", size=(640, 480))))
    assert small.shape == (3, 32, 32) and held == []
    large = asyncio.run(Ingress.func_or_class._decode(replica, encoded("PNG", size=(1200, 1000))))
    assert large.shape == (3, 32, 32) and held == [1200 * 1000]
