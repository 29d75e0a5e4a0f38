"""Per-entity input normalisation on SMAP and MSL (issue 9, "honest detection quality").

    OMP_NUM_THREADS=1 .venv/bin/python bench/entity_norm.py --datasets MSL
    OMP_NUM_THREADS=1 .venv/bin/python bench/entity_norm.py --datasets SMAP

SMAP and MSL concatenate 55 / 27 channels (entities) with different normal levels, and the project
z-scores the concatenated TRAIN with one mean and std per column. Here each entity's TRAIN and TEST
rows are z-scored with that entity's own TRAIN mean and std per column (entities from
DATA_DIR/DATASET/channels.csv; a column whose std in that entity's TRAIN is below the project's
MIN_STD is only mean-centred). With --std-floor F each entity's std per column is raised to at least F x
that column's std over the whole concatenated raw TRAIN (after the MIN_STD guard; the mean stays the
entity's own), so that nearly flat entities do not blow up their TEST values. The paper architecture
is trained on the normalised concatenated TRAIN with quality.py's bench settings and scored on the
normalised TEST; the solver's own global normaliser is replaced by the identity, so that nothing
rescales the per-entity inputs again.

Rows are four score variants from one forward pass (quality.score_all_variants): the default
(reconstruction error of the target channel, centred moving average 50), reconstruction over all
channels unsmoothed, discrepancy smoothed 50 and the paper score. Columns: ROC-AUC, PR-AUC and VUS-PR
under the default protocol (threshold from TRAIN scores only) and PA F1 under the paper protocol;
mean ± sample std over the seeds. The test labels only grade. On MSL the table carries the
pre-registered verdict against global normalisation (bench/results/quality_MSL.md, default row).
Markdown goes to --results (entity_norm_{DATASET}.md, rewritten after every seed), JSON per seed to
--output.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import model.solver as solver  # noqa: E402
from bench.quality import (  # noqa: E402
    DATA,
    aggregate,
    changes_from_paper,
    default_protocol,
    log,
    machine,
    paper_protocol,
    score_all_variants,
)
from data_factory.dataset import TimeSeriesDataset  # noqa: E402
from data_factory.registry import load_dataset  # noqa: E402
from data_factory.windows import MIN_STD, Normalizer  # noqa: E402
from model.scoring import smooth_scores  # noqa: E402
from model.solver import TrainConfig  # noqa: E402
from model.transformer import ModelConfig  # noqa: E402

SPAN = 50
ANOMALY_RATIO = 1.0  # paper protocol: flag the top 1 % of TRAIN + TEST scores
PERCENTILE = 99.0  # default protocol: 99th percentile of TRAIN scores
# row -> (score of score_all_variants, smoothing span)
ROWS = {
    f"reconstruction, target channel, smoothed {SPAN} = default": ("reconstruction_target", SPAN),
    "reconstruction, all channels": ("reconstruction", 0),
    f"discrepancy, smoothed {SPAN}": ("discrepancy", SPAN),
    "paper": ("paper", 0),
}
DEFAULT_ROW = next(iter(ROWS))
COLUMNS = (("default", "roc_auc", "ROC-AUC"), ("default", "pr_auc", "PR-AUC"), ("default", "vus_pr", "VUS-PR"))
COLUMNS += (("paper", "pa_f1", "PA F1"),)
# Global normalisation, same bench (bench/results/quality_MSL.md, default row): mean, sample std.
GLOBAL_MSL = {"roc_auc": (0.7165, 0.0275), "vus_pr": (0.2501, 0.0155)}
EXTREME = 100  # |z| above which a per-entity-normalised TEST value counts as exploded


def read_entities(folder: Path) -> list[dict]:
    """Each entity's name and its (start, length) in the concatenated TRAIN and TEST arrays."""
    with (folder / "channels.csv").open() as handle:
        return [
            {
                "name": row["chan_id"],
                "train": (int(row["train_start"]), int(row["train_len"])),
                "test": (int(row["test_start"]), int(row["test_len"])),
            }
            for row in csv.DictReader(handle)
        ]


def entity_slices(entity: dict) -> tuple[slice, slice]:
    (a, n), (b, m) = entity["train"], entity["test"]
    return slice(a, a + n), slice(b, b + m)


