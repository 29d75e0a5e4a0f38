"""Datasets, normalisation and windowing: the first stage of data_factory -> model -> evaluation."""

from data_factory.dataset import TimeSeriesDataset
from data_factory.names import DEFAULT_DATA_DIR
from data_factory.registry import DATASET_NAMES, load_dataset
from data_factory.synthetic import SynthSpec, generate_synthetic
from data_factory.windows import Normalizer
from runtime.errors import UserInputError

__all__ = [
    "DATASET_NAMES",
    "DEFAULT_DATA_DIR",
    "Normalizer",
    "SynthSpec",
    "TimeSeriesDataset",
    "UserInputError",
    "generate_synthetic",
    "load_dataset",
]
