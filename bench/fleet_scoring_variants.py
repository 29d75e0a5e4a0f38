"""Per-entity model metrics of a trained fleet under scoring variants (a research-log experiment).

    python bench/fleet_scoring_variants.py MSL ../shared/data artifacts/fleet_quality/MSL_seed0/MSL_fleet.pth \
        rec:target:100:50,rec:target:25:100,scaled:all:100:50

A variant is kind:channels:stride:smooth: kind rec (reconstruction error), scaled (each
channel's error divided by its TRAIN error, floored at 1 % of the mean) or dis (minus the
association discrepancy); channels target or all; stride the step between scoring windows (100:
non-overlapping; smaller: overlapping windows, each point the mean of the windows covering it);
smooth the centred moving-average span. Prints the mean over graded entities per variant.
"""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data_factory.registry import load_dataset
from evaluation.metrics import pr_auc, roc_auc
from evaluation.tsb_vus import dominant_period, tsb_vus
from model.discrepancy import association_discrepancy
from model.fleet import Fleet
from model.scores import WindowOutputs, reconstruction_error
from model.scoring import smooth_scores

torch.set_num_threads(1)


@torch.no_grad()
def overlap_errors(model, series, stride, channels, kind="rec", scale=None):
    win = model.config.win_size
    n = len(series)
    starts = list(range(0, n - win + 1, stride))
    if starts[-1] + win < n:
        starts.append(n - win)
    total = np.zeros(n)
    count = np.zeros(n)
    x_all = torch.from_numpy(np.ascontiguousarray(series, dtype=np.float32))
    for i in range(0, len(starts), 256):
        batch = torch.stack([x_all[s : s + win] for s in starts[i : i + 256]])
        rec, per_layer = model(batch)
        out = WindowOutputs(batch, rec, per_layer)
        if kind == "rec":
            v = reconstruction_error(out, channels).numpy()
        elif kind == "scaled":
            err = ((rec.float() - batch.float()) ** 2).numpy() / scale
            v = err.mean(axis=-1) if channels is None else err[..., list(channels)].mean(axis=-1)
        else:
            v = (-association_discrepancy(per_layer)).numpy()
        for j, s in enumerate(starts[i : i + 256]):
            total[s : s + win] += v[j]
            count[s : s + win] += 1
    return (total / count).astype(np.float32)


def metrics(labels, scores, window):
    return roc_auc(labels, scores), pr_auc(labels, scores), tsb_vus(labels, scores, window=window)["vus_pr"]


def main(dataset, data_dir, bundles, variants):
    rows = {v: [] for v in variants}
    for bundle in bundles:
        fleet = Fleet.load(bundle)
        per = {v: [] for v in variants}
        for entity, det in fleet.detectors.items():
            data = load_dataset(dataset, data_dir, entity)
            if not 0 < data.test_labels.sum() < len(data.test_labels):
                continue
            test = det.normalizer_.transform(data.test)
            window = dominant_period(test[:, 0])
            target = None if data.target_channels is None else tuple(data.target_channels)
            cache = {}
            for v in variants:
                kind, chans, stride, smooth = v.split(":")
                ch = target if chans == "target" else None
                key = (kind, chans, int(stride))
                if key not in cache:
                    scale = np.maximum(det.train_channel_error_, 0.01 * det.train_channel_error_.mean() + 1e-12)
                    cache[key] = overlap_errors(det.model_, test, int(stride), ch, kind, scale.astype(np.float32))
                s = smooth_scores(cache[key], int(smooth))
                per[v].append(metrics(data.test_labels, s, window))
        for v in variants:
            rows[v].append(np.mean(per[v], axis=0))
    for v in variants:
        a = np.array(rows[v])
        means = f"ROC {a[:, 0].mean():.3f}  PR {a[:, 1].mean():.3f}  VUS-PR {a[:, 2].mean():.3f}"
        print(f"{dataset} {v:<28} {means}  (seeds {len(a)})", flush=True)


if __name__ == "__main__":
    dataset, data_dir = sys.argv[1], sys.argv[2]
    bundles = sys.argv[3].split(",")
    variants = sys.argv[4].split(",")
    main(dataset, data_dir, bundles, variants)
