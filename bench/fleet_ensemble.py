"""Per-entity metrics of a seed ensemble of fleets against its single seeds (a research-log experiment).

    python bench/fleet_ensemble.py MSL ../shared/data A/MSL_fleet.pth,B/MSL_fleet.pth,C/MSL_fleet.pth

Each entity's ensemble score is the mean over the fleets of its default score z-scored by that
fleet's own TRAIN scores (no test data); printed beside the mean of the single fleets' metrics.
"""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data_factory.registry import load_dataset
from evaluation.metrics import pr_auc, roc_auc
from evaluation.tsb_vus import dominant_period, tsb_vus
from model.fleet import Fleet

torch.set_num_threads(1)
dataset, data_dir, bundles = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
fleets = [Fleet.load(b) for b in bundles]
single, ens = [], []
for entity in fleets[0].detectors:
    data = load_dataset(dataset, data_dir, entity)
    if not 0 < data.test_labels.sum() < len(data.test_labels):
        continue
    window = dominant_period(fleets[0].detectors[entity].normalizer_.transform(data.test)[:, 0])
    zs = []
    per = []
    for f in fleets:
        d = f.detectors[entity]
        tr, te = d.score(data.train), d.score(data.test)
        per.append(
            [
                roc_auc(data.test_labels, te),
                pr_auc(data.test_labels, te),
                tsb_vus(data.test_labels, te, window=window)["vus_pr"],
            ]
        )
        zs.append((te - tr.mean()) / (tr.std() or 1.0))
    z = np.mean(zs, axis=0)
    single.append(np.mean(per, axis=0))
    ens.append(
        [
            roc_auc(data.test_labels, z),
            pr_auc(data.test_labels, z),
            tsb_vus(data.test_labels, z, window=window)["vus_pr"],
        ]
    )
s, e = np.array(single), np.array(ens)
for label, values in ((f"{dataset} single-seed mean", s), (f"{dataset} {len(fleets)}-seed ensemble", e)):
    print(f"{label}: ROC {values[:, 0].mean():.3f} PR {values[:, 1].mean():.3f} VUS-PR {values[:, 2].mean():.3f}")
