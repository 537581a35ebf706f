"""Energy for any Ray Tune function trainable: `with_energy` wraps it so that every result it
reports carries what its trial has spent so far, measured inside the trial, on whatever node
and GPU(s) Ray gave it."""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from numbers import Number
from typing import Any

from greenray.energy import ENERGY_CHOICES, EnergyMeter, PowerSince, counted_joules, open_meter
from greenray.energy import work as energy_work
from greenray.ray_metrics import TrialMetrics
from greenray.results import ENERGY_COLUMNS

log = logging.getLogger("greenray.tune")

TRIAL_WINDOW = "trial"  # the meter window that spans a with_energy trial
# The keys every reported result gains: the energy columns of greenray's result rows.
ENERGY_KEYS = (*ENERGY_COLUMNS, "node_id")

_current: ContextVar[_TrialEnergy | None] = ContextVar("greenray_trial_energy", default=None)


def with_energy(
    trainable: Callable,
    *,
    energy: str = "auto",
    interval_ms: float = 10.0,
    baseline: Mapping[str, Mapping[str, float]] | None = None,
    busy: bool = True,
    per_kj: str | Sequence[str] = (),
    carbon_intensity: float | None = None,
    modelled_work: bool = False,
) -> Callable:
    """Wrap a Ray Tune function trainable so every result it reports carries its energy.

    The trainable is left as it is: it reports with `tune.report({...})` (checkpoints too), or
    returns or yields its results, as Tune allows. Inside each trial an energy meter opens on
    the devices the trial sees (the GPUs Ray gave it, through NVML; else the CPU packages,
    through RAPL), and every result reaches Tune with these keys added:

    - `energy_j`, `idle_free_energy_j`, `cpu_energy_j`: Joules since the trial started;
    - `co2e_g`: grams of CO2e, `energy_j` in kWh times `carbon_intensity` (None without it);
    - `avg_power_w`: Watts since the previous report;
    - `peak_power_w`: the highest Watts since the trial started;
    - `seconds`: the measured span so far;
    - `uncertainty_j`: an about-95% bound on the error of `energy_j`;
    - `energy_source` (`nvml-counter`, `nvml-power`, `rapl`, `simulated` or `none`),
      `power_field`, `energy_approximate`, `energy_partial`, `device`, `device_name`,
      `device_uuid`, `node` (hostname), `node_id` (Ray's) and the rest of `ENERGY_KEYS`.

    A key the trainable reports itself is kept as it reported it (with a warning, once). A
    trial that raises carries its energy so far on the exception (`greenray_energy`, the same
    keys), so what a failed trial spent can still be recorded.

    Args:
        trainable: a function trainable, `def train(config): ...`, possibly wrapped by
            `tune.with_parameters` or `tune.with_resources` already (or wrap the result).
        energy: "auto" (NVML GPUs, else RAPL, else nothing), "nvml", "rapl", "simulated"
            (a deterministic model, labelled so: for machines without a GPU) or "none".
        interval_ms: power sampling interval, milliseconds. The sampling runs in a process
            of its own beside the trial's; the trial's meter only collects its readings twice
            a second and at each report (greenray/energy/sampler.py). Where that process
            cannot run, a thread in the trial samples, as before, and says so once.
        baseline: idle power to factor out, Watts by node hostname, then device UUID (what
            `greenray.tune.cluster.baseline_by_node` gives). Without one, `idle_free_energy_j`
            is None, except for the simulated backend, whose idle is its model's.
        busy: the whole trial is work. Only the simulated backend's model reads this; a
            trainable that marks its own work with `trial_meter().window(...)` passes False.
        per_kj: reported keys to divide by the trial's kilojoules so far: each result that has
            KEY gains `KEY_per_kj` (e.g. `accuracy_per_kj`, a searcher's energy-aware metric),
            over `idle_free_energy_j` where the baseline is known, else `energy_j`; None where
            nothing was measured.
        carbon_intensity: the grid's gCO2e/kWh, for `co2e_g` (`greenray.energy.carbon.lookup(CODE)
            .g_per_kwh` gives a country's or a cloud region's from the shipped table).
        modelled_work: the trainable reports the work it does with `greenray.energy.add_work`
            (modelled busy seconds), and the simulated backend's Joules follow that, the same
            on a quiet or a loaded machine; without it they follow the trial process's CPU
            seconds. Other backends measure and ignore it.

    Returns:
        A function trainable with the wrapped one's name, parameters and resources.

    Example:
        >>> from ray import tune
        >>> from greenray.tune import PIBayesSearch, with_energy
        >>> def train(config):
        ...     for epoch in range(3):
        ...         tune.report({"loss": (config["x"] - 1) ** 2 / (epoch + 1)})
        >>> tuner = tune.Tuner(
        ...     with_energy(train, energy="simulated"),
        ...     tune_config=tune.TuneConfig(num_samples=4, search_alg=PIBayesSearch(
        ...         {"x": tune.uniform(0, 2)}, metric="energy_j", mode="min")),
        ... )  # doctest: +SKIP
    """
    if energy not in ENERGY_CHOICES:
        raise ValueError(f"energy must be one of {', '.join(ENERGY_CHOICES)}, not {energy!r}")
    if not interval_ms > 0:
        raise ValueError(f"interval_ms must be a positive number of milliseconds, not {interval_ms!r}")
    if carbon_intensity is not None and not 0 <= carbon_intensity < float("inf"):
        raise ValueError(f"carbon_intensity must be gCO2e/kWh of at least 0, not {carbon_intensity!r}")
    by_node = {node: dict(watts) for node, watts in (baseline or {}).items()}
    ratios = (per_kj,) if isinstance(per_kj, str) else tuple(per_kj)
    work_model = energy_work.modelled_work if modelled_work else contextlib.nullcontext

    @functools.wraps(trainable)
    def measured(config):
        # A sampler thread would take the GIL from the trainable 100 times a second.
        with work_model():
            meter = open_meter(energy, interval_ms=interval_ms, quiet=True, sampler="process")
        baseline_here = by_node.get(socket.gethostname(), {})
        with _TrialEnergy(meter, baseline_here, busy, ratios, carbon_intensity).active() as trial:
            return trial.run(trainable, config)

    return measured


