"""The driver's one event loop. Every Serve handle call the driver makes (control calls, a run's
requests, a server's journal takes) is made on it, never from sync code: Serve's
throughput-optimised mode runs a handle's router on the caller's own loop, and a router stays
bound to the loop it first ran on. The loop runs on a daemon thread, started on first use and
the same for the process's life, so sync callers (the commands, a search between runs) reach
it through `on_loop`, and async ones await the same coroutines directly."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def on_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the driver's loop and wait for its result (or its exception). Interrupted
    (Ctrl-C), it cancels the coroutine before it lets the interrupt through."""
    loop = driver_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        raise RuntimeError("on_loop was called on the driver's loop itself: await the coroutine instead")
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result()
    except BaseException:
        future.cancel()
        raise


def driver_loop() -> asyncio.AbstractEventLoop:
    """The loop, started on first use."""
    global _loop
    with _lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="greenray-driver-loop", daemon=True).start()
            _loop = loop
    return _loop
