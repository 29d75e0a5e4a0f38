"""Checkpoints as plain tensors, numbers, strings, lists and dicts: safe to open with weights_only=True,
and checked against their schema (model/schema.py) before anything is built from them."""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from pathlib import Path

import torch

from data_factory.dataset import TimeSeriesDataset
from data_factory.names import label_flags
from data_factory.readers import missing_file_reason
from data_factory.registry import DATASET_NAMES
from model.schema import FORMAT_VERSION, check_last_state, check_model_file
from runtime.atomic import atomic_path
from runtime.errors import UserInputError

# A file that is not a model, or a damaged one: the fix for every such --checkpoint.
NOT_A_MODEL_FIX = "pass a *_checkpoint.pth or *_fleet.pth file that train.py wrote (retrain if it is damaged)"

__all__ = ["FORMAT_VERSION", "check_checkpoint_matches", "load_checkpoint", "load_last_state", "save_checkpoint"]


def save_checkpoint(checkpoint: dict, path: str | Path) -> Path:
    """Write atomically: an interrupted or failed save (a full disk) never replaces a good checkpoint with a
    broken one. Serialised in memory first, so a write error is a plain OSError (torch's own writer would
    report it as an opaque RuntimeError) and becomes one clear line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    with atomic_path(path) as temp:
        temp.write_bytes(buffer.getbuffer())
    return path


def load_checkpoint(path: str | Path, dataset: TimeSeriesDataset | None = None, kind: str | None = "detector") -> dict:
    """Load with weights_only=True, check it against its schema, and against the dataset it will score, if given.

    kind: "detector" (one model), "fleet" (a {DATASET}_fleet.pth bundle) or None (either).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserInputError(
            f"checkpoint {path} {missing_file_reason(path)}; train first (./train.sh) or pass --checkpoint PATH"
        )
    checkpoint = _safe_load(path, NOT_A_MODEL_FIX)
    if not isinstance(checkpoint, dict) or not ({"format_version", "model_state", "entities"} & set(checkpoint)):
        raise UserInputError(f"checkpoint {path} is not a model file of this tool; {NOT_A_MODEL_FIX}")
    is_fleet = checkpoint.get("kind") == "fleet"
    if kind == "detector" and is_fleet:
        raise UserInputError(f"{path} is a fleet bundle (one model per entity); pass --entity NAME to use one of "
                             "its models (detect.py: or --entity-column COLUMN to route rows of several entities; "
                             "in Python: model.fleet.Fleet.load(path).detector(NAME))")
    if kind == "fleet" and not is_fleet:
        raise UserInputError(f"{path} holds one model, not a fleet bundle; train one with train.py --per-entity "
                             "(in Python: Detector.load(path), or model.fleet.open_fleet(path) for either kind)")
    if checkpoint.get("kind") == "last":
        label = path.name.removesuffix("_last.pth") if path.name.endswith("_last.pth") else "{DATASET}"
        raise UserInputError(
            f"{path} is a resumable training state, not a checkpoint; pass the {label}_checkpoint.pth that train.py "
            "wrote beside it, or finish the run with train.py --resume"
        )
    check_model_file(checkpoint, path)
    if dataset is not None:
        check_checkpoint_matches(checkpoint, dataset, path)
    return checkpoint


def _safe_load(path: Path, fix: str) -> object:
    """torch.load with weights_only=True: a pickle that would run code is refused, never executed. A file that
    is not a checkpoint (a CSV, an array, a damaged copy) fails in torch's readers with one of several error
    types, each a wrong --checkpoint, so each ends in one line. Anything else (a signal's stop raised while the
    file is read, a MemoryError) goes on as it came."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError) as error:
        reason = _reason(error)
    except (LookupError, TypeError, AttributeError, struct.error):  # torch's legacy reader on a CSV: IndexError
        reason = "not a PyTorch file"
    raise UserInputError(f"checkpoint {path} is not a safe checkpoint of this tool, or is damaged ({reason}); {fix}")


def _reason(error: Exception) -> str:
    """The informative line of a torch.load error: the unpickler's own complaint where torch gives one (not its
    advice to file an issue or to load unsafely), else the first line; whole sentences only."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    marker = "WeightsUnpickler error:"
    at = next((i for i, line in enumerate(lines) if marker in line), None)
    if at is not None:  # the complaint follows the marker, on its line or on the next
        complaint = lines[at].split(marker, 1)[1].strip()
        if not complaint and at + 1 < len(lines) and not lines[at + 1].startswith("Check the documentation"):
            complaint = lines[at + 1]
        reason = f"refused to unpickle: {complaint}" if complaint else "refused to unpickle it"
    else:
        reason = (lines or [type(error).__name__])[0]
    if len(reason) > 200 and ". " in reason:
        reason = reason[: reason.index(". ") + 1]
    return reason.rstrip(".")


