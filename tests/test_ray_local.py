"""The Ray that greenray starts for itself: its processes listen on loopback only, and a stale
cluster address (RAY_ADDRESS naming a head that died) does not stop it starting. Each case in a
process of its own, since the test session shares one Ray."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# Starts a private Ray through greenray's connect(), then lists every listening socket of the
# driver and the processes Ray started for it (psutil comes with Ray, on the path once ray is imported).
LISTENERS = """
import os, time
from greenray.ray_setup import connect
import ray  # (Ray puts its own psutil on the path)
import psutil
connect(num_cpus=1)
@ray.remote
def pid():
    return os.getpid()
worker = ray.get(pid.remote())  # a worker process too, not only the node's own
time.sleep(1)
me = psutil.Process()
for process in [me, *me.children(recursive=True)]:
    try:
        for conn in process.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                print("LISTEN", process.name(), conn.laddr.ip, conn.laddr.port)
    except psutil.NoSuchProcess:
        pass
print("NODE", ray.util.get_node_ip_address())
ray.shutdown()
"""


def run_python(code: str, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment | (env or {}),
    )


def is_loopback(ip: str) -> bool:
    return ip in ("127.0.0.1", "::1", "::ffff:127.0.0.1") or ip.startswith("127.")


def test_the_private_ray_listens_on_loopback_only():
    result = run_python(LISTENERS)
    assert result.returncode == 0, result.stderr[-3000:]
    listening = [line.split() for line in result.stdout.splitlines() if line.startswith("LISTEN")]
    names = {name for _, name, _, _ in listening}
    assert len(listening) >= 4 and {"gcs_server", "raylet"} <= names, result.stdout
    exposed = [line for line in listening if not is_loopback(line[2])]
    assert not exposed, f"listening beyond loopback: {exposed}"
    assert "NODE 127.0.0.1" in result.stdout


def dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again: nothing listens there


START = "import ray; from greenray.ray_setup import connect; connect(num_cpus=1); print('UP'); ray.shutdown()"


@pytest.mark.parametrize("left_by", ["RAY_ADDRESS", "address file"])
def test_a_stale_cluster_address_does_not_stop_greenray_starting_its_own_ray(left_by):
    """A head that died left its address in RAY_ADDRESS or in Ray's address file (what
    `ray start` writes, here under a Ray temp folder of the test's own): greenray without
    --address starts its own Ray all the same (it used to hang on "Failed to connect to GCS")."""
    stale = f"127.0.0.1:{dead_port()}"
    # a short path: Ray's socket paths under it must stay within the OS's 107 characters
    temp = Path(tempfile.mkdtemp(prefix="gr-", dir="/tmp"))
    try:
        env = {"RAY_TMPDIR": str(temp)}
        if left_by == "RAY_ADDRESS":
            env["RAY_ADDRESS"] = stale
        else:
            (temp / "ray").mkdir()
            (temp / "ray" / "ray_current_cluster").write_text(stale + "\n")
        result = run_python(START, env=env, timeout=240)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert result.returncode == 0 and "UP" in result.stdout, result.stderr[-3000:]
