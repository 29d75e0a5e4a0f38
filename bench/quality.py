"""Detection quality on SMAP and MSL (or SMD, PSM): the model beside the random and PCA baselines, under both protocols.

    python bench/quality.py --data-dir ../shared/data                          # SMAP and MSL, seeds 0 1 2
    python bench/quality.py --datasets MSL --seeds 0 1 2 --epochs 1 --train-stride 100 --batch-size 64
    python bench/quality.py --data-dir DIR --datasets SMD PSM   # see bench/results/untouched_grading_plan.md

On SMD and PSM, which name no target channel, "target channels" means all channels; the paper
protocol's anomaly ratio is the reference's (0.5 % for SMD, 1 % otherwise) unless --anomaly-ratio
says otherwise, and the paper's recipe the tables compare against is `--preset paper` for that
dataset (model.config.preset_values: on SMD 10 epochs on windows 100 steps apart).

For each dataset and seed it fits a Detector (`Detector(DetectorConfig(...)).fit(dataset)`, the
paper's architecture on TRAIN, scoring TRAIN with the paper score), then scores TRAIN and TEST with
`detector.rescored(settings).score_points(...)`, the library's own non-overlapping windows, once
per score setting. The rows: every registered score (model.scores.SCORES: `paper`, the published
criterion, `reconstruction` and `discrepancy`) over all channels and over the target channels
(SMAP/MSL: the telemetry value), unsmoothed; then the scoring options: the centred
50-point moving average of the all-channel reconstruction and discrepancy scores and of the
target-channel paper score, and the Detector's default scoring (the reconstruction error of the
target channels, smoothed), which is train.py's default. A smoothed row is smoothed from its
unsmoothed pass (model.scoring.smooth_scores, bit-identical to scoring with `smooth` set), so each
distinct unsmoothed setting costs one forward pass over TRAIN and TEST: six on SMAP and MSL, three
on SMD and PSM, where the target channels are all of them. PCA is also given the target channels
and the same smoothing. The options were chosen on MSL alone (see docs/research-log.md); every row is
shown, for both datasets. Two protocols grade each score:

- paper:   threshold = 99th percentile of concat(TRAIN, TEST) scores (reads test scores), then
           point adjustment (PA); precision, recall and F1 after PA, as the paper reports them.
           "ref. weighting" repeats it with TRAIN scores weighted as the reference code weighs them
           (it scores TRAIN with every stride-1 window, so TRAIN holds ~97 % of its pooled values).
- default: threshold = 99th percentile of TRAIN scores (no test data); point F1, ROC-AUC, PR-AUC,
           VUS-PR and the PA%K F1 area over K = 0..100.

No threshold, setting or score is chosen with the test labels; they only grade. The diagnostics
(mean association discrepancy and reconstruction error on normal and on anomalous test points, and
how much of each regular test window's softmax weight the paper score puts on one step, computed
from the per-point discrepancy scores) also read the labels, only to describe the trained model.
Per-step sigma is not reported: only the model's internals hold it (evaluate.py --explain saves it
for chosen windows).

Training on a 2-core CPU cannot follow the paper's schedule (3 epochs at stride 1 is about
405,000 SMAP windows, some 10 hours here): the defaults shorten it, and every table lists each
setting that differs from the paper. Mean and spread (sample std) are over the seeds; the PCA
baseline is deterministic, so its spread is 0. Tables go to stdout and, as markdown and JSON, to
--output (default artifacts/bench): quality_{DATASET}.md and quality_{DATASET}.json, plus each
seed's per-point unsmoothed model scores (quality_{DATASET}_seed{S}_scores.npz: `{split}_{score}`
over all channels, `{split}_{score}_target` over the target channels, split train or test) for
later analysis.

Each seed's results are also written as soon as it finishes (quality_{DATASET}_seed{S}.json, with
the seed's DetectorConfig under `config`), so a stopped run loses only the seed in progress, and
seeds run in separate calls (or on another machine) can be tabled together with --aggregate, which
trains nothing and refuses seeds whose settings, protocol, rows or data differ:

    python bench/quality.py --datasets MSL --seeds 0 --epochs 3 --train-stride 1 --batch-size 256 --device cuda
    python bench/quality.py --datasets MSL --seeds 0 1 2 --aggregate      # tables from the saved seeds

--device cuda trains and scores on a GPU in float32, as the paper; --amp adds bfloat16 autocast to
training (a change from the paper, which the tables' training settings then show), while the
scores graded stay float32 (Detector.score_points does not autocast). bench/gpu_check.sh runs the
paper's full schedule this way inside a short GPU lease.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_factory.dataset import TimeSeriesDataset  # noqa: E402
from data_factory.registry import load_dataset  # noqa: E402
from evaluation.baselines import pca_baseline_scores, random_baseline_scores  # noqa: E402
from evaluation.grading import grade  # noqa: E402
from evaluation.metrics import point_adjust, precision_recall_f1  # noqa: E402
from evaluation.range_metrics import event_metrics  # noqa: E402
from evaluation.report import reference_anomaly_ratio  # noqa: E402
from evaluation.thresholds import choose_threshold  # noqa: E402
from model import DEFAULT_SCORE, SCORES, Detector, DetectorConfig, ScoreSettings, resolve_device  # noqa: E402
from model.config import preset_values  # noqa: E402
from model.score_settings import resolve_score_settings  # noqa: E402
from model.scoring import smooth_scores  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DATASETS = ("SMAP", "MSL", "SMD", "PSM")
PAPER_F1_PA = {"SMAP": 0.9669, "MSL": 0.9359, "SMD": 0.9233, "PSM": 0.9789}  # Xu et al. 2022, Table 1
# Settings that are not part of the paper's recipe (where and how it ran, or the default protocol's).
NOT_RECIPE = ("seed", "device", "num_workers", "deterministic", "threshold_percentile")
ARCHITECTURE = ("win_size", "d_model", "n_heads", "e_layers", "d_ff", "dropout")
CHANNEL_SPECS = (("all", ""), ("target", "_target"))  # the channel spec and its suffix in the saved scores
PAPER_COLUMNS = (
    ("pa_precision", "PA precision"),
    ("pa_recall", "PA recall"),
    ("pa_f1", "PA F1"),
    ("flagged_share", "test share flagged"),
    ("pa_ref_f1", "PA F1, ref. weighting"),
    ("ref_flagged_share", "test share flagged, ref. weighting"),
)
DEFAULT_COLUMNS = (
    ("f1", "point F1"),
    ("roc_auc", "ROC-AUC"),
    ("pr_auc", "PR-AUC"),
    ("vus_pr", "VUS-PR"),
    ("pa_k_f1_auc", "PA%K F1 area"),
)
Resolve = Callable[[str, str | None, int | None], ScoreSettings]  # (score, channel spec, smooth) -> settings


def variant_scorer(
    detector: Detector, train: np.ndarray, test: np.ndarray
) -> Callable[[ScoreSettings], tuple[np.ndarray, np.ndarray]]:
    """TRAIN and TEST scores (raw series in, per-point scores out) under any ScoreSettings.

    Each unsmoothed setting is one pass of detector.rescored(settings).score_points over each split;
    its smoothed variants reuse that pass.
    """
    passes: dict[ScoreSettings, tuple[np.ndarray, np.ndarray]] = {}

    def scores(settings: ScoreSettings) -> tuple[np.ndarray, np.ndarray]:
        unsmoothed = replace(settings, smooth=0)
        if unsmoothed not in passes:
            scorer = detector.rescored(unsmoothed)
            passes[unsmoothed] = (scorer.score_points(train).scores, scorer.score_points(test).scores)
        train_scores, test_scores = passes[unsmoothed]
        return smooth_scores(train_scores, settings.smooth), smooth_scores(test_scores, settings.smooth)

    return scores


def model_rows(resolve: Resolve) -> tuple[dict[str, ScoreSettings], dict[str, ScoreSettings]]:
    """The table's model rows and the scoring of each: every score over all channels, unsmoothed
    (listed before the baselines), then the target-channel and smoothed options."""
    span = SCORES[DEFAULT_SCORE].smooth
    plain = {f"model ({name} score)": resolve(name, "all", 0) for name in SCORES}
    options = {f"model ({name}, target channels)": resolve(name, "target", 0) for name in SCORES}
    options |= {
        f"model (reconstruction, smoothed {span})": resolve("reconstruction", "all", span),
        f"model (discrepancy, smoothed {span})": resolve("discrepancy", "all", span),
        f"model (paper, target channels, smoothed {span})": resolve("paper", "target", span),
    }
    default = resolve(DEFAULT_SCORE, None, None)  # the score's own channels and smoothing
    channels = SCORES[DEFAULT_SCORE].channels
    options[f"model ({DEFAULT_SCORE}, {channels} channels, smoothed {default.smooth}) = default"] = default
    return plain, options


def top_window_weight(discrepancy_scores: np.ndarray, win: int, temperature: float) -> float:
    """Mean over the regular (non-overlapping) windows of the largest softmax(-AssDis x T) weight: the share
    of a window's paper-score weight on its top step. discrepancy_scores (N,) are -AssDis per point."""
    whole = len(discrepancy_scores) // win * win
    logits = discrepancy_scores[:whole].reshape(-1, win).astype(np.float64) * temperature  # (windows, win)
    return float((1 / np.exp(logits - logits.max(axis=1, keepdims=True)).sum(axis=1)).mean())


