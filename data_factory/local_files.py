"""Data already on disk: the data folder, and the reference code's preprocessed arrays (NAME_train.npy, ...)."""

from __future__ import annotations

import sys
from pathlib import Path

from data_factory.dataset import TimeSeriesDataset, check_labels, check_series
from data_factory.names import DEFAULT_DATA_DIR
from data_factory.readers import load_npy
from runtime.errors import UserInputError

REFERENCE_PARTS = ("train", "test", "test_label")


def data_folder(data_dir: str | Path | None) -> Path:
    """The folder a loader reads and downloads into: --data-dir, or the default cache."""
    return Path(data_dir or DEFAULT_DATA_DIR).expanduser()


def reject_entity(name: str, entity: str | None) -> None:
    if entity is not None:
        raise UserInputError(f"{name} has no entities; drop --entity {entity}")


def find_reference_arrays(folder: Path, name: str) -> list[Path] | None:
    """NAME_train.npy, NAME_test.npy and NAME_test_label.npy in `folder` or `folder/NAME`, or None.

    Part of a set is a mistake worth stopping for: the user meant to provide them.
    """
    for place in (folder, folder / name):
        paths = [place / f"{name}_{part}.npy" for part in REFERENCE_PARTS]
        found = [path.name for path in paths if path.is_file()]
        if len(found) == len(paths):
            return paths
        if found:
            missing = [path.name for path in paths if not path.is_file()]
            raise UserInputError(
                f"{place} has {', '.join(found)} but not {', '.join(missing)}; add the missing reference "
                "array(s) or remove the others"
            )
    return None


def load_reference_arrays(name: str, paths: list[Path], channel_names: list[str]) -> TimeSeriesDataset:
    """The reference code's arrays, checked like any other input."""
    print(f"{name}: using the reference arrays in {paths[0].parent}", file=sys.stderr)
    arrays = []
    for path in paths:
        try:
            arrays.append(load_npy(path))
        except UserInputError as error:
            raise UserInputError(f"{error}; replace it or remove the {name}_*.npy set") from None
    train = check_series(arrays[0], str(paths[0]))
    test = check_series(arrays[1], str(paths[1]), n_channels=train.shape[1])
    names = channel_names if len(channel_names) == train.shape[1] else [f"ch{i}" for i in range(train.shape[1])]
    return TimeSeriesDataset(
        name=name,
        train=train,
        test=test,
        test_labels=check_labels(arrays[2], str(paths[2]), len(test)),
        channel_names=names,
    )
