"""The long-running commands: `greenray serve` (a Serve application over HTTP until Ctrl-C, every
batch appended to DIR/batches.parquet as the server goes) and `greenray serve-tune` (the policy
search on a running deployment, its runs stored as serve-bench stores them).

A server's batches: the driver takes each model replica's new batch records every FLUSH_S and
appends them to DIR/batches.parquet/ (greenray.results.TableLog: a folder of part files, each
append rewriting at most one part). Ctrl-C flushes what is left before the server goes. If the
driver is killed outright, the batches of its last FLUSH_S are lost (they are still in the
replicas, which die with it); a replica that dies loses those of its last FLUSH_S."""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from greenray.config import BatchPolicy, DeployConfig, PolicyTuneConfig, ServeConfig, TargetConfig
from greenray.energy import co2e_g, combined_source, sum_or_none
from greenray.errors import UsageError
from greenray.results import SERVED_BATCH_TYPES, ResultStore, TableLog, run_record
from greenray.serve import fast_path, zoo
from greenray.serve.driver import check_here, check_out, deploy, record_run, resolve_device, start
from greenray.serve.loadgen import error_line
from greenray.serve.loop import on_loop
from greenray.serve.policy_tuner import TuneResult, serve_default, tune_policy
from greenray.serve.replicas import IngressOptions, Replicas
from greenray.serve.run import RunPlan, ServedModel
from greenray.serve.starting import StartingPort, proxy_shares_the_port

log = logging.getLogger("greenray.serve")

FLUSH_S = 1.0  # how often a server appends its new batches to DIR/batches.parquet
SERVE_FILE, TUNE_FILE = "serve", "tune"  # DIR/serve.json, DIR/tune.json
BATCH_SCHEMA = pa.schema([(name, kind) for name, kind in SERVED_BATCH_TYPES.items()])
NOTES = {
    "batches": "DIR/batches.parquet is a folder of part files (pd.read_parquet reads it whole); the driver "
    f"appends every model replica's new batches every {FLUSH_S:g} s and on Ctrl-C: a driver killed outright "
    f"loses at most its last {FLUSH_S:g} s of batches",
    "energy": "energy_j of a batch: its window's Joules from the power samples; a /predict answer's "
    "energy_j is its batch's over its size",
    "tune": "with --policy auto, DIR/tune/ holds the search's runs as serve-bench stores them",
}


@dataclass
class ServeSummary:
    """What a server did before it stopped."""

    url: str
    policy: str
    batches: int
    images: int
    batch_energy_j: float | None
    energy_source: str
    dropped: int  # batch records the replicas could not hold for a late flush
    out: Path
    co2e_g: float | None = None  # the batches' grams of CO2e, where a grid intensity was given