def reference_weighted_threshold(train_scores: np.ndarray, test_scores: np.ndarray, ratio: float, win: int) -> float:
    """The paper threshold as the reference code weighs it: percentile 100 - r of TRAIN + TEST energies,
    where its TRAIN energies come from every stride-1 window (each point about `win` times) and its TEST
    energies from non-overlapping windows. Our TRAIN scores are a one-in-`win` sample of those windows, so
    each stands for (N - win + 1) * win / N of the reference's values; reads no labels.
    """
    weight = (len(train_scores) - win + 1) * win / len(train_scores)
    values = np.concatenate([train_scores, test_scores])
    weights = np.concatenate([np.full(len(train_scores), weight), np.ones(len(test_scores))])
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    position = np.searchsorted(cumulative, (1 - ratio / 100) * cumulative[-1])
    return float(values[order][min(position, len(values) - 1)])


def windows_flagged(predictions: np.ndarray, win: int) -> float:
    """Share of the non-overlapping test windows that hold at least one flagged point."""
    whole = len(predictions) // win * win
    return float(predictions[:whole].reshape(-1, win).any(axis=1).mean())


def comb_detector(labels: np.ndarray, win: int) -> dict:
    """PA scores of a detector with no model: one flagged point in the middle of every window (1 / win of points)."""
    predictions = np.arange(len(labels)) % win == win // 2
    return {**pa_scores(labels, predictions, "pa_"), "flagged_share": float(predictions.mean())}


