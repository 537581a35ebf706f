"""`greenray serve`'s port while the server starts, over real HTTP on the session's local Ray: it
answers 503 "starting" from the moment it opens, before Serve is even asked to deploy, and the
hand-over to Serve's proxy refuses no connection and answers nothing else (no 404) until the
server is warm and answers 200."""

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


class _Proxy(ThreadingHTTPServer):
    """What Serve's proxy does to the port: binds it with SO_REUSEPORT, answers 200."""

    allow_reuse_port = True
    daemon_threads = True
    request_queue_size = 256


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the hand-over's BPF program is Linux's")
def test_a_listener_that_joins_the_port_gets_nothing_until_the_hand_over_and_then_everything():
    url = f"http://127.0.0.1:{(port := free_port())}"
    starting = StartingPort("127.0.0.1", port)
    proxy = _Proxy(("127.0.0.1", port), _Ok)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        for _ in range(20):  # the kernel alone would spread these over both listeners
            assert ask(url, "/healthz") == (503, {"status": "starting"})
        answers: list = []

        def hammer() -> None:  # clients that keep connecting while the port changes hands
            while answers.count((200, {})) < 20:
                answers.append(ask(url, "/healthz"))

        clients = [threading.Thread(target=hammer) for _ in range(4)]
        for client in clients:
            client.start()
        starting.close()
        for client in clients:
            client.join()
        assert set(map(repr, answers)) <= {repr((503, {"status": "starting"})), repr((200, {}))}, answers
    finally:
        starting.close()
        proxy.shutdown()
        proxy.server_close()


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
