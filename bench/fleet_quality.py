"""Per-entity quality of fleet mode against the baselines, over datasets and seeds.

    python bench/fleet_quality.py --data-dir ../shared/data --datasets MSL SMAP SMD --seeds 0 1 2

For each dataset and seed: `train.py --per-entity` (through commands.training.train) with
the given preset and flags, then `evaluate.py --per-entity` (evaluation.fleet_report) on the
bundle, every baseline beside the model on the same points with the same smoothing. SMD reads
DATA_DIR/SMD (the OmniAnomaly layout). Each run's metrics JSON is kept under --output-dir; the
table gives, per method and metric, the mean over entities averaged over seeds, ± the standard
deviation of that mean across seeds, and [the mean over seeds of the std across entities].
With --rescore, existing bundles are evaluated again without training (to compare scorings);
with --aggregate, the metrics files already in --output-dir are tabulated without any run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from commands.training import train  # noqa: E402
from evaluation.baselines import DEFAULT_FLEET_BASELINES, parse_baselines  # noqa: E402
from evaluation.fleet_report import evaluate_fleet, fleet_summary  # noqa: E402
from model.config import DetectorConfig, preset_values  # noqa: E402
from model.fleet import fleet_path  # noqa: E402
from runtime.atomic import write_json  # noqa: E402

HEADLINE = ("roc_auc", "pr_auc", "tsb_vus_pr", "f1", "event_f1", "flagged_share", "within_flag_bound")


def dataset_dir(data_dir: Path, name: str) -> Path:
    return data_dir / "SMD" if name == "SMD" else data_dir


def run(args: argparse.Namespace, name: str, seed: int) -> dict:
    folder = args.output_dir / f"{name}_seed{seed}"
    data = dataset_dir(args.data_dir, name)
    overrides = json.loads(args.set) if args.set else {}
    config = DetectorConfig(**{**preset_values(args.preset, name), "seed": seed, "device": args.device, **overrides})
    started = time.perf_counter()
    if not args.rescore:
        train(name, data, config, folder, per_entity=True, jobs=args.jobs, normalisation=args.normalisation,
              log=lambda line: print(f"  {line}", flush=True), progress=False)  # fmt: skip
    trained = time.perf_counter() - started
    baselines = DEFAULT_FLEET_BASELINES if args.baselines is None else parse_baselines(args.baselines)
    evaluation = evaluate_fleet(fleet_path(folder, name), name, data, baselines=baselines,
                                device=args.device, seed=seed, whole_series=not args.no_whole_series,
                                score=args.score, score_channels=args.score_channels,
                                smooth=args.smooth, jobs=args.jobs)  # fmt: skip
    summary = fleet_summary(evaluation)
    summary["seconds"] = {"train": trained, "evaluate": time.perf_counter() - started - trained}
    summary["config"] = config.to_dict()
    write_json(summary, folder / f"{name}_fleet_metrics{args.tag}.json")
    print(f"  {name} seed {seed}: trained in {trained:.0f} s, evaluated in {summary['seconds']['evaluate']:.0f} s",
          flush=True)  # fmt: skip
    return summary


def table(name: str, runs: list[dict]) -> str:
    methods = runs[0]["methods"]
    graded = runs[0]["aggregate"]["model"]["roc_auc"]["n"]  # ranking over these; alarms over every entity
    lines = [
        f"### {name}: {len(runs[0]['entities'])} entities ({graded} graded), seeds "
        f"{', '.join(str(r['config']['seed']) for r in runs)}; per-entity protocol",
        "",
        "| method | " + " | ".join(HEADLINE) + " |",
        "|---|" + "---|" * len(HEADLINE),
    ]
    for method in methods:
        cells = []
        for metric in HEADLINE:
            if any(metric not in r["aggregate"][method] for r in runs):  # metrics files of older code
                cells.append("-")
                continue
            means = np.array([r["aggregate"][method][metric]["mean"] for r in runs], dtype=float)
            spreads = np.array([r["aggregate"][method][metric]["std"] for r in runs], dtype=float)
            across_seeds = means.std(ddof=1) if len(means) > 1 else 0.0  # sample std, as bench/quality.py
            cells.append(f"{means.mean():.3f} ± {across_seeds:.3f} [{spreads.mean():.3f}]")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    seconds = [r["seconds"]["train"] for r in runs]
    lines += ["", f"training wall time per seed: {np.mean(seconds):.0f} s (all entities)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--datasets", nargs="+", default=["MSL", "SMAP", "SMD"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--preset", default="fleet")
    parser.add_argument("--set", default=None, help='JSON of config fields to override, e.g. \'{"d_model": 128}\'')
    parser.add_argument("--normalisation", default="entity")
    parser.add_argument("--jobs", type=int, default=2, help="entities trained and evaluated at once")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output-dir", type=Path, default=Path("artifacts/fleet_quality"))
    parser.add_argument("--rescore", action="store_true", help="evaluate the bundles already in --output-dir")
    parser.add_argument("--no-whole-series", action="store_true", help="skip the whole-series panel (faster)")
    parser.add_argument("--tag", default="", help="suffix of the metrics files, to keep variants apart")
    parser.add_argument("--score", default=None, help="evaluate with this score instead of the bundle's")
    parser.add_argument("--score-channels", default=None)
    parser.add_argument("--smooth", type=int, default=None)
    parser.add_argument("--aggregate", action="store_true", help="tabulate the metrics files of earlier runs")
    parser.add_argument("--baselines", default=None, help="as evaluate.py --baselines (default: the default set)")
    args = parser.parse_args(argv)
    for name in args.datasets:
        if args.aggregate:
            stem = f"{name}_fleet_metrics{args.tag}.json"
            paths = [args.output_dir / f"{name}_seed{seed}" / stem for seed in args.seeds]
            missing = [str(path) for path in paths if not path.is_file()]
            if missing:  # bundles without their metrics (another checkout's, or runs that stopped): run first
                print(f"error: --aggregate found no {missing[0]}; run this command without --aggregate (or "
                      "with --rescore, to evaluate bundles already trained) to write it", file=sys.stderr)  # fmt: skip
                return 2
            runs = [json.loads(path.read_text()) for path in paths]
        else:
            runs = [run(args, name, seed) for seed in args.seeds]
        print(table(name, runs), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
