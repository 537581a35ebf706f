"""`greenray serve`'s port while the server starts, over real HTTP on the session's local Ray: it
answers 503 "starting" from the moment it opens, before Serve is even asked to deploy, and the
hand-over to Serve's proxy refuses no connection and answers nothing else (no 404) until the
server is warm and answers 200."""

import socket
import sys
import threading

import pytest
from helpers_http import TINY_SERVER, free_port, image_bytes, request

from greenray.config import ServeConfig
from greenray.serve.starting import STARTING, StartingPort

STARTING_ANSWERS = {"/healthz": {"status": "starting"}, "/predict": {"error": STARTING}}


def ask(url: str, path: str):
    """(status, answer) of one request, or ("refused", error) where no answer came."""
    try:
        if path == "/predict":
            return request(url + path, image_bytes(), "image/jpeg", timeout=60)[:2]
        return request(url + path, timeout=60)[:2]
    except OSError as exc:
        return "refused", str(exc)


def first_answer(url: str, starter: threading.Thread, tries: int = 600):
    for _ in range(tries):
        answer = ask(url, "/healthz")
        if answer[0] != "refused" or not starter.is_alive():
            return answer
        threading.Event().wait(0.05)
    return answer


def joined_listener(port: int) -> socket.socket:
    """A listener on `port` as Serve's proxy makes it (SO_REUSEPORT)."""
    late = socket.socket()
    late.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    late.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    late.bind(("127.0.0.1", port))
    late.listen(64)
    late.settimeout(30)
    return late


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the hand-over's BPF program is Linux's")
def test_a_listener_that_joins_the_port_gets_no_connection_until_the_starting_one_closes():
    url = f"http://127.0.0.1:{(port := free_port())}"
    starting = StartingPort("127.0.0.1", port)
    late = joined_listener(port)
    try:
        for _ in range(20):  # the kernel would spread these over both listeners
            assert ask(url, "/healthz") == (503, {"status": "starting"})
        late.setblocking(False)
        with pytest.raises(BlockingIOError):
            late.accept()  # not one came here
        late.setblocking(True)
        late.settimeout(30)
        starting.close()
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", port), timeout=30):
                late.accept()[0].close()  # now every one comes here
    finally:
        starting.close()
        late.close()


def test_the_port_answers_503_starting_from_when_it_opens_until_the_server_is_warm(
    ray_local, tmp_path, monkeypatch
):
    from ray import serve

    from greenray.serve import server as server_module

    deploying, real_deploy = threading.Event(), server_module._deploy

    def deploy_when_let(*args):  # holds the deployment back: the port must answer before it
        assert deploying.wait(120)
        return real_deploy(*args)

    monkeypatch.setattr(server_module, "_deploy", deploy_when_let)
    settings = TINY_SERVER | {"warmup_batches": 1, "policy": "greedy:4", "port": free_port()}
    running = server_module.Server(ServeConfig.from_flat(settings), tmp_path)
    failures: list[BaseException] = []
    starter = threading.Thread(target=lambda: _start(running, failures))
    starter.start()
    try:
        assert first_answer(running.url, starter) == (503, STARTING_ANSWERS["/healthz"])
        for path, expected in STARTING_ANSWERS.items():  # still before anything was deployed
            assert ask(running.url, path) == (503, expected)
        deploying.set()
        seen: list[tuple[str, int | str]] = []
        while ("/healthz", 200) not in seen:
            assert not failures, failures
            for path in STARTING_ANSWERS:
                status, answer = ask(running.url, path)
                seen.append((path, status))
                assert status == 200 or (status, answer) == (503, STARTING_ANSWERS[path]), seen[-20:]
        status, answer = ask(running.url, "/predict")
        assert status == 200 and "class" in answer
    finally:
        deploying.set()
        starter.join()
        running.stop()
        serve.shutdown()
    assert not failures


def _start(server, failures: list) -> None:
    try:
        server.start()
    except BaseException as exc:
        failures.append(exc)
