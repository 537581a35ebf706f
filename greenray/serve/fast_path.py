"""Serve's fast path for a live server: Ray Serve's throughput-optimised mode
(RAY_SERVE_THROUGHPUT_OPTIMIZED=1), in which each ingress replica answers HTTP on a port of its
own ("direct ingress"), past Serve's proxy. On a 2-core machine the proxy costs about 6 ms of
CPU per request and is the first thing to saturate: past it, the same server answered 2-2.6x the
requests/s (docs/BENCHMARKS.md). The mode also runs a handle's router on the caller's event
loop, so every handle call the driver makes is on its one loop (greenray.serve.loop).

The mode is read by Ray's processes when they start, from their environment: `env` gives what
the driver sets before it starts a local Ray (the ingress replicas take the ports from --port
on, Serve's proxy a free one). A Ray that is already running keeps what it was started with:
`direct_urls` asks Serve's controller where the ingress replicas listen, and finds none when
the mode is off there."""

from __future__ import annotations

import socket

THROUGHPUT_MODE = "RAY_SERVE_THROUGHPUT_OPTIMIZED"
_MIN_PORT, _MAX_PORT = "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT", "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"


def env(port: int | None = None, ingress_replicas: int = 1) -> dict[str, str]:
    """The environment of a local Ray whose Serve runs the fast path, its ingress replicas
    listening on `port` .. `port + ingress_replicas - 1` (Serve's range excludes its end; None:
    Serve's own range, 30000 on). An ingress replica being stopped would first wait 30 s for a
    load balancer to forget it: a local server has none in front."""
    found = {THROUGHPUT_MODE: "1", "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0"}
    if port is not None:
        found |= {_MIN_PORT: str(port), _MAX_PORT: str(port + ingress_replicas)}
    return found


def missing() -> str | None:
    """Why this process's Serve would not run the fast path (None: it would). Read once Ray is
    joined: Serve's settings module takes the environment when first imported."""
    from ray.serve._private import constants

    if not hasattr(constants, THROUGHPUT_MODE):
        import ray

        return f"Ray {ray.__version__} has no throughput-optimised Serve mode"
    if not getattr(constants, "RAY_SERVE_ENABLE_DIRECT_INGRESS", False):
        return f"the Ray this command joined runs Serve without it (start that Ray with {THROUGHPUT_MODE}=1)"
    return None


def free_port(host: str) -> int:
    """A port nothing listens on now (for Serve's proxy, when the ingress replicas take --port)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def direct_urls(app_name: str, host: str, proxy_port: int) -> list[str]:
    """Where the application's ingress replicas answer HTTP themselves, one URL each; empty
    when Serve runs without direct ingress (its controller then names only its proxy). Asked
    of Serve's controller, which allocates the replicas' ports (no public API says them)."""
    import ray
    from ray.serve._private.common import RequestProtocol
    from ray.serve.context import _get_global_client

    controller = _get_global_client()._controller
    if not hasattr(controller, "get_target_groups"):
        return []
    groups = ray.get(controller.get_target_groups.remote(app_name))
    ports = sorted(
        {
            target.port
            for group in groups
            if group.protocol == RequestProtocol.HTTP and group.app_name in (app_name, "")
            for target in group.targets
        }
        - {proxy_port}
    )
    return [f"http://{_url_host(host)}:{port}" for port in ports]


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