def pa_scores(labels: np.ndarray, predictions: np.ndarray, prefix: str) -> dict:
    adjusted = precision_recall_f1(labels, point_adjust(labels, predictions))
    return {f"{prefix}{name}": value for name, value in adjusted.items()}


def paper_protocol(
    labels: np.ndarray, train_scores: np.ndarray, test_scores: np.ndarray, ratio: float, win: int
) -> dict:
    """The reference's evaluation: train + test percentile, point adjustment, then P, R, F1.

    `pa_ref_*` repeats it with the reference's weighting of TRAIN against TEST scores (a diagnostic).
    """
    threshold = choose_threshold("paper", train_scores, test_scores, anomaly_ratio=ratio)
    predictions = test_scores > threshold.value
    reference = test_scores > reference_weighted_threshold(train_scores, test_scores, ratio, win)
    return {
        **pa_scores(labels, predictions, "pa_"),
        "point_f1": precision_recall_f1(labels, predictions)["f1"],
        "segments_hit": event_metrics(labels, predictions)["event_recall"],
        "windows_flagged": windows_flagged(predictions, win),
        "flagged_share": float(predictions.mean()),
        "threshold": threshold.value,
        **pa_scores(labels, reference, "pa_ref_"),
        "ref_flagged_share": float(reference.mean()),
    }


