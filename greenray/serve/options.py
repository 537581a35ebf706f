"""Serve settings every greenray deployment shares. Torch-free, so that the ingress and hub
replicas of a live server (greenray.serve.app), which never touch a model, import no torch."""

# Requests a replica takes in before the caller's router holds them back. Effectively no limit:
# the queue the study measured is the batch queue inside the replica, and a control call
# (end_run) must not wait behind a backlog at the router.
MAX_ONGOING_REQUESTS = 1 << 20
# Serve's access log writes a line per request; the driver would print them all.
SERVE_LOGGING = {"enable_access_log": False, "log_level": "WARNING"}
# Serve's own switch (part of its throughput-optimised mode): requests, batches and control
# calls on one thread. With Serve's default second thread taking requests in, every op of
# the model's forward pass waits for the GIL (a 1-thread CPU forward ran 2-3x slower), and
# requests that arrive during a batch would be batched while it runs, not after.
REPLICA_ENV = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}
# A batch holds that thread, health checks included: a big model on a CPU may take a while.
HEALTH_CHECK_TIMEOUT_S = 600.0
# A replica being deleted waits this long for calls in flight (an ingress's collect waits for
# answers by design, so Serve's default 20 s would be spent at every shutdown).
GRACEFUL_SHUTDOWN_S = 2.0
# serve-bench's HTTP path numbers each POST /predict in this header, so the replicas' records of a
# request join the caller's timing (a client's own requests need not carry it).
REQUEST_ID_HEADER = "X-Greenray-Request"
