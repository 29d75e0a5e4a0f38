"""Cross-check: the reference baselines (evaluation/tsb_baselines.py, evaluation/baselines.py) against TSB-AD 1.5's
own code, on real entities of MSL, SMAP and SMD.

TSB-AD pins numpy<2, so it runs in its own virtual environment, set up as bench/tsb_vus_check.py's docstring
says, plus `.bench-venvs/tsb-ad/bin/pip install torchinfo` (TSB-AD's CNN module imports it); this script
re-runs itself there (--tsb-python, default $TSB_AD_PYTHON or .bench-venvs/tsb-ad/bin/python) when TSB_AD is not
importable. From the repository root:

    OMP_NUM_THREADS=1 .venv/bin/python bench/reference_baselines_check.py > bench/results/reference_baselines_check.md

Each entity is z-scored with its own TRAIN statistics. First table, fit mode `series` (TSB-AD's leaderboard
way): PCA, IForest, KNN and KMeansAD with the leaderboard's hyper-parameters, fitted by TSB-AD on the entity's
TEST and scored there (decision_scores_), against our `*_series` baselines on the same TEST. TSB-AD's IForest
and KMeansAD draw random numbers: IForest gets our seed as random_state, KMeansAD numpy's global generator
seeded with it. Second table, CNN trained on TRAIN and scoring TEST, torch's generator seeded with our seed
before either builds its network: ROC-AUC of both on the TEST labels.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DEFAULT_TSB_PYTHON = os.environ.get("TSB_AD_PYTHON", str(ROOT / ".bench-venvs" / "tsb-ad" / "bin" / "python"))
SERIES_ENTITIES = (("MSL", "C-1"), ("MSL", "F-7"), ("SMAP", "A-1"), ("SMAP", "E-1"), ("SMD", "machine-1-3"))
CNN_ENTITIES = (("MSL", "C-1"), ("MSL", "F-7"), ("SMAP", "A-1"))


def entity(data_dir: Path, dataset: str, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TRAIN and TEST z-scored with TRAIN's statistics, and the TEST labels."""
    from bench.tsb_vus_check import smd_entity, telemanom_entity
    from data_factory.windows import Normalizer

    if dataset == "SMD":
        train, test, labels = smd_entity(data_dir / "SMD" / "ServerMachineDataset", name)
    else:
        train, test, labels = telemanom_entity(data_dir / dataset, name)
    normalizer = Normalizer.fit(train)
    return normalizer.transform(train), normalizer.transform(test), labels.astype(int)