def default_protocol(labels: np.ndarray, train_scores: np.ndarray, test_scores: np.ndarray, percentile: float) -> dict:
    """Threshold from TRAIN scores only, and the whole panel (threshold-free metrics included)."""
    threshold = choose_threshold("train", train_scores, test_scores, percentile=percentile)
    graded = grade(labels, train_scores, test_scores, test_scores > threshold.value, threshold.value, panel=True)
    return {**graded.panel, "threshold": threshold.value}


def describe(labels: np.ndarray, values: np.ndarray) -> dict:
    """Mean of a per-point quantity on normal and on anomalous test points (labels describe, never choose)."""
    anomalous = labels.astype(bool)
    return {"normal": float(values[~anomalous].mean()), "anomalous": float(values[anomalous].mean())}


def run_seed(dataset: TimeSeriesDataset, config: DetectorConfig, args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    detector = Detector(config).fit(dataset, log=lambda line: log(f"  {line}"), progress=False)
    trained = time.perf_counter()
    resolve = partial(
        resolve_score_settings,
        channel_names=dataset.channel_names,
        target_channels=dataset.target_channels,
        temperature=config.temperature,
    )
    scores_of = variant_scorer(detector, dataset.train, dataset.test)
    unsmoothed = {name + suffix: scores_of(resolve(name, spec, 0)) for spec, suffix in CHANNEL_SPECS for name in SCORES}
    plain, options = ({row: scores_of(settings) for row, settings in group.items()} for group in model_rows(resolve))
    scored = time.perf_counter()
    # fit scored TRAIN itself (in float32 unless --amp): score_points must give the same scores.
    fitted_scoring = scores_of(detector.scoring_)[0]
    if not config.amp and not np.allclose(fitted_scoring, detector.train_scores_, rtol=1e-5, atol=1e-12):
        raise RuntimeError("the TRAIN scores of score_points differ from those of Detector.fit")

    labels = dataset.test_labels
    np.savez_compressed(
        args.output / f"quality_{dataset.name}_seed{config.seed}_scores.npz",
        **{f"train_{name}": pair[0] for name, pair in unsmoothed.items()},
        **{f"test_{name}": pair[1] for name, pair in unsmoothed.items()},
    )
    train_series = detector.normalizer_.transform(dataset.train)
    test_series = detector.normalizer_.transform(dataset.test)
    span = SCORES[DEFAULT_SCORE].smooth
    pca_target = pca_baseline_scores(train_series, test_series, channels=dataset.target_channels)
    scores = {
        **plain,
        "random": random_baseline_scores(len(train_series), len(test_series), config.seed),
        "pca": pca_baseline_scores(train_series, test_series),
        **options,
        f"pca (target channels, smoothed {span})": tuple(smooth_scores(part, span) for part in pca_target),
    }
    ratio = protocol_settings(args, dataset.name)["anomaly_ratio"]
    methods = {
        name: {
            "paper": paper_protocol(labels, train_scores, test_scores, ratio, config.win_size),
            "default": default_protocol(labels, train_scores, test_scores, args.threshold_percentile),
        }
        for name, (train_scores, test_scores) in scores.items()
    }
    test_discrepancy = unsmoothed["discrepancy"][1]
    diagnostics = {
        "best_epoch": detector.best_epoch_,
        "history": detector.history_,
        "assdis": describe(labels, -test_discrepancy),
        "reconstruction_mse": describe(labels, unsmoothed["reconstruction"][1]),
        "top_window_weight_mean": top_window_weight(test_discrepancy, config.win_size, config.temperature),
    }
    seconds = {"train": trained - started, "score": scored - trained, "total": time.perf_counter() - started}
    return {"seed": config.seed, "methods": methods, "diagnostics": diagnostics, "seconds": seconds}


def aggregate(runs: list[dict]) -> dict:
    """mean, sample std, min, max and the per-seed values of every metric of every method and protocol."""
    summary: dict = {}
    for name in runs[0]["methods"]:
        summary[name] = {}
        for protocol in ("paper", "default"):
            summary[name][protocol] = {}
            for metric in runs[0]["methods"][name][protocol]:
                values = np.array([run["methods"][name][protocol][metric] for run in runs], dtype=float)
                summary[name][protocol][metric] = {
                    "mean": float(values.mean()),
                    "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                    "min": float(values.min()),
                    "max": float(values.max()),
                    "values": values.tolist(),
                }
    return summary


def cell(stats: dict) -> str:
    return f"{stats['mean']:.4f} ± {stats['std']:.4f}"


def markdown_table(summary: dict, protocol: str, columns: tuple[tuple[str, str], ...]) -> list[str]:
    lines = ["| method | " + " | ".join(label for _, label in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, protocols in summary.items():
        lines.append(f"| {name} | " + " | ".join(cell(protocols[protocol][key]) for key, _ in columns) + " |")
    return lines


def changes_from_paper(config: DetectorConfig, dataset_name: str) -> list[str]:
    """Each setting of the paper's recipe for this dataset (`--preset paper`) that `config` changes."""
    paper = replace(DetectorConfig(), **preset_values("paper", dataset_name)).to_dict()
    ours = config.to_dict()
    changed = [key for key, value in paper.items() if key not in NOT_RECIPE and ours[key] != value]
    return [f"{key} {paper[key]} -> {ours[key]}" for key in changed]


def machine(device_name: str = "auto") -> dict:
    device = resolve_device(device_name)
    processor = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        processor = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "processor": processor,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        "load_average_at_start": list(os.getloadavg()),
    }


def report(name: str, record: dict) -> str:
    """The dataset's tables and settings as markdown (also what the script prints)."""
    summary, config = record["summary"], record["config"]
    seeds = ", ".join(str(run["seed"]) for run in record["runs"])
    seconds = [run["seconds"] for run in record["runs"]]
    host = record["machine"]
    lines = [
        f"### {name}: {record['n_train']:,} train / {record['n_test']:,} test points, "
        f"{record['anomalous_share']:.2%} anomalous, {record['n_channels']} channels",
        "",
        f"Seeds {seeds}; mean ± sample std over the seeds. Model: {config['model']}. Training: {config['training']}.",
        f"Changed from the paper: {'; '.join(record['changes_from_paper']) or 'nothing'}.",
        "Target channels (the rows that say so): "
        + (", ".join(record["target_channels"]) or "all channels, as the dataset names none")
        + ".",
        f"Wall time {record['wall_seconds'] / 60:.1f} min: per seed training "
        f"{np.mean([s['train'] for s in seconds]):.0f} s, "
        f"scoring TRAIN + TEST {np.mean([s['score'] for s in seconds]):.0f} s. "
        f"Machine: {host['processor']}, {host['cpu_cores']} cores, {host['torch_threads']} torch threads, "
        f"torch {host['torch']}, {host['device']}, load average at start {host['load_average_at_start'][0]:.1f}.",
        "",
        f"Paper protocol (threshold: top {config['anomaly_ratio']:g} % of TRAIN + TEST scores, uses test scores; PA). "
        f"Published F1-PA: {PAPER_F1_PA.get(name, float('nan')):.4f}. Ref. weighting: TRAIN scores weighted as "
        "the reference's stride-1 TRAIN energies are (a diagnostic, no labels read).",
        "",
        *markdown_table(summary, "paper", PAPER_COLUMNS),
        "",
        f"Default protocol (threshold: {config['threshold_percentile']:g}th percentile of TRAIN scores, no test data).",
        "",
        *markdown_table(summary, "default", DEFAULT_COLUMNS),
        "",
        "Diagnostics (model, mean over seeds; test labels only describe):",
        "",
    ]
    for key, label in (("assdis", "association discrepancy"), ("reconstruction_mse", "reconstruction MSE")):
        normal = np.mean([run["diagnostics"][key]["normal"] for run in record["runs"]])
        anomalous = np.mean([run["diagnostics"][key]["anomalous"] for run in record["runs"]])
        lines.append(f"- {label}: normal points {normal:.4g}, anomalous points {anomalous:.4g}")
    top_weight = np.mean([run["diagnostics"]["top_window_weight_mean"] for run in record["runs"]])
    lines.append(f"- paper score: on average {top_weight:.1%} of a test window's softmax weight sits on one step")
    for method, protocols in summary.items():
        paper = protocols["paper"]
        lines.append(
            f"- {method}, paper protocol: {paper['windows_flagged']['mean']:.1%} of the test windows hold a flag, "
            f"{paper['segments_hit']['mean']:.1%} of labelled segments hit, "
            f"point F1 before PA {paper['point_f1']['mean']:.4f}"
        )
    comb = record["comb_detector"]
    lines.append(
        f"- no model, one flagged point mid-window in every window ({comb['flagged_share']:.1%} of points): "
        f"PA precision {comb['pa_precision']:.4f}, PA recall {comb['pa_recall']:.4f}, PA F1 {comb['pa_f1']:.4f}"
    )
    return "\n".join(lines)


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def build_record(
    dataset: TimeSeriesDataset,
    config: DetectorConfig,
    runs: list[dict],
    host: dict,
    wall_seconds: float,
    protocol: dict,
    command: str,
) -> dict:
    settings = config.to_dict()
    shown_elsewhere = (*ARCHITECTURE, "seed", "device", "threshold_percentile")  # the protocol line shows the last
    training = {key: value for key, value in settings.items() if key not in shown_elsewhere}
    return {
        "dataset": dataset.name,
        "n_train": len(dataset.train),
        "n_test": len(dataset.test),
        "n_channels": dataset.n_channels,
        "anomalous_share": float(dataset.test_labels.mean()),
        "target_channels": [dataset.channel_names[c] for c in dataset.target_channels or []],
        "paper_f1_pa": PAPER_F1_PA[dataset.name],
        "comb_detector": comb_detector(dataset.test_labels, config.win_size),
        "config": {"model": {key: settings[key] for key in ARCHITECTURE}, "training": training, **protocol},
        "changes_from_paper": changes_from_paper(config, dataset.name),
        "seeds": [run["seed"] for run in runs],
        "wall_seconds": wall_seconds,
        "machine": host,
        "command": command,
        "summary": aggregate(runs),
        "runs": runs,
    }


def write_report(record: dict, output: Path) -> None:
    name = record["dataset"]
    text = report(name, record)
    print(text + "\n", flush=True)
    (output / f"quality_{name}.md").write_text(text + "\n")
    (output / f"quality_{name}.json").write_text(json.dumps(record, indent=2) + "\n")


def seed_file(output: Path, name: str, seed: int) -> Path:
    return output / f"quality_{name}_seed{seed}.json"


def protocol_settings(args: argparse.Namespace, name: str) -> dict:
    ratio = reference_anomaly_ratio(name) if args.anomaly_ratio is None else args.anomaly_ratio
    return {"anomaly_ratio": ratio, "threshold_percentile": args.threshold_percentile}


def aggregate_saved_runs(name: str, args: argparse.Namespace) -> dict:
    """The tables of seeds trained earlier (each saved as quality_{NAME}_seed{S}.json), e.g. on another machine.

    The seeds must differ only in their seed: same config, protocol, table rows and data.
    """
    if len(set(args.seeds)) != len(args.seeds):
        raise SystemExit(f"error: --seeds {' '.join(map(str, args.seeds))} names a seed twice")
    dataset = load_dataset(name, args.data_dir)
    fingerprint = dataset.fingerprint()
    saved = []
    for seed in args.seeds:
        path = seed_file(args.output, name, seed)
        if not path.exists():
            raise SystemExit(f"error: {path} is missing; train that seed first (without --aggregate)")
        entry = json.loads(path.read_text())
        # Files written before these keys existed used the command-line defaults and the same data.
        entry.setdefault("protocol", protocol_settings(args, name))
        entry.setdefault("fingerprint", fingerprint)
        if "config" not in entry:  # files written before the Detector kept model_config and train_config
            entry["config"] = DetectorConfig.from_dict({**entry["model_config"], **entry["train_config"]}).to_dict()
        saved.append((path, entry))
    first = saved[0][1]
    for path, entry in saved:
        same = {
            "config": {**entry["config"], "seed": 0} == {**first["config"], "seed": 0},
            "protocol": entry["protocol"] == first["protocol"],
            "methods": list(entry["run"]["methods"]) == list(first["run"]["methods"]),
            "data": entry["fingerprint"] == fingerprint,
        }
        differing = [key for key, equal in same.items() if not equal]
        if differing:
            raise SystemExit(f"error: {path} differs from the other seeds or the data in {', '.join(differing)}")
    config = DetectorConfig.from_dict(first["config"])
    runs = [entry["run"] for _, entry in saved]
    wall = sum(entry["wall_seconds"] for _, entry in saved)
    commands = [entry.get("command", "not recorded") for _, entry in saved]
    command = f"{' '.join(sys.argv)} (seeds trained by: {'; '.join(dict.fromkeys(commands))})"
    return build_record(dataset, config, runs, first["machine"], wall, first["protocol"], command)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add(
        "--data-dir",
        type=Path,
        default=DATA,
        help="holds SMAP/, MSL/, ServerMachineDataset/ (SMD), PSM/ (default: ../shared/data)",
    )
    add("--datasets", nargs="+", default=["SMAP", "MSL"], choices=DATASETS)
    add("--seeds", nargs="+", type=int, default=[0, 1, 2])
    add("--output", type=Path, default=Path("artifacts/bench"), help="where the markdown and JSON go")
    add("--epochs", type=int, default=1, help="paper: 3")
    add("--train-stride", type=int, default=100, help="paper: 1")
    add("--batch-size", type=int, default=64, help="paper: 256")
    add("--lr", type=float, default=1e-4)
    add("--val-ratio", type=float, default=0.0, help="share of TRAIN held out for early stopping (paper: none)")
    add("--d-model", type=int, default=512)
    add("--n-heads", type=int, default=8)
    add("--e-layers", type=int, default=3)
    add("--d-ff", type=int, default=512)
    add("--win-size", type=int, default=100)
    add("--k", type=float, default=3.0)
    add(
        "--anomaly-ratio",
        type=float,
        default=None,
        help="paper protocol: flag the top r %% of TRAIN + TEST (default: the reference's, 0.5 for SMD, 1 otherwise)",
    )
    add("--threshold-percentile", type=float, default=99.0, help="default protocol: percentile of TRAIN scores")
    add("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to train and score (default: auto)")
    add("--amp", action="store_true", help="CUDA mixed precision for training; scores stay float32")
    add(
        "--aggregate",
        action="store_true",
        help="train nothing: build the tables from the quality_{DATASET}_seed{S}.json files already in --output",
    )
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)

    for name in args.datasets:
        if args.aggregate:
            write_report(aggregate_saved_runs(name, args), args.output)
            continue
        dataset = load_dataset(name, args.data_dir)
        config = DetectorConfig(
            win_size=args.win_size,
            d_model=args.d_model,
            n_heads=args.n_heads,
            e_layers=args.e_layers,
            d_ff=args.d_ff,
            dropout=0.0,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            k=args.k,
            val_ratio=args.val_ratio,
            train_stride=args.train_stride,
            device=args.device,
            amp=args.amp,
            threshold_percentile=args.threshold_percentile,
            score="paper",  # fit's own TRAIN scores then check this script's (run_seed)
        )
        host = machine(args.device)
        started = time.perf_counter()
        runs = []
        for seed in args.seeds:
            config = replace(config, seed=seed)
            log(f"{name} seed {seed}: training")
            seed_started = time.perf_counter()
            runs.append(run_seed(dataset, config, args))
            # Each finished seed is kept on its own, so that a stopped run loses only the seed in progress.
            saved = {
                "config": config.to_dict(),
                "protocol": protocol_settings(args, name),
                "fingerprint": dataset.fingerprint(),
                "command": " ".join(sys.argv),
                "machine": host,
                "wall_seconds": time.perf_counter() - seed_started,
                "run": runs[-1],
            }
            seed_file(args.output, name, seed).write_text(json.dumps(saved, indent=2) + "\n")
            log(f"{name} seed {seed}: done in {runs[-1]['seconds']['total']:.0f} s")
        host["load_average_at_end"] = list(os.getloadavg())
        wall = time.perf_counter() - started
        command = " ".join(sys.argv)
        protocol = protocol_settings(args, name)
        record = build_record(dataset, config, runs, host, wall, protocol, command)
        write_report(record, args.output)


if __name__ == "__main__":
    main()
