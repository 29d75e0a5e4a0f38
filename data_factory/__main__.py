"""python -m data_factory prepare --dataset MSL [--data-dir DIR]: download, verify and build a dataset ahead of time.

What a Docker image build or a cluster job runs before training; a later run loads without network.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_factory import psm, smd, telemanom
from data_factory.local_files import data_folder, find_reference_arrays
from data_factory.names import DEFAULT_DATA_DIR
from data_factory.registry import LOADERS
from runtime.atomic import Interrupted, signals_raise
from runtime.errors import UserInputError, error_line

PREPARED = ("SMAP", "MSL", "SMD", "PSM")  # the datasets that download; SYNTH and CUSTOM have nothing to prepare
URL_FLAGS = {
    "--telemanom-data-url": telemanom.DATA_URL_VAR,
    "--telemanom-labels-url": telemanom.LABELS_URL_VAR,
    "--smd-base-url": smd.URL_VAR,
    "--psm-base-url": psm.URL_VAR,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_factory", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare", help="download, verify and build a dataset without training")
    add = prepare.add_argument
    add("--dataset", required=True, type=str.upper, choices=PREPARED, help="SMAP, MSL, SMD or PSM")
    add("--data-dir", default=None, help=f"data folder (default: {DEFAULT_DATA_DIR})")
    add("--entity", default=None, help="one channel (SMAP/MSL, e.g. A-1) or machine (SMD, e.g. machine-1-1)")
    for flag, env_var in URL_FLAGS.items():
        add(flag, dest=env_var, default=None, metavar="URL", help=f"mirror URL; overrides ${env_var}")
    return parser


def data_location(name: str, folder: Path, entity: str | None) -> str:
    """Where the loaded arrays live, for the summary line."""
    reference = find_reference_arrays(folder, name) if entity is None else None
    if reference is not None:
        return ", ".join(str(path) for path in reference)
    if name in telemanom.SPACECRAFT:
        cache = folder / name
        return ", ".join(str(cache / file) for file in (*telemanom.ARRAY_FILES, telemanom.INDEX_FILE))
    return str(smd.smd_root(folder) if name == "SMD" else psm.psm_root(folder))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {env_var: getattr(args, env_var) for env_var in URL_FLAGS.values()}
    folder = data_folder(args.data_dir)
    try:
        with signals_raise():  # a stopped download still removes its temp files
            dataset = LOADERS[args.dataset](folder, args.entity, urls=overrides)
    except UserInputError as error:
        print(error_line(error), file=sys.stderr)
        return 2
    except Interrupted as stopped:
        print(f"error: stopped by {stopped}; nothing was kept (run the command again)", file=sys.stderr)
        return 128 + stopped.signal_number
    summary = f"{dataset.name} ready: train {dataset.train.shape}, test {dataset.test.shape}"
    if dataset.test_labels is not None:
        anomalous = int(dataset.test_labels.sum())
        summary += f", {anomalous} anomalous test points ({100 * anomalous / len(dataset.test_labels):.2f} %)"
    print(summary)
    print(f"data: {data_location(args.dataset, folder, args.entity)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