def learned_from(record: dict, dataset: TimeSeriesDataset) -> bool:
    """Whether a checkpoint's or state's dataset record describes the TRAIN data of `dataset`: training reads TRAIN
    alone, so a model fits any TEST beside it. A record written before it held train_fingerprint is matched on
    TRAIN and TEST."""
    if "train_fingerprint" in record:
        return record["train_fingerprint"] == dataset.train_fingerprint()
    return record.get("fingerprint") == dataset.fingerprint()


def check_checkpoint_matches(checkpoint: dict, dataset: TimeSeriesDataset, path: Path) -> None:
    """Refuse a checkpoint of another dataset, channel count or TRAIN; a checkpoint written before the record
    held train_fingerprint must match TRAIN and TEST."""
    trained_on = checkpoint["dataset"]
    if trained_on["name"] != dataset.name:
        # The label joins dataset and entity (SMD_machine-1-3), which --dataset alone does not accept.
        flags = label_flags(trained_on["name"], DATASET_NAMES)
        fix = f"pass {flags} or the {dataset.name} checkpoint" if flags else f"pass the {dataset.name} checkpoint"
        raise UserInputError(f"checkpoint {path} was trained on {trained_on['name']}, not {dataset.name}; {fix}")
    if trained_on["n_channels"] != dataset.n_channels:
        raise UserInputError(
            f"checkpoint {path} expects {trained_on['n_channels']} channels but {dataset.name} data have "
            f"{dataset.n_channels}; retrain on these data"
        )
    if learned_from(trained_on, dataset):
        return
    if "train_fingerprint" in trained_on:
        raise UserInputError(
            f"checkpoint {path} was trained on different {dataset.name} TRAIN data (fingerprint mismatch); "
            "retrain on these data or point --data-dir at the data it was trained on"
        )
    raise UserInputError(
        f"checkpoint {path} was trained on different {dataset.name} data (fingerprint mismatch) and predates "
        "matching on TRAIN alone, so a new TEST needs a retrain too; retrain on these data or point --data-dir "
        "at the data it was trained on"
    )


def set_aside_model_of_other_data(path: Path, dataset: TimeSeriesDataset) -> Path | None:
    """Before a new model of `dataset` is saved at `path`: a model of other TRAIN data already there (another
    CUSTOM folder trained into the same --output-dir) is renamed to {stem}.{its fingerprint}.pth, not
    replaced; its new path, or None where there was nothing to keep (no file, the same data, no record)."""
    if not path.is_file():
        return None
    try:
        checkpoint = _safe_load(path, "it is replaced")
    except UserInputError:  # a file no checkpoint reader opens holds no model to keep
        return None
    record = checkpoint.get("dataset") if isinstance(checkpoint, dict) else None
    fingerprint = record.get("fingerprint") if isinstance(record, dict) else None
    if not isinstance(fingerprint, str) or learned_from(record, dataset):  # a retrain on the same TRAIN replaces it
        return None
    kept = path.with_name(f"{path.stem}.{fingerprint[:12]}{path.suffix}")
    path.replace(kept)
    return kept


def load_last_state(path: Path) -> dict:
    """The resumable state of a run (a finished one too: its end, the final TRAIN scoring, can be redone),
    checked against its schema, or a clear error saying why it cannot resume."""
    if not path.is_file():
        raise UserInputError(
            f"{path} {missing_file_reason(path)}, so there is nothing to resume; start without --resume"
        )
    state = _safe_load(path, "start without --resume")
    if not isinstance(state, dict) or state.get("kind") != "last":
        raise UserInputError(f"{path} is not a resumable state of this tool; start without --resume")
    check_last_state(state, path)
    return state
