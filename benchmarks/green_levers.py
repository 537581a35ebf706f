"""The headline of greenray's green levers: the energy to reach 0.98 x the best accuracy of the
study's protocol, against greenray's defaults with its levers on, on the strategies experiment
in miniature.

The protocol: each cell of experiments/strategies.yaml with the partial grid (the study's
baseline strategy), every trial to its last epoch, at --scale on --dataset (what
`greenray run experiments/strategies.yaml --scale S --dataset digits` runs for its grid cells).
Its reference accuracy A* is the cell's best round-mean accuracy; the target is 0.98 x A*.
The levers: the same cell (same net, data, Adam parameter count, rounds x repetitions, epochs,
seed) with greenray's default strategy (bayes) and --levers (default: ASHA and patience 8;
`--levers scheduler=asha,params=+batch,objective=accuracy-per-kj` tries others). For each:
the energy of every trial (failed and stopped ones too) up to the first round whose mean
accuracy reached the target, the energy spent in all, and the best.

Energy on a machine without a GPU is the simulated backend's, whose busy-time model makes
Joules proportional to compute time: SIMULATED, never a measurement. Trials run one at a time
(--max-concurrent 1) so that they do not slow each other down on a small machine; other jobs on
a shared machine still stretch compute time, and so simulated Joules, by up to 2-3x for
minutes at a time. Every cell's trials train the same net with the same batch size, so each
epoch costs the same compute: the trial-epochs spent until the target (the sum of the trials'
`epochs_done`) are printed beside the Joules as the measure no other job can disturb.

    python benchmarks/green_levers.py --scale 0.25 --seeds 3 --out bench-levers
    python benchmarks/green_levers.py --scale 0.25 --nets dense-poly --params 3 --out bench-levers

Each cell runs with --seeds study seeds (the grid's order, the searcher's draws and every
trial's initialisation change with it): one seed's grid may meet a good point in its first
rounds, so the headline is over cells x seeds.

A re-run with the same --out goes on where it stopped (each cell is a results folder).
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

from greenray import experiments
from greenray.analysis.levers import energy_until
from greenray.config import StudyConfig
from greenray.tune.study import STUDY_FILE, resume_study, start_study

SHARE = 0.98
LEVERS = "scheduler=asha,patience=8"  # added to greenray's defaults (bayes)


def levers(text: str, config: StudyConfig) -> StudyConfig:
    """The cell's config with greenray's default strategy and the levers of `text` (k=v,...;
    params=+batch adds dimensions to the cell's Adam count)."""
    flat: dict = {"strategy": StudyConfig().search.strategy}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        if key == "params" and value.startswith("+"):
            value = f"{config.search.params}{value}"
        elif value.replace(".", "", 1).isdigit():
            value = float(value) if "." in value else int(value)
        flat[key] = value
    return config.replace(**flat)


def run(config: StudyConfig, folder: Path) -> pd.DataFrame:
    say = lambda line: None  # noqa: E731
    if (folder / f"{STUDY_FILE}.json").exists():
        resume_study(folder, say=say)
    else:
        start_study(config, folder, say=say)
    return pd.read_parquet(folder / "trials.parquet")


def summary(trials: pd.DataFrame, target: float) -> dict:
    ok = trials[trials["status"] == "ok"]
    energy = "idle_free_energy_j" if trials["idle_free_energy_j"].notna().any() else "energy_j"
    trials = trials.assign(folder="x")
    return {
        "best": float(ok.groupby("round")["accuracy"].mean().max()) if len(ok) else math.nan,
        "to_target_j": energy_until(trials, energy, target),
        "to_target_epochs": energy_until(trials, "epochs_done", target),
        "epochs": int(trials["epochs_done"].sum()),
        "total_j": float(pd.to_numeric(trials[energy]).sum()),
        "trials": len(trials),
        "stopped": int((trials["status"] == "stopped").sum()),
        "energy": energy,
        "source": ",".join(sorted(trials["energy_source"].dropna().unique())),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.25)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--nets", default=None, help="only these nets (comma-separated)")
    parser.add_argument("--params", default=None, help="only these Adam counts (comma-separated)")
    parser.add_argument("--levers", default=LEVERS, help=f"levers on top of greenray's defaults ({LEVERS})")
    parser.add_argument("--energy", default="simulated")
    parser.add_argument("--max-concurrent", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=1, help="study seeds 0..N-1 per cell")
    parser.add_argument("--out", type=Path, default=Path("bench-levers"))
    args = parser.parse_args(argv)
    planned = experiments.prepare("experiments/strategies.yaml", args.scale, datasets=(args.dataset,))
    options = experiments.RunOptions(device="cpu", energy=args.energy, idle_seconds=0.5)
    nets = set(args.nets.split(",")) if args.nets else None
    counts = {int(p) for p in args.params.split(",")} if args.params else None
    rows = []
    started = time.monotonic()
    for cell in experiments.cells(planned):
        s = cell.settings
        if (
            s["strategy"] != "grid"
            or (nets and s["net"] not in nets)
            or (counts and s["params"] not in counts)
        ):
            continue
        for seed in range(args.seeds):
            config = experiments.hpo_config(cell, options)
            protocol = config.replace(max_concurrent=args.max_concurrent, seed=seed)
            green = levers(args.levers, protocol)
            name = cell.name if seed == 0 else f"{cell.name}-seed{seed}"
            base = run(protocol, args.out / "protocol" / name)
            target = SHARE * summary(base, math.inf)["best"]
            mine, theirs = summary(run(green, args.out / "levers" / name), target), summary(base, target)
            label = cell.name.replace("-grid", "").removeprefix(f"{args.dataset}-")
            row = {"cell": label, "seed": seed, "target": target, "protocol": theirs, "levers": mine}
            rows.append(row)
            print(f"{row['cell']} seed {seed}: {_line(row)}", file=sys.stderr)
    _print(rows, args, time.monotonic() - started)
    return rows


def _pct(mine: float, theirs: float) -> str:
    return f"{100 * (1 - mine / theirs):.0f}%" if math.isfinite(mine) and theirs else "not reached"


def _line(row: dict) -> str:
    p, g = row["protocol"], row["levers"]
    return (
        f"target {row['target']:.4f}; to target {p['to_target_j']:.0f} J (grid) vs {g['to_target_j']:.0f} J "
        f"(levers), saved {_pct(g['to_target_j'], p['to_target_j'])}"
    )


def _print(rows: list[dict], args, seconds: float) -> None:
    source = ",".join(sorted({r[k]["source"] for r in rows for k in ("protocol", "levers")}))
    label = " [SIMULATED energy, not a measurement]" if "simulated" in source else ""
    print(f"machine: {platform.machine()}, Python {platform.python_version()}; energy source {source}{label}")
    print(f"scale {args.scale:g}, {args.dataset}, levers: bayes + {args.levers}; {seconds:.0f} s in all")
    print(
        "| cell | seed | A* (grid best) | target | grid J to target | levers J to target | saved | "
        "grid epochs to target | levers epochs to target | saved | grid J in all | levers J in all | "
        "levers best | levers trials (stopped) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        p, g = r["protocol"], r["levers"]
        print(
            f"| {r['cell']} | {r['seed']} | {p['best']:.4f} | {r['target']:.4f} | {p['to_target_j']:.0f} | "
            f"{g['to_target_j']:.0f} | {_pct(g['to_target_j'], p['to_target_j'])} | "
            f"{p['to_target_epochs']:.0f} | {g['to_target_epochs']:.0f} | "
            f"{_pct(g['to_target_epochs'], p['to_target_epochs'])} | {p['total_j']:.0f} | "
            f"{g['total_j']:.0f} | {g['best']:.4f} | {g['trials']} ({g['stopped']}) |"
        )
    reached = [r for r in rows if math.isfinite(r["levers"]["to_target_j"])]
    mine = sum(r["levers"]["to_target_j"] for r in reached)
    theirs = sum(r["protocol"]["to_target_j"] for r in reached)
    savings = [1 - r["levers"]["to_target_j"] / r["protocol"]["to_target_j"] for r in reached]
    spent = sum(r["levers"]["total_j"] for r in rows), sum(r["protocol"]["total_j"] for r in rows)
    epochs = (
        sum(r["levers"]["to_target_epochs"] for r in reached),
        sum(r["protocol"]["to_target_epochs"] for r in reached),
    )
    all_epochs = sum(r["levers"]["epochs"] for r in rows), sum(r["protocol"]["epochs"] for r in rows)
    if reached:
        print(
            f"levers reached the target in {len(reached)} of {len(rows)} cell-seeds; over those, energy "
            f"to the target {mine:.0f} J against {theirs:.0f} J ({_pct(mine, theirs)} less), median "
            f"saving per cell-seed {100 * statistics.median(savings):.0f}%"
        )
    else:
        print("levers never reached the target")
    print(f"trial-epochs to the target over those: {epochs[0]} against {epochs[1]} ({_pct(*epochs)} less)")
    print(f"energy in all (every cell-seed): {spent[0]:.0f} J against {spent[1]:.0f} J ({_pct(*spent)} less)")
    print(f"trial-epochs in all: {all_epochs[0]} against {all_epochs[1]} ({_pct(*all_epochs)} less)")


if __name__ == "__main__":
    main()