class Server:
    """`greenray serve` as an object: `start()` deploys and warms up (and tunes, for --policy
    auto), `flush()` appends new batches to DIR/batches.parquet, `stop()` flushes and deletes
    the application; `serve_until_interrupted()` is the command's loop."""

    def __init__(
        self,
        config: ServeConfig,
        out: Path,
        *,
        address: str | None = None,
        progress=None,
        say: Callable[[str], None] = print,
    ) -> None:
        from rich.progress import Progress

        self.config, self.out, self.address, self.say = config, Path(out), address, say
        self.progress = progress if progress is not None else Progress(disable=True)
        self.session = uuid.uuid4().hex[:12]
        self.model: ServedModel | None = None  # once deployed and warm
        self.policy: BatchPolicy | None = config.batch_policy
        self.tuned: TuneResult | None = None
        self._log: TableLog | None = None
        self._counts = {"batches": 0, "images": 0, "dropped": 0}
        self._energy: float | None = 0.0
        self._sources: set[str] = set()
        self.proxy_port = config.port  # Serve's proxy; another port when the fast path takes --port
        self.direct_urls: list[str] = []  # the ingress replicas' own addresses (the fast path)
        self.fast_path_off: str | None = None  # why clients go through Serve's proxy, if they do

    @property
    def url(self) -> str:
        """Where clients send: the first ingress replica's own port on the fast path, else the proxy."""
        return self.direct_urls[0] if self.direct_urls else self.proxy_url

    @property
    def proxy_url(self) -> str:
        return f"http://{fast_path._url_host(self.config.host)}:{self.proxy_port}"

    def start(self) -> None:
        """Deploy, warm up (and search, for --policy auto), then open the server. SIGINT stops
        it as SIGTERM does, even where the shell that started it set SIGINT to be ignored."""
        check_out(self.out)
        self._log = TableLog(self.out, "batches", BATCH_SCHEMA)
        with _stopping_on_signals():
            device, replicas = self._deploy_behind_503()
            try:
                self._find_direct(replicas)
                self._ready(replicas, device)
            except BaseException:
                _delete(replicas)
                raise

    def _deploy_behind_503(self) -> tuple[str, Replicas]:
        """Deploy the application. On a local Ray the port opens at once, before Ray starts, and
        answers 503 "starting" until the application's ingress answers (503 until warm)."""
        deployment = self.config.deploy
        starting = None
        if self.address is None:
            check_here(deployment.serving.device, deployment.energy)
            for port in _ports(self.config):
                check_port(self.config.host, port)
            if self.policy is None:
                check_tunable(deployment)
        self._join()
        # Where Serve's proxy takes --port (no fast path), the port answers 503 "starting" from
        # here on; on the fast path the ingress replica opens it itself, answering 503 until warm.
        if self.address is None and self.proxy_port == self.config.port and proxy_shares_the_port():
            starting = StartingPort(self.config.host, self.config.port)
        ingress = IngressOptions(
            deployment.ingress_replicas,
            deployment.ingress_cpus,
            max_queue=self.config.max_queue,
            http={"host": self.config.host, "port": self.proxy_port},
        )
        try:
            return _deploy(self.config.model, deployment, self.address, ingress, self.policy)
        finally:
            if starting is not None:
                starting.close()  # serve.run has returned: the ingress replicas answer from now on

    def _join(self) -> None:
        """Join Ray (a local one started with Serve's fast path, unless --no-fast-path) and choose
        the proxy's port: --port itself unless the ingress replicas take it."""
        from greenray.ray_setup import connect

        config = self.config
        local = config.deploy.fast_path and self.address is None
        env = fast_path.env(config.port, config.deploy.http_replicas) if local else None
        connect(self.address, env=env)
        if not config.deploy.fast_path:
            self.fast_path_off = "--no-fast-path"
        elif local:  # a cluster's Serve says what it runs once the application is up (_find_direct)
            self.fast_path_off = fast_path.missing()
            if self.fast_path_off is None:
                self.proxy_port = fast_path.free_port(config.host)

    def _find_direct(self, replicas: Replicas) -> None:
        """Where the replicas answer HTTP on the fast path; said when clients go through the proxy."""
        deployment = self.config.deploy
        if self.fast_path_off is None:
            host, proxy = self.config.host, self.proxy_port
            found = (url for app in replicas.app_names for url in fast_path.direct_urls(app, host, proxy))
            self.direct_urls = list(dict.fromkeys(found))
            if not self.direct_urls:
                self.fast_path_off = "Serve's controller names no ingress replica port"
            elif self.address is None and len(self.direct_urls) < deployment.http_replicas:
                # Serve names the ports of the application on "/" only; without ingress replicas
                # the other model replicas took the rest of the local Ray's range, one each
                ports = range(self.config.port, self.config.port + deployment.http_replicas)
                self.direct_urls = [f"http://{fast_path._url_host(host)}:{port}" for port in ports]
        if self.fast_path_off is not None and self.config.deploy.fast_path:
            alone = deployment.ingress_replicas == 0 and deployment.replicas > 1
            self.say(
                f"notice: Serve's fast path is off ({self.fast_path_off}): clients go through Serve's proxy "
                f"on {self.proxy_url}, about 6 ms of CPU more per request"
                + (" (without ingress replicas, to model replica 0 only)" if alone else "")
            )

    def _ready(self, replicas: Replicas, device: str) -> None:
        """Warm up (and search, for --policy auto), then open the server to HTTP requests."""
        deployment, target = self.config.deploy, self.config.target
        self.model = on_loop(
            start(zoo.resolve(self.config.model), replicas, deployment, self.progress, target.seed)
        )
        about = run_record("serve", self.config, device=device, out=str(self.out), notes=NOTES)
        about |= {"session": self.session, "model": self.model.about, "url": self.url}
        about |= {"proxy_url": self.proxy_url, "fast_path": self.fast_path_off is None}
        if self.policy is None:
            check_measured(self.model)
            self.tuned = search_policy(self.model, target, self.out / "tune", self.progress, about)
            self.policy = _chosen(self.tuned)
        about["policy"] = str(self.policy)
        ResultStore(self.out).write_json(SERVE_FILE, about)
        on_loop(self._open())

    async def _open(self) -> None:
        await self.model.use(self.policy)
        await self.model.replicas.call("begin_serving")
        await self.model.replicas.hub.open.remote()  # HTTP requests were refused (503) until now

    def flush(self) -> int:
        """Append the batches every model replica ran since the last flush; returns how many."""
        rows = []
        for replica, taken in enumerate(on_loop(self.model.replicas.call("take_journal"))):
            self._counts["dropped"] += taken["dropped"]
            node = self.model.infos[replica]["node"]
            for batch in taken["batches"]:
                rows.append(
                    batch
                    | {
                        "run_id": self.session,
                        "replica": replica,
                        "model": self.model.name,
                        "policy": str(self.policy),
                        "preprocess_in_window": self.model.serving.preprocess_in_window,
                        "node": node,
                        "co2e_g": co2e_g(batch["energy_j"], self.model.g_per_kwh),
                    }
                )
                self._counts["images"] += batch["size"]
                self._energy = sum_or_none([self._energy, batch["energy_j"]])
                self._sources.add(batch["energy_source"])
        if rows:
            self._log.append(rows)
            self._counts["batches"] += len(rows)
        return len(rows)

    def stop(self) -> ServeSummary:
        """Flush the last batches and delete the application."""
        if self.model is not None:
            try:
                self.flush()
            finally:
                # A local Ray ends with this process and takes Serve with it; on a cluster, Serve
                # (and its HTTP proxies) stop unless other applications run on it.
                _delete(self.model.replicas, shutdown=self.address is not None)
        return ServeSummary(
            url=self.url,
            policy=str(self.policy),
            batches=self._counts["batches"],
            images=self._counts["images"],
            batch_energy_j=self._energy if self._counts["batches"] else None,
            energy_source=combined_source(self._sources) if self._sources else "none",
            dropped=self._counts["dropped"],
            out=self.out,
            co2e_g=co2e_g(self._energy, self.config.deploy.energy.g_per_kwh)
            if self._counts["batches"]
            else None,
        )

    def serve_until_interrupted(self) -> ServeSummary:
        """Flush every FLUSH_S until Ctrl-C (or SIGTERM: `kill`, `docker stop`, systemd), then
        stop; a second signal waits for the last flush. A flush that fails (a model replica
        Serve is restarting) is said once and tried again."""
        failing = False
        with _stopping_on_signals():
            try:
                while True:
                    time.sleep(FLUSH_S)
                    try:
                        self.flush()
                        failing = False
                    except Exception as exc:  # Ray raises many types for a replica that is gone
                        if not failing:
                            log.warning(
                                "could not take the replicas' batches (%s); trying again", error_line(exc)
                            )
                        failing = True
            except KeyboardInterrupt:
                pass
            with _ignoring_signals():
                return self.stop()


