"""The model replica that answers HTTP itself (`--ingress-replicas 0`), past its queue: while a
batch's forward pass runs, the replica's event loop still reads, counts and refuses requests
(a fast 503 beyond its share of --max-queue), and serves again once the batch ends. The replica
is the real ModelIngress class with a real model, driven in this process on one event loop
(as Serve's throughput-optimised mode runs it: requests, batches and the handler on one loop);
its forward pass is held at a gate so that "while a batch runs" needs no timing."""

import asyncio
import inspect
import threading
from types import SimpleNamespace

from helpers_http import TINY_SERVER, image_bytes
from ray import serve
from starlette.requests import Request

from greenray.config import BatchPolicy, ServeConfig
from greenray.serve.front import HEADROOM, HttpFront
from greenray.serve.model_ingress import ModelIngress

LIMIT = 2
HELD_S = 30.0  # a forward that holds the loop thread itself is let go after this (no deadlock)


def post(replica, body: bytes):
    """POST /predict with `body` through the replica's own handler."""
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/predict",
        "headers": [(b"content-type", b"image/jpeg"), (b"content-length", str(len(body)).encode())],
    }
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return HttpFront.predict(replica, Request(scope, receive))


def gated(replica):
    """Hold the replica's forward passes until the returned Event is set; `entered` says one runs."""
    gate, entered, forward = threading.Event(), threading.Event(), replica._forward

    def held_forward(batch):
        entered.set()
        gate.wait(HELD_S)
        return forward(batch)

    replica._forward = held_forward
    return gate, entered


def test_past_its_queue_the_model_replica_refuses_at_once_while_a_batch_runs(monkeypatch):
    # Serve's batcher reads its replica's max_ongoing_requests (for a warning) from the replica
    # context, which only a Serve replica has: this one is in the test's process.
    context = SimpleNamespace(_deployment_config=SimpleNamespace(max_ongoing_requests=LIMIT + HEADROOM))
    monkeypatch.setattr(serve, "get_replica_context", lambda: context)
    config = ServeConfig.from_flat(TINY_SERVER)
    # the class as written, under Serve's ASGI wrapper (whose __init__ runs on a replica only)
    written = next(
        c
        for c in ModelIngress.func_or_class.__mro__
        if c.__module__ == "greenray.serve.model_ingress" and not inspect.iscoroutinefunction(c.__init__)
    )
    replica = written(
        config.model, config.deploy.serving, config.deploy.energy, 0, BatchPolicy("greedy", 4), None, LIMIT
    )
    assert replica.setup_error is None
    replica._open = True  # the driver's warm-up is over

    async def scenario():
        gate, entered = gated(replica)
        admitted = [asyncio.ensure_future(post(replica, image_bytes(seed=i))) for i in range(LIMIT)]
        while not entered.is_set() and not all(task.done() for task in admitted):
            await asyncio.sleep(0.01)  # until the first batch's forward pass has started
        assert entered.is_set(), [task.result().body for task in admitted]
        refused = await asyncio.gather(*(post(replica, image_bytes(seed=9)) for _ in range(4)))
        still_held = not gate.is_set() and not any(task.done() for task in admitted)
        gate.set()
        answered = await asyncio.gather(*admitted)
        after = await post(replica, image_bytes(seed=5))
        return refused, still_held, answered, after

    refused, still_held, answered, after = asyncio.run(scenario())
    assert [r.status_code for r in refused] == [503] * 4
    assert all(b"retry" in r.body for r in refused)
    # refused while the batch was still computing, not after it let the loop go
    assert still_held
    assert [r.status_code for r in answered] == [200] * LIMIT
    assert after.status_code == 200 and replica.http_stats.inflight == 0
