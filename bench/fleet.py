"""Fleet mode, measured: one small model per channel (entity), each scoring its own test stretch.

    python bench/fleet.py --data-dir ../shared/data --dataset MSL

telemanom trains one model per channel. This trains one small Anomaly Transformer per entity of
the concatenated arrays (entities from DATA_DIR/DATASET/channels.csv), scores each entity's test
stretch with its own model, concatenates the scores in the arrays' order and grades them as one
series, raw and calibrated (each entity's scores as the CDF of its own TRAIN scores, so that
entities with different error scales become comparable). It prints the table and the wall time.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_factory.dataset import TimeSeriesDataset  # noqa: E402
from evaluation.vus import vus  # noqa: E402
from model.score_settings import ScoreSettings  # noqa: E402
from model.scoring import score_points  # noqa: E402
from model.solver import TrainConfig, train_anomaly_transformer  # noqa: E402
from model.transformer import ModelConfig  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SCORINGS = {
    "reconstruction, target channels, smoothed 50 (the default)": ScoreSettings("reconstruction", 50.0, (0,), 50),
    "reconstruction, target channels": ScoreSettings("reconstruction", 50.0, (0,), 0),
    "reconstruction, all channels, smoothed 50": ScoreSettings("reconstruction", 50.0, None, 50),
    "paper": ScoreSettings("paper"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--dataset", default="MSL", choices=("SMAP", "MSL"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    folder = args.data_dir / args.dataset
    train, test = np.load(folder / "train.npy"), np.load(folder / "test.npy")
    labels = np.load(folder / "test_label.npy")
    entities = list(csv.DictReader((folder / "channels.csv").open()))
    names = ["telemetry", *(f"command_{index:02d}" for index in range(1, train.shape[1]))]
    model_config = ModelConfig(n_channels=train.shape[1], d_model=64, n_heads=4, e_layers=2, d_ff=64)
    train_config = TrainConfig(epochs=2, batch_size=32, lr=1e-3, train_stride=5, val_ratio=0.0, seed=args.seed)
    raw = {name: np.zeros(len(test)) for name in SCORINGS}
    calibrated = {name: np.zeros(len(test)) for name in SCORINGS}
    started = time.perf_counter()
    for entity in entities:
        a, n = int(entity["train_start"]), int(entity["train_len"])
        b, m = int(entity["test_start"]), int(entity["test_len"])
        data = TimeSeriesDataset(
            entity["chan_id"], train[a : a + n], test[b : b + m], labels[b : b + m], names, [], [0]
        )
        result = train_anomaly_transformer(data, model_config, train_config, log=lambda _: None, progress=False)
        own_train, own_test = result.normalizer.transform(data.train), result.normalizer.transform(data.test)
        for name, scoring in SCORINGS.items():
            train_scores = np.sort(score_points(result.model, own_train, scoring))
            test_scores = score_points(result.model, own_test, scoring)
            raw[name][b : b + m] = test_scores
            calibrated[name][b : b + m] = np.searchsorted(train_scores, test_scores, side="right") / len(train_scores)
    seconds = time.perf_counter() - started
    print(f"{args.dataset}: {len(entities)} models (d_model 64, 2 layers, 2 epochs, stride 5) in {seconds:.0f} s\n")
    print("| scoring | scale | ROC-AUC | PR-AUC | VUS-PR |\n|---|---|---|---|---|")
    for name in SCORINGS:
        for scale, scores in (("raw", raw[name]), ("per-entity TRAIN CDF", calibrated[name])):
            roc, pr = roc_auc_score(labels, scores), average_precision_score(labels, scores)
            print(f"| {name} | {scale} | {roc:.3f} | {pr:.3f} | {vus(labels, scores)['vus_pr']:.3f} |")


if __name__ == "__main__":
    main()
