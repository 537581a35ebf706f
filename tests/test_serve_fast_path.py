"""`greenray serve` on Serve's fast path, as a user runs it: a process of its own whose local Ray
starts with Serve's throughput-optimised mode, so the ingress replica answers HTTP on --port
itself (Serve's proxy moves to another port). Real HTTP requests (urllib) to the address the
command prints: answers, /healthz and /metrics, then Ctrl-C with every batch kept. Each case
starts a Ray of its own: CI runs the default shape (one model replica that answers HTTP itself)
and leaves the others to `pytest -m slow`."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
from helpers_http import free_port, image_bytes, request
from prometheus_client.parser import text_string_to_metric_families

SENT = 6
SERVING = re.compile(r"serving \S+ with \S+ on (http://\S+):")
PROXY = re.compile(r"Serve's proxy also answers on (http://\S+),")


class Lines:
    """The server's stderr, read on a thread as it comes."""

    def __init__(self, stream) -> None:
        self.text = ""
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.text += line

    def close(self) -> None:
        self._thread.join(timeout=10)

    def find(self, pattern: re.Pattern, server: subprocess.Popen, timeout_s: float = 300.0) -> str:
        deadline = time.monotonic() + timeout_s
        while (found := pattern.search(self.text)) is None:
            assert server.poll() is None, self.text
            assert time.monotonic() < deadline, f"no {pattern.pattern!r} in: {self.text}"
            time.sleep(0.5)
        return found.group(1)


def _answered(metrics: str, code: str) -> float:
    """Requests answered with `code`, over every replica that answers HTTP."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "greenray_requests_total" and sample.labels.get("code") == code
    )


# The default shape (the model replica answers HTTP itself), an ingress replica in front of the
# model replica, and two model replicas that answer HTTP, on --port and the port after it.
SHAPES = [
    pytest.param([], id="model-answers-http"),
    pytest.param(["--ingress-replicas", "1"], id="ingress", marks=pytest.mark.slow),
    pytest.param(
        ["--ingress-replicas", "0", "--replicas", "2", "--cpus-per-replica", "0.25"],
        id="two-models-answer-http",
        marks=pytest.mark.slow,
    ),
]


@pytest.mark.parametrize("shape", SHAPES)
def test_the_printed_address_is_the_ingress_replica_past_serves_proxy(tmp_path, shape):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS" and not k.startswith("RAY_SERVE_")}
    args = [
        "serve", "--model", "shufflenet_x0_5", "--weights", "none", "--image-size", "32", "--device", "cpu",
        "--energy", "simulated", "--idle-seconds", "0", "--warmup-batches", "1", "--policy", "greedy:4",
        "--port", str(port), "--out", str(tmp_path), *shape,
    ]  # fmt: skip
    urls = [f"http://127.0.0.1:{port + i}" for i in range(2 if "--replicas" in shape else 1)]
    sent = SENT * len(urls) + 1  # and one through the proxy
    server = subprocess.Popen(
        [sys.executable, "-m", "greenray.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env | {"CUDA_VISIBLE_DEVICES": ""},
    )
    lines = Lines(server.stderr)
    try:
        url = lines.find(SERVING, server)
        proxy = lines.find(PROXY, server, timeout_s=10)
        assert url == f"http://127.0.0.1:{port}" and proxy != url  # --port is the fast path's
        for each in urls:  # every replica that answers HTTP, on its own port
            assert request(each + "/healthz")[0] == 200
            for seed in range(SENT):
                status, answer, _ = request(each + "/predict", image_bytes(seed=seed), "image/jpeg")
                assert status == 200, answer
                assert answer["energy_source"] == "simulated" and answer["energy_j"] > 0
        status, answer, _ = request(proxy + "/predict", image_bytes(seed=99), "image/jpeg")
        assert status == 200, answer  # the proxy still answers, for clients that know only it
        # each front pushes its counts to the hub every second: the other replicas' come soon
        deadline = time.monotonic() + 30
        while _answered(request(url + "/metrics")[1], "200") < sent and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _answered(request(url + "/metrics")[1], "200") == sent
        server.send_signal(signal.SIGINT)
        server.wait(timeout=120)
        out = server.stdout.read()
        lines.close()
    finally:
        if server.poll() is None:
            server.kill()
    assert server.returncode == 0, lines.text
    assert "Traceback" not in out + lines.text, lines.text
    assert f"stopped: {sent} images in" in lines.text
    about = json.loads((tmp_path / "serve.json").read_text())
    assert about["fast_path"] is True and about["url"] == url and about["proxy_url"] == proxy
    batches = pd.read_parquet(tmp_path / "batches.parquet")
    assert batches["size"].sum() == sent and batches["energy_j"].gt(0).all()
    assert set(batches["replica"]) == set(range(len(urls)))