def normalise_per_entity(
    dataset: TimeSeriesDataset, entities: list[dict], std_floor: float | None = None
) -> tuple[TimeSeriesDataset, list[dict]]:
    """The dataset with every entity z-scored by its own TRAIN statistics, and those statistics per entity."""
    floor = None if std_floor is None else std_floor * dataset.train.std(axis=0, dtype=np.float64)
    train, test = np.empty_like(dataset.train), np.empty_like(dataset.test)
    covered = np.zeros(len(train), bool), np.zeros(len(test), bool)
    stats, target = [], dataset.target_channels[0]
    for entity in entities:
        rows_train, rows_test = entity_slices(entity)
        # The same rule as the global Normalizer: near-constant columns keep their scale (std -> 1).
        own = Normalizer.fit(dataset.train[rows_train])
        floored = np.zeros(dataset.n_channels, bool) if floor is None else own.std < floor
        if floored.any():
            own = Normalizer(own.mean, np.maximum(own.std, floor).astype(np.float32))
        train[rows_train], test[rows_test] = (
            own.transform(dataset.train[rows_train]),
            own.transform(dataset.test[rows_test]),
        )
        covered[0][rows_train], covered[1][rows_test] = True, True
        raw_std = dataset.train[rows_train].std(axis=0, dtype=np.float64)
        stats.append(
            {
                "entity": entity["name"],
                "target_std": float(raw_std[target]),
                "guarded": int((raw_std < MIN_STD).sum()),
                "floored": int(floored.sum()),
                "floored_target": bool(floored[target]),
                "test_max_z": float(np.abs(test[rows_test, target]).max()),
            }
        )
    if not (covered[0].all() and covered[1].all()):
        raise SystemExit("error: channels.csv does not cover every TRAIN and TEST row")
    return replace(dataset, train=train, test=test), stats


class IdentityNormalizer(Normalizer):
    """What the solver fits instead of its global z-score: mean 0, std 1, so the inputs stay per-entity."""

    @classmethod
    def fit(cls, train: np.ndarray) -> Normalizer:
        n_channels = train.shape[1]
        return Normalizer(np.zeros(n_channels, np.float32), np.ones(n_channels, np.float32))


def train_on(
    dataset: TimeSeriesDataset,
    model_config: ModelConfig,
    train_config: TrainConfig,
    log_line: Callable[[str], None] | None = None,
) -> solver.TrainResult:
    """train_anomaly_transformer on inputs normalised already: the solver's own normaliser is swapped
    for the identity (no existing file changes). Epoch lines go to log_line (default: stderr, indented)."""
    with mock.patch.object(solver, "Normalizer", IdentityNormalizer):
        result = solver.train_anomaly_transformer(
            dataset, model_config, train_config, log=log_line or (lambda line: log(f"  {line}")), progress=False
        )
    if not (np.all(result.normalizer.mean == 0) and np.all(result.normalizer.std == 1)):
        raise RuntimeError("the solver still fitted its own normaliser")
    return result


def run_seed(dataset: TimeSeriesDataset, model_config: ModelConfig, train_config: TrainConfig) -> dict:
    """Train one seed on the per-entity-normalised TRAIN, score TRAIN and TEST once, grade every row."""
    started = time.perf_counter()
    result = train_on(dataset, model_config, train_config)
    trained = time.perf_counter()
    options = (train_config.batch_size, train_config.temperature, dataset.target_channels, train_config.amp)
    train_values = score_all_variants(result.model, dataset.train, *options)
    test_values = score_all_variants(result.model, dataset.test, *options)
    scored = time.perf_counter()
    # Same check as quality.py: this script's paper scores must be the solver's own.
    if not np.allclose(train_values["paper"], result.train_scores, rtol=1e-5, atol=1e-12):
        raise RuntimeError("the paper scores of this script differ from the solver's train scores")
    labels, win = dataset.test_labels, model_config.win_size
    methods = {}
    for row, (variant, span) in ROWS.items():
        train_scores, test_scores = (
            smooth_scores(train_values[variant], span),
            smooth_scores(test_values[variant], span),
        )
        methods[row] = {
            "paper": paper_protocol(labels, train_scores, test_scores, ANOMALY_RATIO, win),
            "default": default_protocol(labels, train_scores, test_scores, PERCENTILE),
        }
    seconds = {"train": trained - started, "score": scored - trained, "total": time.perf_counter() - started}
    return {"seed": train_config.seed, "methods": methods, "seconds": seconds}


