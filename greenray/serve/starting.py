"""The server's port while it starts: `greenray serve` opens its port at once, before Ray and the
model are up, and answers every request on it with 503 "starting" until the Serve application
answers for itself; then it steps aside, and Serve's HTTP proxy alone holds the port.

Both listen on the same port: Serve's proxy binds with SO_REUSEPORT, and so does this one. The
kernel would spread new connections over the two, and Serve's proxy answers 404 until the
application's route is registered; so (on Linux) this listener attaches a one-instruction
classic BPF program to the port's group that sends every new connection to the group's first
socket, this one. To step aside it swaps in the program that picks the second socket (the
proxy's), answers what is already queued for it, and only then closes: a connection still
queued on a listener that closes would be reset. Elsewhere the two share the connections until
the hand-over (the proxy's 404s while its route is missing are the cost)."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import socket
import socketserver
import struct
import threading
from http.server import BaseHTTPRequestHandler

from greenray.serve.images import DRAIN_BYTES

log = logging.getLogger("greenray.serve")

STARTING = "the server is starting (warm-up or its policy search); retry later"
RETRY_AFTER_S = 5  # what a 503 "starting" asks a client to wait
POLL_S = 0.05  # how often the accept loop looks whether it should close
READ_TIMEOUT_S = 10.0  # a connection that sends nothing for this long is dropped
SO_ATTACH_REUSEPORT_CBPF = 51  # Linux's socket option (asm-generic/socket.h)
BPF_RET_K = 0x06  # a BPF program of one instruction, BPF_RET | BPF_K: "the group's socket K"
IDLE_POLLS = 2  # polls with nothing waiting before the listener closes, once it is stepping aside


class _Answer(BaseHTTPRequestHandler):
    """503 to everything: {"status": "starting"} on /healthz, {"error": ...} elsewhere; the
    connection is closed after it, so a client's next one may reach the real server."""

    timeout = READ_TIMEOUT_S

    def _answer(self) -> None:
        _drain(self)
        healthz = self.path.split("?")[0] == "/healthz"
        body = json.dumps({"status": "starting"} if healthz else {"error": STARTING}).encode()
        self.close_connection = True
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Retry-After", str(RETRY_AFTER_S))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _answer

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        log.debug("starting listener: " + format, *args)


def _drain(handler: BaseHTTPRequestHandler) -> None:
    length = handler.headers.get("Content-Length", "")
    left = min(int(length), DRAIN_BYTES) if length.isdigit() else 0
    while left > 0:
        chunk = handler.rfile.read(min(left, 1 << 16))
        if not chunk:
            return
        left -= len(chunk)


class _Listener(socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True
    allow_reuse_port = True  # Serve's proxy joins the port with SO_REUSEPORT
    daemon_threads = True
    request_queue_size = 256  # a burst of clients at a starting server waits to be told 503
    block_on_close = False  # closing does not wait for a slow client's connection
    timeout = POLL_S  # handle_request() returns after this when no connection waits
    idle = False

    def handle_timeout(self) -> None:
        self.idle = True

    def handle_error(self, request, client_address) -> None:
        # A client that went away before its 503 (a timeout, a reset) is no news: the base
        # class would print a traceback under the command's output.
        log.debug("starting listener: the connection from %s failed", client_address, exc_info=True)


class _Listener6(_Listener):
    address_family = socket.AF_INET6


def proxy_shares_the_port() -> bool:
    """Whether Serve's proxy will bind with SO_REUSEPORT (Ray's default; its env variable turns
    it off, and then the port must be left free for the proxy)."""
    return hasattr(socket, "SO_REUSEPORT") and os.environ.get("SERVE_SOCKET_REUSE_PORT_ENABLED", "1") == "1"


class StartingPort:
    """The port's 503 "starting" answers, from construction until `close()`."""

    def __init__(self, host: str, port: int) -> None:
        self._server = (_Listener6 if ":" in host else _Listener)((host, port), _Answer)
        self._routed = _route_new_connections(self._server.socket, to=0)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="greenray-starting", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        idle = 0
        while idle < IDLE_POLLS:
            self._server.idle = False
            self._server.handle_request()
            idle = idle + 1 if self._server.idle and self._closing.is_set() else 0
        self._server.server_close()

    def close(self) -> None:
        """Step aside: from now on new connections go to Serve's proxy (what already came here
        is answered first)."""
        if self._routed and not self._closing.is_set():
            _route_new_connections(self._server.socket, to=1)
        self._closing.set()
        self._thread.join()


def _route_new_connections(sock: socket.socket, to: int) -> bool:
    """Attach the BPF program that sends the port group's new connections to its socket `to`
    (in the order they bound; a `to` past the group's end: the kernel's own spread), in place
    of any before; False where it cannot be attached (the kernel copies the program)."""
    program = ctypes.create_string_buffer(struct.pack("HBBI", BPF_RET_K, 0, 0, to), 8)
    fprog = struct.pack("HP", 1, ctypes.addressof(program))  # struct sock_fprog {len; *filter}
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
    except OSError as exc:
        log.debug("new connections are shared with Serve's proxy while it starts (%s)", exc)
        return False
    return True
