"""`greenray serve`'s server on a real Ray Serve over real HTTP (urllib, not a Serve handle), on
the session's local Ray: a tiny model with random weights on the CPU, simulated energy, a queue
of 4, in each of the server's shapes. Answers, refusals, overload and recovery, /metrics against
what was sent, and the batches file against the answers."""

import io
import json
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
from helpers_http import TINY_SERVER, free_port, image_bytes, request, wait_until_up
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from greenray.config import ServeConfig

KEYS = {"class", "label", "batch_size", "queue_ms", "compute_ms", "energy_j", "energy_source"}


class Client:
    """Sends to the server and counts what it sent and what came back."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.codes: Counter = Counter()

    def predict(self, body: bytes, content_type: str = "image/jpeg"):
        status, answer, seconds = request(self.url + "/predict", body, content_type)
        self.codes[status] += 1
        return status, answer, seconds


# The server's two shapes: an ingress replica in front of the model replica, and the model
# replica answering HTTP itself (--ingress-replicas 0). Every test below runs against each.
SHAPES = {"ingress": 1, "model-answers-http": 0}


@pytest.fixture(scope="module", params=list(SHAPES.values()), ids=list(SHAPES))
def server(ray_local, tmp_path_factory, request):
    from ray import serve

    from greenray.serve.server import Server

    settings = TINY_SERVER | {
        "warmup_batches": 1,
        "policy": "fixed:4@20",
        "max_queue": 4,
        "port": free_port(),
        "ingress_replicas": request.param,
    }
    running = Server(ServeConfig.from_flat(settings), tmp_path_factory.mktemp("live"))
    running.start()
    wait_until_up(running.url)
    running.client = Client(running.url)
    yield running
    running.stop()
    serve.shutdown()


def test_an_image_gets_its_class_and_its_share_of_the_batch_energy(server):
    for fmt, kind in (("JPEG", "image/jpeg"), ("PNG", "image/png")):
        status, answer, _ = server.client.predict(image_bytes(fmt), kind)
        assert status == 200, answer
        assert set(answer) == KEYS
        assert isinstance(answer["class"], int) and 0 <= answer["class"] < 1000
        assert answer["label"] is None  # random weights: the index names nothing
        assert 1 <= answer["batch_size"] <= 4
        assert answer["queue_ms"] >= 0 and answer["compute_ms"] > 0
        assert answer["energy_source"] == "simulated"
        # the simulated device draws 60 W, and 190 W more per CPU second of the replica's work:
        # an image's share of its batch is that over the batch's seconds, over its size
        batch_j, seconds = answer["energy_j"] * answer["batch_size"], answer["compute_ms"] / 1000
        assert 60.0 * seconds * (1 - 1e-3) <= batch_j <= (60.0 + 190.0 * (os.cpu_count() or 1)) * seconds


def test_bad_bodies_get_a_4xx_with_one_line_and_the_next_request_is_served(server):
    cases = [
        (b"not an image at all", "image/jpeg", 400),
        (b"", "image/png", 400),
        (image_bytes(), "text/plain", 415),
        (b"\xff" * (20 * 1024 * 1024 + 1), "image/jpeg", 413),
    ]
    for body, kind, expected in cases:
        status, answer, _ = server.client.predict(body, kind)
        assert status == expected, answer
        assert set(answer) == {"error"} and "\n" not in answer["error"] and answer["error"]
    status, answer, _ = server.client.predict(image_bytes(seed=3))
    assert status == 200 and set(answer) == KEYS


def test_a_burst_above_capacity_gets_503s_at_once_and_the_server_recovers(server):
    bodies = [image_bytes(seed=i) for i in range(48)]
    with ThreadPoolExecutor(48) as pool:
        answers = list(pool.map(server.client.predict, bodies))
    statuses = Counter(status for status, _, _ in answers)
    assert set(statuses) <= {200, 503} and statuses[503] > 0 and statuses[200] >= 4
    for status, answer, seconds in answers:
        if status == 503:
            assert "retry" in answer["error"]
            assert seconds < 5.0  # refused on arrival, not after waiting in a backlog
    for seed in range(3):  # healthy again once the burst is over
        status, answer, _ = server.client.predict(image_bytes(seed=seed))
        assert status == 200, answer
    status, health, _ = request(server.url + "/healthz")
    assert status == 200 and health["status"] == "ok" and health["inflight"] == 0


def test_huge_images_in_flight_do_not_hold_back_a_small_one(server):
    """Three 49-megapixel PNGs of 47 KB each (under the pixel cap) take their turns decoding,
    off the ingress's event loop; a small JPEG sent while they are in flight is answered before
    the last of them. (Before, bodies under 256 KB decoded on the loop, one after another, and
    every other request waited for them.)"""
    buffer = io.BytesIO()
    Image.new("L", (7000, 7000), 90).save(buffer, "PNG")
    huge = buffer.getvalue()
    finished: list[str] = []

    def send(name: str, body: bytes, kind: str) -> int:
        status, answer, _ = server.client.predict(body, kind)
        finished.append(name)
        return status

    with ThreadPoolExecutor(3) as pool:
        sent = [pool.submit(send, f"huge-{i}", huge, "image/png") for i in range(3)]
        time.sleep(0.3)  # only so that the huge ones are in before it: no assertion on time
        assert send("small", image_bytes(seed=5), "image/jpeg") == 200
        assert [future.result() for future in sent] == [200, 200, 200]
    assert finished.index("small") < len(finished) - 1, finished


def samples(text: str) -> dict[str, list]:
    found: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def total(found: dict, name: str, **labels) -> float:
    return sum(s.value for s in found.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_parse_and_count_what_was_sent(server):
    status, text, _ = request(server.url + "/metrics")
    assert status == 200
    found = samples(text)
    sent = sum(server.client.codes.values())
    assert sent > 0 and total(found, "greenray_requests_total") == sent
    for code, count in server.client.codes.items():
        assert total(found, "greenray_requests_total", code=str(code)) == count
    assert total(found, "greenray_rejected_requests_total") == server.client.codes[503]
    assert total(found, "greenray_request_errors_total", reason="content_type") == server.client.codes[415]
    assert total(found, "greenray_request_duration_seconds_count") == server.client.codes[200]
    served = server.client.codes[200]
    assert total(found, "greenray_images_total") == served == total(found, "greenray_batch_size_sum")
    assert total(found, "greenray_batch_size_count") == total(found, "greenray_batches_total") > 0
    energy = found["greenray_energy_joules_total"]
    assert len(energy) == 1 and energy[0].value > 0
    assert energy[0].labels["energy_source"] == "simulated" and energy[0].labels["device"] == "sim:0"
    power = found["greenray_power_watts"][0]
    assert 60.0 <= power.value <= 60.0 + 190.0 * (os.cpu_count() or 1) and power.labels["replica"] == "0"
    assert total(found, "greenray_replica_up") == 1


def test_every_batch_is_in_the_batches_file_with_its_energy(server):
    server.flush()
    batches = pd.read_parquet(server.out / "batches.parquet")
    assert batches["size"].sum() == server.client.codes[200]
    assert (batches["size"] <= 4).all() and (batches["policy"] == "fixed:4@20").all()
    # idle power over each batch window, and the model's power of the replica's CPU work above it
    # (counter and clock are read microseconds apart)
    above_idle = batches["energy_j"].to_numpy() - 60.0 * batches["compute_s"].to_numpy()
    cores = os.cpu_count() or 1
    assert (above_idle >= -1e-3 * batches["energy_j"]).all() and (above_idle > 0).any()
    assert (above_idle <= 190.0 * cores * batches["compute_s"]).all()
    assert batches["batch_id"].is_unique and (batches["energy_source"] == "simulated").all()
    about = json.loads((server.out / "serve.json").read_text())
    assert about["policy"] == "fixed:4@20" and about["config"]["max_queue"] == 4
    # the session's Ray was started without Serve's fast path: everything went through the proxy
    assert about["fast_path"] is False and about["url"] == about["proxy_url"] == server.url


@pytest.mark.parametrize(
    "replicas", [{"ingress_replicas": 2}, {"ingress_replicas": 0, "replicas": 2}], ids=["ingress", "model"]
)
def test_on_the_fast_path_every_http_replica_port_must_be_free(tmp_path, replicas):
    """Two ingress replicas, or two model replicas answering HTTP themselves: two ports."""
    import socket

    from greenray.errors import UsageError
    from greenray.serve.server import Server

    port = free_port()
    settings = TINY_SERVER | {"port": port} | replicas
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port + 1))  # the second replica's port
        with pytest.raises(UsageError, match=f"cannot serve on 127.0.0.1:{port + 1} "):
            Server(ServeConfig.from_flat(settings), tmp_path).start()
        # without the fast path only --port itself is taken
        plain = Server(ServeConfig.from_flat(settings | {"fast_path": False}), tmp_path)
        assert plain.proxy_url == f"http://127.0.0.1:{port}" and plain.url == plain.proxy_url