def cell(stats: dict) -> str:
    return f"{stats['mean']:.4f} ± {stats['std']:.4f}"


def table(summary: dict) -> list[str]:
    lines = ["| score | " + " | ".join(label for *_, label in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for row, protocols in summary.items():
        lines.append(f"| {row} | " + " | ".join(cell(protocols[p][key]) for p, key, _ in COLUMNS) + " |")
    return lines


def msl_verdict(summary: dict, n_seeds: int) -> list[str]:
    """The pre-registered decision: default score's mean ROC-AUC and VUS-PR both above global + one of our std."""
    default = summary[DEFAULT_ROW]["default"]
    lines, wins = [], []
    for key, label in (("roc_auc", "ROC-AUC"), ("vus_pr", "VUS-PR")):
        ours, (reference, reference_std) = default[key], GLOBAL_MSL[key]
        bar = reference + ours["std"]
        wins.append(ours["mean"] > bar)
        lines.append(
            f"- {label}: per-entity {cell(ours)} vs global {reference:.4f} ± {reference_std:.4f}; "
            f"bar = global mean + our std = {bar:.4f} -> {'above' if wins[-1] else 'not above'}"
        )
    outcome = "WINS" if all(wins) else "does NOT win"
    partial = "" if n_seeds == 3 else f" (only {n_seeds} of 3 seeds: provisional)"
    return [f"**Pre-registered verdict (MSL only): per-entity normalisation {outcome}{partial}.**", "", *lines]


def inputs_report(dataset: TimeSeriesDataset, stats: list[dict]) -> list[str]:
    """How the per-entity inputs look: tiny TRAIN stds blow up TEST values (labels only describe)."""
    target = np.abs(dataset.test[:, dataset.target_channels[0]])
    extreme = target > EXTREME
    exploding = sorted((s for s in stats if s["test_max_z"] > EXTREME), key=lambda s: -s["test_max_z"])
    # What the bypassed global z-score would have applied to the per-entity-normalised TRAIN.
    global_std = dataset.train.std(axis=0, dtype=np.float64)
    moving = global_std[1:][global_std[1:] >= MIN_STD]  # the others it would leave unscaled
    labelled = f", {dataset.test_labels[extreme].mean():.1%} of them labelled" if extreme.any() else ""
    return [
        f"- target channel after per-entity normalisation: TEST max |z| {target.max():.4g}; "
        f"{extreme.mean():.3%} of TEST points have |z| > {EXTREME}{labelled}",
        f"- entities whose target TEST |z| exceeds {EXTREME} (max |z|, raw TRAIN std): "
        + (", ".join(f"{s['entity']} ({s['test_max_z']:.4g}, {s['target_std']:.3g})" for s in exploding) or "none"),
        f"- columns only mean-centred (TRAIN std < {MIN_STD:g}), over entities x columns: "
        f"{sum(s['guarded'] for s in stats)} of {len(stats) * dataset.n_channels}",
        f"- entity-columns whose std the floor raised: {sum(s['floored'] for s in stats)} of "
        f"{len(stats) * dataset.n_channels}; target channel in {sum(s['floored_target'] for s in stats)} "
        f"of {len(stats)} entities",
        f"- the solver's global z-score would have divided by std {global_std[0]:.4f} (target) and "
        f"{moving.min():.4f}..{moving.max():.4f} (the {len(moving)} non-constant command columns): "
        "not a no-op, so it is bypassed",
    ]


def report(dataset: TimeSeriesDataset, record: dict, stats: list[dict], std_floor: float | None = None) -> str:
    summary, runs = aggregate(record["runs"]), record["runs"]
    default_values = summary[DEFAULT_ROW]["default"]
    per_seed = ", ".join(
        f"seed {run['seed']}: ROC-AUC {roc:.4f}, PR-AUC {pr:.4f}, VUS-PR {vus:.4f}"
        for run, roc, pr, vus in zip(
            runs, *(default_values[key]["values"] for key in ("roc_auc", "pr_auc", "vus_pr")), strict=True
        )
    )
    seconds = [run["seconds"] for run in runs]
    totals = ", ".join(f"{s['total']:.0f} s" for s in seconds)
    lines = [
        f"### {dataset.name}, per-entity input normalisation"
        + ("" if std_floor is None else f", std floor {std_floor:g} x global TRAIN std")
        + f": {len(dataset.train):,} train / {len(dataset.test):,} "
        f"test points, {dataset.test_labels.mean():.2%} anomalous, {dataset.n_channels} channels, "
        f"{len(stats)} entities",
        "",
        f"Command: `{record['command']}`",
        "",
        f"Seeds {', '.join(str(run['seed']) for run in runs)}; mean ± sample std over the seeds. "
        f"Model: {record['model']}. Training: {record['training']}.",
        f"Changed from the paper: {'; '.join(record['changes_from_paper'])}.",
        f"Wall time {record['wall_seconds'] / 60:.1f} min: per seed training "
        f"{np.mean([s['train'] for s in seconds]):.0f} s, "
        f"scoring TRAIN + TEST {np.mean([s['score'] for s in seconds]):.0f} s "
        f"(per seed total: {totals}). Machine: {record['machine']}.",
        "",
        f"ROC-AUC, PR-AUC, VUS-PR: default protocol ({PERCENTILE:g}th percentile of TRAIN scores, no test data). "
        f"PA F1: paper protocol (top {ANOMALY_RATIO:g} % of TRAIN + TEST scores, point adjustment).",
        "",
        *table(summary),
        "",
        f"Default score per seed: {per_seed}.",
        "",
        "Inputs:",
        "",
        *inputs_report(dataset, stats),
    ]
    if dataset.name == "MSL":
        lines += ["", *msl_verdict(summary, len(runs))]
    return "\n".join(lines)


def run_dataset(name: str, args: argparse.Namespace) -> None:
    raw = load_dataset(name, args.data_dir)
    dataset, stats = normalise_per_entity(raw, read_entities(args.data_dir / name), args.std_floor)
    model_config = ModelConfig(
        n_channels=dataset.n_channels, win_size=100, d_model=args.d_model, n_heads=8, e_layers=3, d_ff=args.d_model
    )
    host = machine()
    record = {"command": " ".join(["OMP_NUM_THREADS=1", ".venv/bin/python", *sys.argv]), "runs": []}
    started = time.perf_counter()
    for seed in args.seeds:
        train_config = TrainConfig(
            epochs=1, batch_size=64, lr=1e-4, k=3.0, val_ratio=0.0, train_stride=args.train_stride, seed=seed,
            device="cpu", score_variant="paper",  # the solver's TRAIN scores check this script's paper scores
        )  # fmt: skip
        log(f"{name} seed {seed}: training")
        record["runs"].append(run_seed(dataset, model_config, train_config))
        log(f"{name} seed {seed}: done in {record['runs'][-1]['seconds']['total']:.0f} s")
        record.update(
            model={k: v for k, v in model_config.to_dict().items() if k != "n_channels"},
            training={k: v for k, v in asdict(train_config).items() if k not in ("seed", "device")},
            changes_from_paper=changes_from_paper(model_config, train_config, dataset.name),
            machine=f"{host['processor']}, {host['torch_threads']} torch thread(s), torch {host['torch']}, cpu",
            wall_seconds=time.perf_counter() - started,
        )
        (args.output / f"entity_norm_{name}_seed{seed}.json").write_text(json.dumps(record["runs"][-1], indent=2))
        # Rewritten after every seed, so that a stopped run keeps the seeds that finished.
        text = report(dataset, record, stats, args.std_floor)
        (args.results / f"entity_norm_{name}.md").write_text(text + "\n")
    print(text + "\n", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--data-dir", type=Path, default=DATA, help="holds SMAP/ and MSL/ (default: ../shared/data)")
    add("--datasets", nargs="+", default=["MSL"], choices=("SMAP", "MSL"))
    add("--seeds", nargs="+", type=int, default=[0, 1, 2])
    add("--train-stride", type=int, default=50, help="the bench's setting (paper: 1)")
    add("--d-model", type=int, default=512, help="also d_ff; lower only for a smoke test")
    add("--std-floor", type=float, default=None, help="floor each entity's std at F x global TRAIN std (default: none)")
    add("--results", type=Path, default=Path("bench/results"), help="where the markdown goes")
    add("--output", type=Path, default=Path("artifacts/bench"), help="where the per-seed JSON goes")
    args = parser.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    args.output.mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        run_dataset(name, args)


if __name__ == "__main__":
    main()