def serve_tune(
    config: PolicyTuneConfig, out: Path, *, address: str | None = None, progress=None
) -> TuneResult:
    """`greenray serve-tune`: deploy, warm up, search, store every run in `out`."""
    from rich.progress import Progress

    progress = progress if progress is not None else Progress(disable=True)
    deployment, target = config.deploy, config.target
    check_out(out)
    if address is None:
        check_here(deployment.serving.device, deployment.energy)
        check_tunable(deployment)
    ingress = IngressOptions(deployment.ingress_replicas, deployment.ingress_cpus)
    device, replicas = _deploy(config.model, deployment, address, ingress)
    try:
        name = zoo.resolve(config.model)
        model = on_loop(start(name, replicas, deployment, progress, seed=target.seed))
        check_measured(model)
        about = run_record("serve-tune", config, device=device, out=str(out), model=model.about)
        return search_policy(model, target, out, progress, about)
    finally:
        _delete(replicas)


def _deploy(
    model: str,
    deployment: DeployConfig,
    address: str | None,
    ingress: IngressOptions,
    policy: BatchPolicy | None = None,
) -> tuple[str, Replicas]:
    from greenray.ray_setup import connect

    connect(address, env=fast_path.env() if deployment.fast_path else None)
    device = resolve_device(deployment.serving.device, deployment.replicas)
    zoo.check_precision(deployment.serving.precision, device)
    return device, deploy(zoo.resolve(model), deployment, device, ingress=ingress, policy=policy)


