"""Fleet mode, measured: one small model per channel (entity), each scoring its own test stretch.

    python bench/fleet.py --data-dir ../shared/data --dataset MSL
    python bench/fleet.py --data-dir ../shared/data --dataset MSL --normalisation global --seeds 0 1 2

telemanom trains one model per channel. This trains one small Anomaly Transformer per entity of
the concatenated arrays (entities from DATA_DIR/DATASET/channels.csv), scores each entity's test
stretch with its own model, concatenates the scores in the arrays' order and grades them as one
series, raw and calibrated (each entity's scores as the CDF of its own TRAIN scores, so that
entities with different error scales become comparable). It prints the table and the wall time.

--normalisation entity (the first version's behaviour): each model z-scores its entity with that
entity's own TRAIN statistics, as the solver does with whatever data it is given. global: every
entity is z-scored with the TRAIN statistics of the whole concatenated array, as one shared model
sees it, and the solver's own normaliser is replaced by the identity (rule written before the
figures: bench/results/fleet_global_rule.md). With several seeds, cells are mean ± sample std.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.entity_norm import train_on  # noqa: E402
from bench.seed_tables import mean_std_cells  # noqa: E402
from data_factory.dataset import TimeSeriesDataset  # noqa: E402
from data_factory.smd import MACHINES, load_smd  # noqa: E402
from data_factory.windows import Normalizer  # noqa: E402
from evaluation.vus import vus  # noqa: E402
from model import solver  # noqa: E402
from model.score_settings import ScoreSettings  # noqa: E402
from model.scoring import score_points  # noqa: E402
from model.transformer import ModelConfig  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SCALES = ("raw", "per-entity TRAIN CDF")
DEFAULT_ROW = ("reconstruction, target channels, smoothed 50 (the default)", "raw")


@dataclass
class Fleet:
    """The concatenated arrays and where each entity sits in them."""

    train: np.ndarray
    test: np.ndarray
    labels: np.ndarray
    entities: list[dict]  # chan_id, train_start, train_len, test_start, test_len
    channel_names: list[str]
    target: tuple[int, ...] | None  # the score channels of the "target" rows; None: all channels


def telemanom_fleet(folder: Path) -> Fleet:
    """SMAP or MSL as ../shared/data ships them: train/test/test_label.npy and channels.csv."""
    train = np.load(folder / "train.npy")
    entities = [
        {key: value if key == "chan_id" else int(value) for key, value in row.items()}
        for row in csv.DictReader((folder / "channels.csv").open())
    ]
    names = ["telemetry", *(f"command_{index:02d}" for index in range(1, train.shape[1]))]
    return Fleet(train, np.load(folder / "test.npy"), np.load(folder / "test_label.npy"), entities, names, (0,))


def smd_fleet(data_dir: Path) -> Fleet:
    """SMD's 28 machines, each loaded on its own; no channel is the target, so all 38 are scored."""
    parts = [load_smd(data_dir, entity=machine) for machine in MACHINES]
    entities, train_start, test_start = [], 0, 0
    for machine, part in zip(MACHINES, parts, strict=True):
        entities.append(
            {"chan_id": machine, "train_start": train_start, "train_len": len(part.train),
             "test_start": test_start, "test_len": len(part.test)}
        )  # fmt: skip
        train_start, test_start = train_start + len(part.train), test_start + len(part.test)
    train, test = (np.concatenate([getattr(part, split) for part in parts]) for split in ("train", "test"))
    labels = np.concatenate([part.test_labels for part in parts])
    return Fleet(train, test, labels, entities, parts[0].channel_names, None)


def scorings(target: tuple[int, ...] | None) -> dict[str, ScoreSettings]:
    return {
        DEFAULT_ROW[0]: ScoreSettings("reconstruction", 50.0, target, 50),
        "reconstruction, target channels": ScoreSettings("reconstruction", 50.0, target, 0),
        "reconstruction, all channels, smoothed 50": ScoreSettings("reconstruction", 50.0, None, 50),
        "paper": ScoreSettings("paper"),
    }


def run_fleet(fleet: Fleet, seed: int, normalisation: str) -> dict[tuple[str, str], tuple[float, float, float]]:
    """Train and score one model per entity; ROC-AUC, PR-AUC and VUS-PR of every scoring and scale."""
    train, test, labels = fleet.train, fleet.test, fleet.labels
    if normalisation == "global":
        fitted = Normalizer.fit(train)
        train, test = fitted.transform(train), fitted.transform(test)
    model_config = ModelConfig(n_channels=train.shape[1], d_model=64, n_heads=4, e_layers=2, d_ff=64)
    train_config = solver.TrainConfig(epochs=2, batch_size=32, lr=1e-3, train_stride=5, val_ratio=0.0, seed=seed)
    rows_scorings = scorings(fleet.target)
    raw = {name: np.zeros(len(test)) for name in rows_scorings}
    calibrated = {name: np.zeros(len(test)) for name in rows_scorings}
    target = list(fleet.target or [])
    for entity in fleet.entities:
        a, n = entity["train_start"], entity["train_len"]
        b, m = entity["test_start"], entity["test_len"]
        data = TimeSeriesDataset(
            entity["chan_id"], train[a : a + n], test[b : b + m], labels[b : b + m], fleet.channel_names, [], target
        )
        quiet = {"log": lambda _: None, "progress": False}
        if normalisation == "global":  # the rows are z-scored already: the solver must not refit on the entity
            result = train_on(data, model_config, train_config, log_line=quiet["log"])
        else:
            result = solver.train_anomaly_transformer(data, model_config, train_config, **quiet)
        own_train, own_test = result.normalizer.transform(data.train), result.normalizer.transform(data.test)
        for name, scoring in rows_scorings.items():
            train_scores = np.sort(score_points(result.model, own_train, scoring))
            test_scores = score_points(result.model, own_test, scoring)
            raw[name][b : b + m] = test_scores
            calibrated[name][b : b + m] = np.searchsorted(train_scores, test_scores, side="right") / len(train_scores)
    rows = {}
    for name in rows_scorings:
        for scale, scores in zip(SCALES, (raw[name], calibrated[name]), strict=True):
            roc, pr = roc_auc_score(labels, scores), average_precision_score(labels, scores)
            rows[(name, scale)] = (float(roc), float(pr), float(vus(labels, scores)["vus_pr"]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--dataset", default="MSL", choices=("SMAP", "MSL", "SMD"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--normalisation", default="entity", choices=("entity", "global"))
    args = parser.parse_args()
    started = time.perf_counter()
    fleet = smd_fleet(args.data_dir) if args.dataset == "SMD" else telemanom_fleet(args.data_dir / args.dataset)
    per_seed = [run_fleet(fleet, seed, args.normalisation) for seed in args.seeds]
    seconds = (time.perf_counter() - started) / len(args.seeds)
    print(
        f"{args.dataset}: one model per entity (d_model 64, 2 layers, 2 epochs, stride 5), {args.normalisation} "
        f"normalisation, seeds {' '.join(map(str, args.seeds))}: {seconds:.0f} s per seed for the whole fleet\n"
    )
    print("| scoring | scale | ROC-AUC | PR-AUC | VUS-PR |\n|---|---|---|---|---|")
    for key in per_seed[0]:
        one_seed = " | ".join(f"{value:.3f}" for value in per_seed[0][key])
        cells = one_seed if len(per_seed) == 1 else mean_std_cells(per_seed, key)
        print(f"| {key[0]} | {key[1]} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
