"""serve-bench's handle path: a call per request while a replica keeps up, the backlog in groups
once it is behind (greenray.serve.sender), with handles that record their calls (no Ray)."""

import asyncio

import numpy as np

from greenray.serve.records import Answer
from greenray.serve.sender import HandleSender


class _Method:
    def __init__(self, calls: list, name: str) -> None:
        self.calls, self.name = calls, name

    def remote(self, *args, **kwargs) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self.calls.append((self.name, args, kwargs, future))
        return future


class RecordingHandle:
    """A model replica's handle whose answers the test gives, in the order it chooses."""

    def __init__(self) -> None:
        self.calls: list = []
        self.infer = _Method(self.calls, "infer")
        self.submit = _Method(self.calls, "submit")
        self.collect = _Method(self.calls, "collect")

    def named(self, name: str) -> list:
        return [call for call in self.calls if call[0] == name]


async def _turns(n: int = 5) -> None:
    """Let the loop run what the last step started (a send, a group's reply)."""
    for _ in range(n):
        await asyncio.sleep(0)


def _answer(ticket: int) -> tuple:
    return (ticket, Answer(7, 0, 1, 0.0, 0.0, None, "none"), None)


def test_requests_go_one_call_each_until_two_batches_are_unanswered_then_in_groups():
    async def scenario():
        handle = RecordingHandle()
        images = [np.zeros((3, 8, 8), np.uint8)]
        send = HandleSender([handle], images, cap=lambda: 2)
        singles = [asyncio.ensure_future(send(i)) for i in range(4)]
        grouped = [send(i) for i in range(4, 6)]
        await _turns()
        assert [call[2]["request_id"] for call in handle.named("infer")] == [0, 1, 2, 3]
        # one group in transit, the requests behind it forming the next one
        ((_, first, _, in_transit),) = handle.named("submit")
        assert first[3] == [4, 5] and first[1].shape == (2, 3, 8, 8)
        grouped += [send(i) for i in range(6, 9)]
        await _turns()
        assert len(handle.named("submit")) == 1
        in_transit.set_result([_answer(t) for t in first[2]])
        await _turns()
        ((_, second, _, next_group),) = handle.named("submit")[1:]
        assert second[3] == [6, 7, 8]
        next_group.set_result([_answer(t) for t in second[2]])
        assert [(await answer).label for answer in grouped] == [7] * 5
        # the replica catches up: its single calls are answered, and requests go one call each again
        for _, _, _, future in handle.named("infer"):
            future.set_result(3)
        assert await asyncio.gather(*singles) == [3, 3, 3, 3]
        last = asyncio.ensure_future(send(9))
        await _turns()
        assert handle.named("infer")[-1][2]["request_id"] == 9
        handle.named("infer")[-1][3].set_result(5)
        assert await last == 5

    asyncio.run(scenario())


def test_a_replica_is_chosen_by_request_number_and_counts_its_own_backlog():
    async def scenario():
        handles = [RecordingHandle(), RecordingHandle()]
        send = HandleSender(handles, [np.zeros((3, 8, 8), np.uint8)], cap=lambda: 1)
        answers = [send(i) for i in range(6)]
        await _turns()
        assert [c[2]["request_id"] for c in handles[0].named("infer")] == [0, 2]
        assert [c[2]["request_id"] for c in handles[1].named("infer")] == [1, 3]
        assert [c[1][3] for c in handles[0].named("submit")] == [[4]]
        assert [c[1][3] for c in handles[1].named("submit")] == [[5]]
        for handle in handles:
            for name, args, _, future in handle.calls:
                future.set_result(1 if name == "infer" else [_answer(t) for t in args[2]])
        assert len(await asyncio.gather(*answers)) == 6

    asyncio.run(scenario())
