"""serve-bench's handle path: how the driver sends each request to a model replica.

A request is its own handle call to the replica's `infer` (the study's path: one call per
image) while fewer than two batches' worth of requests are unanswered at that replica (one
batch running, the next one full). Past that, the replica is behind, and a call per image
would cost it more CPU than the batches it is behind on (Serve's per-call cost on the
replica's one thread was 1.7-1.9 ms an image at saturation on a 2-core machine, the forward
0.7-1.0 ms). So the backlog goes in groups through a `Feeder`, as an ingress replica sends it
(one group in transit, the next one forming), and each image still joins the replica's batch
queue on its own. At low rates nothing changes: a request arrives to a replica that is not
behind.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from greenray.serve.ingress import Feeder


class HandleSender:
    """`send(request_id)` for serve-bench's handle path, request i going to model replica i mod
    N; `cap()` is the batch cap in force (the backlog from which requests go in groups is twice
    that)."""

    def __init__(self, handles: list, images: list, cap: Callable[[], int]) -> None:
        self._handles = handles
        self._images = images
        self._cap = cap
        tag = uuid.uuid4().hex[:8]
        self._feeders = [Feeder(handle, f"driver-{tag}-{i}") for i, handle in enumerate(handles)]
        self._single = [0] * len(handles)  # requests sent on their own and not yet answered

    def __call__(self, request_id: int) -> Awaitable:
        replica = request_id % len(self._handles)
        image = self._images[request_id % len(self._images)]
        feeder = self._feeders[replica]
        if self._single[replica] + feeder.outstanding >= 2 * self._cap():
            return feeder.put(image, request_id=request_id)
        self._single[replica] += 1
        return self._answer(replica, self._handles[replica].infer.remote(image, request_id=request_id))

    async def _answer(self, replica: int, response) -> int:
        try:
            return await response
        finally:
            self._single[replica] -= 1
