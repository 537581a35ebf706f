"""The driver's one event loop (greenray.serve.loop), without Ray: every coroutine a sync caller
hands it runs on the same running loop (a Serve handle's router stays bound to the loop it first
ran on), its exceptions come back to the caller, and it cannot be re-entered from that loop."""

import asyncio

import pytest

from greenray.serve.loop import on_loop


async def running_loop() -> asyncio.AbstractEventLoop:
    await asyncio.sleep(0)
    return asyncio.get_running_loop()


def test_every_call_runs_on_the_same_loop_in_another_thread():
    first, second = on_loop(running_loop()), on_loop(running_loop())
    assert first is second and first.is_running()
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()  # the caller has none of its own


def test_an_exception_comes_back_to_the_caller():
    async def fails():
        raise ValueError("the replica said no")

    with pytest.raises(ValueError, match="said no"):
        on_loop(fails())


def test_the_loop_cannot_wait_on_itself():
    async def nested():
        return on_loop(running_loop())

    with pytest.raises(RuntimeError, match="await the coroutine instead"):
        on_loop(nested())