def search_policy(model: ServedModel, target: TargetConfig, out: Path, progress, about: dict) -> TuneResult:
    """Search `target`'s policy by live runs on the deployed `model`, each stored like
    serve-bench's in `out`, with out/tune.json rewritten after each with the search so far.
    Sync (the search fits its models between runs): each run goes through the driver's loop."""
    store = ResultStore(out)
    record = dict(about)

    def plan(policy: BatchPolicy) -> RunPlan:
        return RunPlan(target.frequency, policy, target.requests, target.arrival, target.seed)

    def run(policy: BatchPolicy) -> dict:
        return record_run(model, plan(policy), store, progress, resume_hint="run serve-tune again")

    def keep(result: TuneResult) -> None:
        record["search"] = result.to_dict()
        store.write_json(TUNE_FILE, record)

    on_loop(model.settle(plan(serve_default(target))))
    return tune_policy(run, target, on_observation=keep)


def _chosen(result: TuneResult) -> BatchPolicy:
    from greenray.config import parse_policy

    if result.best is None:
        raise UsageError(
            f"no policy kept p99 under {result.slo_ms:g} ms at {result.frequency_hz:g} Hz in "
            f"{result.live_runs} runs (Serve's default had {result.baseline.p99_ms or float('nan'):.1f} ms): "
            "raise --slo-ms, lower --frequency, or serve with a --policy of your own"
        )
    return parse_policy(result.best.policy)


def check_tunable(deploy_config: DeployConfig) -> None:
    """A search minimises energy per image: say now if nothing here can measure it."""
    from greenray.energy import EnergyRequestError, nothing_to_count

    try:
        with deploy_config.energy.open_meter(quiet=True) as meter:
            measurable = bool(meter.devices)
    except EnergyRequestError as exc:
        raise UsageError(str(exc)) from None
    if not measurable:
        raise UsageError(nothing_to_count("the policy search (energy per image)", "here"))


def check_measured(model: ServedModel) -> None:
    """The same, for replicas on a cluster's nodes."""
    for info in model.infos:
        if not info["energy_devices"]:
            raise UsageError(
                f"the policy search minimises energy per image, and nothing on {info['node']} measures "
                "energy: run where NVML or RAPL is readable, or use --energy simulated (labelled)"
            )


def _ports(config: ServeConfig) -> list[int]:
    """The ports this server listens on that --port names: on the fast path one for each replica
    that answers HTTP (its ingress replicas, or its model replicas without), from --port on;
    else the proxy's."""
    return [config.port + i for i in range(config.deploy.http_replicas if config.deploy.fast_path else 1)]


def check_port(host: str, port: int) -> None:
    """A port another program holds is said now, not as a proxy that never comes up."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise UsageError(
            f"cannot serve on {host}:{port} ({exc.strerror or exc}): choose another --port or --host "
            "(on the fast path each replica that answers HTTP takes a port, from --port on)"
        ) from None


def _delete(replicas, shutdown: bool = False) -> None:
    """Delete the application; with `shutdown`, stop Serve (and its HTTP proxies) too if
    nothing else runs on it."""
    from ray import serve

    replicas.delete()
    if shutdown and not serve.status().applications:
        serve.shutdown()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@contextmanager
def _stopping_on_signals():
    """SIGINT and SIGTERM raise KeyboardInterrupt here. SIGINT needs it too: a shell starts a
    background job (`greenray serve &` in a script) with SIGINT ignored, and Python then leaves
    it ignored. Signals can be set only from the main thread; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def _ignoring_signals():
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