def trial_meter() -> EnergyMeter:
    """The energy meter of the with_energy trial running in this thread, for windows of the
    trial's own (an epoch, a test pass). RuntimeError outside such a trial."""
    trial = _current.get()
    if trial is None:
        raise RuntimeError("trial_meter() is only available inside a trainable wrapped with with_energy")
    return trial.meter


def trial_energy() -> dict[str, Any]:
    """The energy columns of the running with_energy trial so far (what the next report gets)."""
    trial = _current.get()
    if trial is None:
        raise RuntimeError("trial_energy() is only available inside a trainable wrapped with with_energy")
    return trial.columns(advance=False)


class _TrialEnergy:
    """One trial's meter and window, and the report hook that adds its energy to results."""

    def __init__(
        self,
        meter: EnergyMeter,
        baseline: dict[str, float],
        busy: bool,
        per_kj: tuple[str, ...] = (),
        g_per_kwh: float | None = None,
    ) -> None:
        self.meter = meter
        self._g_per_kwh = g_per_kwh
        self._exported = TrialMetrics()  # the trial's Joules and Watts in Ray's own metrics
        meter.use_baseline(baseline)
        self._busy = busy
        self._per_kj = per_kj
        self._power = PowerSince()  # avg_power_w: since the last report
        self._clashes: set[str] = set()

    @contextmanager
    def active(self) -> Iterator[_TrialEnergy]:
        from ray.train._internal.session import get_session

        # Tune's report() (ray.tune.report, however imported, and returned or yielded
        # results) all go through the trial's session; its report is shadowed for the trial.
        session = get_session()
        if session is None:
            raise RuntimeError("with_energy trainables run inside Ray Tune (no Tune session here)")
        token = _current.set(self)
        self.meter.start().wait_for_sampler()
        self.meter.begin_window(TRIAL_WINDOW, busy=self._busy)
        session.report = functools.partial(self._report, type(session).report.__get__(session))
        try:
            yield self
        except BaseException as exc:
            # What the trial spent before it failed goes with its error, so a failed trial is
            # recorded with its cost (Ray pickles the exception's attributes to the driver).
            with contextlib.suppress(AttributeError, ValueError):
                exc.greenray_energy = self.columns(advance=False)
            raise
        finally:
            del session.report
            _current.reset(token)
            self.meter.end_window(TRIAL_WINDOW)
            self.meter.close()

    def run(self, trainable: Callable, config: dict) -> None:
        """Call the trainable, reporting what it yields or returns as Tune itself would."""
        from ray.train._internal.session import get_session
        from ray.tune.result import DEFAULT_METRIC

        def report(output: Any) -> None:
            if isinstance(output, dict):
                get_session().report(output)
            elif isinstance(output, Number):
                get_session().report({DEFAULT_METRIC: output})

        output = trainable(config)
        for result in output if inspect.isgenerator(output) else [output]:
            report(result)

    def _report(self, report: Callable, metrics: dict, checkpoint=None) -> None:
        energy = self.columns()
        self._exported.record(energy)
        clashes = (set(energy) & set(metrics)) - self._clashes
        if clashes:
            self._clashes |= clashes
            log.warning("the trainable reports %s itself; its values are kept", ", ".join(sorted(clashes)))
        report({**energy, **metrics, **_per_kj(metrics, energy, self._per_kj)}, checkpoint=checkpoint)

    def columns(self, advance: bool = True) -> dict[str, Any]:
        """The trial's energy columns now; `advance` makes this the report the next
        avg_power_w is counted from."""
        now = self.meter.read_window(TRIAL_WINDOW)
        row = now.to_row(self._g_per_kwh) | {"node_id": _node_id()}
        since_start = not self._power.started  # then the window's own average stands
        watts = self._power.step(now.seconds, now.joules, advance)
        if not since_start:  # since the previous report, not since the start
            row["avg_power_w"] = watts
        return row


def _per_kj(metrics: dict, energy: dict, keys: tuple[str, ...]) -> dict[str, float | None]:
    """KEY_per_kj for each of `keys` the trainable reported: KEY over the trial's kJ so far."""
    joules = counted_joules(energy)
    out = {}
    for key in keys:
        if key in metrics:
            value = metrics[key]
            known = isinstance(value, Number) and isinstance(joules, Number) and joules > 0
            out[f"{key}_per_kj"] = float(value) / (joules / 1000.0) if known else None
    return out


def _node_id() -> str | None:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
