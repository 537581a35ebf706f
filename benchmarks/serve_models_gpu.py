"""The study's inference comparison on a GPU: five models x {greedy, fixed:32, fixed:128} at 64 Hz,
fp32 and bf16, energy from NVML, next to the bare-loop numbers of reference/h100.md.

    source .gpubundle/activate && python3 benchmarks/serve_models_gpu.py --out results/serve-gpu \
        [--requests 1024] [--reference ../shared/reference/h100.md]

About 30 runs of --requests / 64 s each plus warm-ups (1024 requests: about 12 minutes on an
H100); the study ran 8192 per run. Prints a markdown table: served energy per image (idle
included, and idle-free) beside the bare loop's J/image at the batch size the policy aims at
(greedy at 64 Hz serves batches of about 1 on an H100). Needs --energy nvml to work.
"""

from __future__ import annotations

import argparse
import re
from argparse import RawDescriptionHelpFormatter
from pathlib import Path

import pandas as pd
from serve_common import markdown

from greenray.config import BenchConfig
from greenray.serve.bench import run_bench
from greenray.serve.zoo import STUDY_MODELS

POLICIES = "greedy,fixed:32,fixed:128"
COLUMNS = (
    "model",
    "precision",
    "policy",
    "served",
    "mean_batch_size",
    "energy_per_image_j",
    "idle_free_energy_per_image_j",
    "bare_j_per_image",
    "bare_dyn_j_per_image",
    "p99_latency_s",
    "max_latency_s",
    "peak_power_w",
    "energy_source",
)


def reference_table(path: Path) -> pd.DataFrame:
    """reference/h100.md's table: model, precision, batch, J/image, dyn J/image."""
    rows = []
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 8 and re.fullmatch(r"\d+", cells[2]):
            model, precision, batch, _, joules, dyn = cells[:6]
            rows.append(
                {
                    "model": model,
                    "precision": precision,
                    "batch": int(batch),
                    "bare_j_per_image": float(joules),
                    "bare_dyn_j_per_image": float(dyn),
                }
            )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("results/serve-gpu"))
    parser.add_argument("--requests", type=int, default=1024)
    parser.add_argument("--frequency", type=float, default=64.0)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--models", default=",".join(STUDY_MODELS))
    parser.add_argument("--reference", type=Path, default=Path("../shared/reference/h100.md"))
    args = parser.parse_args()

    for precision in args.precisions.split(","):
        config = BenchConfig.from_flat(
            {
                "models": args.models,
                "policies": POLICIES,
                "frequencies": [args.frequency],
                "requests": args.requests,
                "precision": precision,
                "device": "cuda",
                "energy": "nvml",
                "require_energy": True,
            }
        )
        run_bench(config, args.out, resume=True)  # a rerun after an interruption does only what is missing
    runs = pd.read_parquet(args.out / "runs.parquet")
    # the batch size a policy aims at: N for fixed:N[@MS], 1 for greedy at 64 Hz on an H100
    runs["batch"] = runs["policy"].map(lambda p: int(p[6:].split("@")[0]) if p.startswith("fixed:") else 1)
    if args.reference.exists():
        runs = runs.merge(reference_table(args.reference), on=["model", "precision", "batch"], how="left")
    columns = [c for c in COLUMNS if c in runs]
    print(f"device: {runs['model_device'].iloc[0]}; {args.frequency:g} Hz, {args.requests} requests per run")
    print(markdown(runs[columns]))


if __name__ == "__main__":
    main()
