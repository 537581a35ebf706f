"""`greenray serve` as a user runs it: a process of its own (with its own local Ray), real HTTP
requests, then Ctrl-C (SIGINT): it exits cleanly (code 0, no traceback) and every batch it ran is
in DIR/batches.parquet. One such test: it starts a Ray of its own."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from helpers_http import free_port, image_bytes, request

# A server process with a Ray of its own: minutes on two cores, so CI leaves it out (README: pytest -m slow).
pytestmark = pytest.mark.slow

SENT = 6


def start_server(out, port: int, **popen) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"CUDA_VISIBLE_DEVICES": ""}
    args = [
        "serve", "--model", "shufflenet_x0_5", "--weights", "none", "--image-size", "32", "--device", "cpu",
        "--energy", "simulated", "--idle-seconds", "0", "--warmup-batches", "1", "--policy", "greedy:4",
        "--port", str(port), "--out", str(out),
    ]  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "greenray.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **popen,
    )


def serve_and_stop(server: subprocess.Popen, port: int, signum: int) -> tuple[str, str]:
    """Wait until `server` answers, send it SENT images, then `signum`; its stdout and stderr."""
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, server.communicate()[1]
            assert time.monotonic() < deadline, "the server did not come up"
            try:
                if request(url + "/healthz", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        for seed in range(SENT):
            status, answer, _ = request(url + "/predict", image_bytes(seed=seed), "image/jpeg")
            assert status == 200, answer
        server.send_signal(signum)
        return server.communicate(timeout=120)
    finally:
        if server.poll() is None:
            server.kill()


def assert_stopped_cleanly(server: subprocess.Popen, out, err, folder) -> None:
    assert server.returncode == 0, err
    assert "Traceback" not in out + err, err
    assert f"stopped: {SENT} images in" in err
    batches = pd.read_parquet(folder / "batches.parquet")  # a folder of parts, read as one table
    assert batches["size"].sum() == SENT and (batches["size"] <= 4).all()
    assert (batches["policy"] == "greedy:4").all() and batches["energy_j"].gt(0).all()
    assert (folder / "serve.json").exists()


def test_ctrl_c_stops_the_server_cleanly_with_every_batch_kept(tmp_path):
    port = free_port()
    server = start_server(tmp_path, port)
    out, err = serve_and_stop(server, port, signal.SIGINT)
    assert_stopped_cleanly(server, out, err, tmp_path)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_sigint_stops_a_server_started_in_the_background_by_a_script(tmp_path):
    """A shell starts `greenray serve &` from a script with SIGINT ignored (no job control), and
    Python keeps an ignored SIGINT ignored: the server must still stop on it, batches kept."""
    port = free_port()
    server = start_server(tmp_path, port, preexec_fn=_ignore_sigint)
    out, err = serve_and_stop(server, port, signal.SIGINT)
    assert_stopped_cleanly(server, out, err, tmp_path)
