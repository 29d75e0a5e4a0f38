"""One config: every default written once (DetectorConfig), read by the flags, layered with presets."""

import re
from dataclasses import fields

import numpy as np
import pytest

import train
from model.config import DATASET_PRESETS, PRESETS, DetectorConfig, config_from_flags
from runtime.errors import UserInputError


def parsed(*flags: str):
    args = train.build_parser().parse_args(list(flags))
    return config_from_flags(args, args.preset, args.dataset)


def test_without_flags_the_config_is_the_dataclass_defaults():
    assert parsed() == DetectorConfig()


def test_every_config_field_is_a_train_flag_whose_help_shows_the_dataclass_default():
    text = " ".join(train.build_parser().format_help().split()).split("options:", 1)[1]
    for spec in fields(DetectorConfig):
        flag = "--" + spec.name.replace("_", "-")
        assert f"{flag} " in text, flag
        if spec.default is None or isinstance(spec.default, bool):
            continue
        shown = re.search(r"\(default: ([^)]+)\)", text.split(f"{flag} ", 1)[1]).group(1)
        if isinstance(spec.default, int | float):
            assert float(shown) == spec.default, spec.name
        else:
            assert shown == spec.default, spec.name


def test_flags_override_the_preset_which_overrides_the_defaults():
    paper = parsed("--preset", "paper")
    assert (paper.d_model, paper.batch_size, paper.epochs, paper.val_ratio, paper.score) == (512, 256, 3, 0.0, "paper")
    assert paper.lr == DetectorConfig().lr  # a field the preset leaves alone keeps its default
    mine = parsed("--preset", "paper", "--epochs", "5", "--val-ratio", "0.1", "--score", "reconstruction")
    assert (mine.epochs, mine.val_ratio, mine.score, mine.d_model) == (5, 0.1, "reconstruction", 512)


def test_the_paper_preset_on_smd_is_the_references_smd_recipe():
    smd = parsed("--preset", "paper", "--dataset", "SMD")
    assert (smd.epochs, smd.train_stride) == (10, 100)
    assert parsed("--preset", "paper", "--dataset", "SMD", "--epochs", "2").epochs == 2
    assert parsed("--preset", "paper", "--dataset", "MSL").epochs == 3


def test_every_preset_key_is_a_config_field():
    names = {spec.name for spec in fields(DetectorConfig)}
    for values in [*PRESETS.values(), *DATASET_PRESETS.values()]:
        assert set(values) <= names


def test_settings_stored_by_older_checkpoints_are_read():
    old = {"epochs": 2, "score_variant": "paper", "n_channels": 4, "retired_setting": 1}
    config = DetectorConfig.from_dict(old)
    assert (config.epochs, config.score) == (2, "paper")


@pytest.mark.parametrize(
    ("changes", "flag"),
    [({"d_model": 30, "n_heads": 8}, "--n-heads"), ({"val_ratio": 1.0}, "--val-ratio"), ({"epochs": 0}, "--epochs"),
     ({"score": "magic"}, "unknown score"), ({"threshold_percentile": 100.0}, "--threshold-percentile")],
)  # fmt: skip
def test_an_out_of_range_setting_is_named_in_the_error(changes, flag):
    with pytest.raises(UserInputError, match=flag):
        DetectorConfig(**changes).validate()


def test_per_entity_training_takes_the_fleet_preset_unless_another_is_given(tmp_path):
    from model.fleet import Fleet
    from tests.test_fleet import write_fleet_data

    data = write_fleet_data(tmp_path)
    base = ["--dataset", "CUSTOM", "--data-dir", str(data), "--per-entity", "--jobs", "1", "--no-progress",
            "--device", "cpu", "--entities", "east", "--win-size", "20"]  # fmt: skip
    assert train.main([*base, "--output-dir", str(tmp_path / "a"), "--epochs", "1"]) == 0
    config = Fleet.load(tmp_path / "a" / "CUSTOM_fleet.pth").config
    assert (config.d_model, config.e_layers, config.lr, config.train_stride) == (64, 2, 1e-3, 5)
    small = ["--preset", "small", "--epochs", "1", "--train-stride", "20", "--output-dir", str(tmp_path / "b")]
    assert train.main([*base, *small]) == 0
    assert Fleet.load(tmp_path / "b" / "CUSTOM_fleet.pth").config.d_model == 128


def test_a_training_run_checks_its_settings_once_one_model_or_a_fleet(tmp_path, monkeypatch):
    from tests.test_fleet import write_fleet_data
    from tests.tiny import TINY_TRAIN_FLAGS

    checks = []
    validate = DetectorConfig.validate

    def counted(config, check_device=True):
        checks.append(check_device)
        return validate(config, check_device)

    monkeypatch.setattr(DetectorConfig, "validate", counted)
    assert train.main(["--dataset", "SYNTH", "--output-dir", str(tmp_path / "one"), *TINY_TRAIN_FLAGS]) == 0
    assert checks == [True]  # at the entry, before any file is written; not again in Detector.fit
    checks.clear()
    data = write_fleet_data(tmp_path)
    fleet = ["--dataset", "CUSTOM", "--data-dir", str(data), "--per-entity", "--jobs", "1", "--output-dir",
             str(tmp_path / "fleet"), *TINY_TRAIN_FLAGS]  # fmt: skip
    assert train.main(fleet) == 0
    assert checks == [True]  # not again per entity, nor when the fleet is prepared


@pytest.mark.parametrize(("d_model", "n_heads", "divisor"), [(60, 7, 6), (64, 6, 4), (7, 8, 7), (30, 4, 3)])
def test_a_head_count_that_does_not_divide_d_model_is_answered_with_one_that_does(d_model, n_heads, divisor):
    with pytest.raises(UserInputError, match=f"pick a divisor such as {divisor}$") as refused:
        DetectorConfig(d_model=d_model, n_heads=n_heads).validate(check_device=False)
    assert d_model % divisor == 0 and f"--n-heads {n_heads} does not divide --d-model {d_model}" in str(refused.value)


def test_a_train_shorter_than_the_window_names_a_validation_tail_only_where_one_is_held_back():
    from model.solver import split_validation

    series = np.zeros((150, 2), dtype=np.float32)
    with pytest.raises(UserInputError, match=r"^X train has 150 time steps, fewer than the window of 200"):
        split_validation(series, DetectorConfig(win_size=200, val_ratio=0.0), "X")
    with pytest.raises(UserInputError, match=r"^X train \(without its validation tail\) has 120 time steps"):
        split_validation(series, DetectorConfig(win_size=200, val_ratio=0.2), "X")