@contextlib.contextmanager
def quiet():
    """TSB-AD prints progress bars and shapes: kept out of the table."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def theirs_series(name: str, series: np.ndarray, seed: int) -> np.ndarray:
    from TSB_AD.HP_list import Optimal_Multi_algo_HP_dict as settings
    from TSB_AD.model_wrapper import run_KMeansAD, run_KNN, run_PCA
    from TSB_AD.models.IForest import IForest

    if name == "PCA":
        return run_PCA(series, **settings["PCA"])
    if name == "KNN":
        return run_KNN(series, **settings["KNN"])
    if name == "KMeansAD":
        np.random.seed(seed)  # its KMeans(n_clusters=k) draws from the global generator
        with quiet():
            return run_KMeansAD(series, **settings["KMeansAD"])
    # run_IForest passes no random_state; the model takes one, so both sides can share the seed.
    return IForest(slidingWindow=100, random_state=seed, **settings["IForest"]).fit(series).decision_scores_


OURS = {"PCA": "tsb_pca_series", "IForest": "iforest_series", "KNN": "knn_series", "KMeansAD": "kmeans_series"}


def series_table(data_dir: Path, seed: int) -> float:
    from evaluation.baselines import METHODS

    print(
        "| entity | TEST points x channels | method | ours | max abs diff | max abs diff / max score | note "
        "| s TSB-AD / ours |"
    )
    print("|---|---|---|---|---|---|---|---|")
    worst = 0.0
    for dataset, name in SERIES_ENTITIES:
        _, test, _ = entity(data_dir, dataset, name)
        for method, ours_name in OURS.items():
            started = time.perf_counter()
            theirs = np.asarray(theirs_series(method, test, seed), dtype=np.float64)
            theirs_time, started = time.perf_counter() - started, time.perf_counter()
            ours = METHODS[ours_name].build(seed=seed).score(test)
            ours_time = time.perf_counter() - started
            note = ""
            if method == "IForest":  # TSB-AD reports sklearn's decision_function: ours shifted by offset_
                shift = float(np.median(theirs - ours))
                theirs, note = theirs - shift, f"TSB-AD = ours + {shift:.6f} (sklearn's offset_)"
            difference = np.abs(theirs - ours)
            relative = float(difference.max() / np.abs(theirs).max())  # to the scale of the scores
            worst = max(worst, relative)
            print(f"| {dataset} {name} | {test.shape[0]} x {test.shape[1]} | {method} | `{ours_name}` "
                  f"| {difference.max():.1e} | {relative:.1e} | {note} | {theirs_time:.1f} / {ours_time:.1f} |",
                  flush=True)  # fmt: skip
    return worst


def cnn_table(data_dir: Path, seed: int) -> float:
    import torch
    from sklearn.metrics import roc_auc_score
    from TSB_AD.HP_list import Optimal_Multi_algo_HP_dict as settings
    from TSB_AD.models.CNN import CNN

    from evaluation.baselines import METHODS

    print("| entity | TRAIN / TEST points x channels | ROC-AUC TSB-AD | ROC-AUC ours | abs diff "
          "| max abs score diff | s TSB-AD / ours |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    worst = 0.0
    hyper = settings["CNN"]
    for dataset, name in CNN_ENTITIES:
        train, test, labels = entity(data_dir, dataset, name)
        started = time.perf_counter()
        torch.manual_seed(seed)
        with quiet():  # run_CNN's call, with the leaderboard's window and channels
            model = CNN(window_size=hyper["window_size"], num_channel=hyper["num_channel"], feats=test.shape[1],
                        lr=0.0008, batch_size=128)  # fmt: skip
            model.fit(train)
            theirs = model.decision_function(test)
        theirs_time, started = time.perf_counter() - started, time.perf_counter()
        ours = METHODS["tsb_cnn"].build(seed=seed).fit(train).score(test)
        ours_time = time.perf_counter() - started
        auc_theirs, auc_ours = roc_auc_score(labels, theirs), roc_auc_score(labels, ours)
        worst = max(worst, abs(auc_theirs - auc_ours))
        print(f"| {dataset} {name} | {len(train)} / {len(test)} x {test.shape[1]} | {auc_theirs:.4f} | {auc_ours:.4f} "
              f"| {abs(auc_theirs - auc_ours):.1e} | {np.abs(theirs - ours).max():.1e} "
              f"| {theirs_time:.0f} / {ours_time:.0f} |", flush=True)  # fmt: skip
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--tsb-python", default=DEFAULT_TSB_PYTHON, help="python of the venv holding tsb-ad==1.5")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-cnn", action="store_true", help="only the first table")
    parser.add_argument("--skip-series", action="store_true", help="only the CNN table")
    args = parser.parse_args()
    if importlib.util.find_spec("TSB_AD") is None:
        if not Path(args.tsb_python).exists():
            sys.exit(f"TSB_AD is not importable and {args.tsb_python} does not exist: see bench/tsb_vus_check.py")
        os.execv(args.tsb_python, [args.tsb_python, *sys.argv])
    if not (args.data_dir / "MSL" / "channels.csv").exists():
        print(f"MSL is not under {args.data_dir}; nothing to check")
        return
    sys.path.insert(0, str(ROOT))
    import sklearn
    import torch

    started = time.perf_counter()
    print("### The reference baselines against TSB-AD 1.5's own code, on real entities\n")
    print("Command: `OMP_NUM_THREADS=1 .venv/bin/python bench/reference_baselines_check.py`\n")
    print(f"tsb-ad {metadata.version('tsb-ad')}, numpy {np.__version__}, scikit-learn {sklearn.__version__}, "
          f"torch {torch.__version__} (the tsb-ad venv); seed {args.seed}; torch threads {torch.get_num_threads()}. "
          "Each entity z-scored with its own TRAIN statistics.\n")  # fmt: skip
    if not args.skip_series:
        print("Fit mode `series`: fitted on the entity's TEST and scoring it, as TSB-AD's leaderboard runs them.\n")
        worst_series = series_table(args.data_dir, args.seed)
        print(f"\nLargest difference relative to the largest score: **{worst_series:.1e}**.\n")
    if not args.skip_cnn:
        print("CNN, trained on TRAIN, scoring TEST:\n")
        worst_cnn = cnn_table(args.data_dir, args.seed)
        print(f"\nMax ROC-AUC difference: **{worst_cnn:.1e}** (target 0.01).\n")
    print(f"Wall time {time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()
