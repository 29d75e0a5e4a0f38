"""Property-based bad input: random shapes, dtypes, NaN patterns, lengths around the window, channel
mismatches, flag combinations of train, evaluate and detect, and checkpoints and resumable states
edited by hand. Every case must end in success or in a documented one-line error, never in an
unhandled traceback."""

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import evaluate
import train
from data_factory import UserInputError, load_dataset

CASES = {"loader": 0, "cli": 0, "trained": 0, "evaluated": 0}


def pick(draw, sane: bool, valid: list, invalid: list):
    """A valid value when the case is meant to be sane, else any value: half the cases get far."""
    return draw(st.sampled_from(valid if sane else valid + invalid))


@st.composite
def arrays(draw, rows: int, columns: int, sane: bool) -> np.ndarray:
    dtype = pick(draw, sane, ["float32", "float64", "int64"], ["bool", "complex64", "U3"])
    values = np.random.default_rng(draw(st.integers(0, 2**16))).normal(size=(rows, columns))
    if dtype == "U3":
        return values.astype(str).astype("U3")
    array = values.astype(dtype)
    if array.dtype.kind == "f" and array.size and pick(draw, sane, [False], [True]):
        flat = array.reshape(-1)
        picks = draw(st.lists(st.integers(0, flat.size - 1), min_size=1, max_size=4))
        flat[picks] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    if pick(draw, sane, [False], [True]):
        array = array.reshape(rows, columns, 1)  # a rank the loaders must refuse
    return array


@st.composite
def custom_folders(draw, sane: bool) -> dict:
    window = draw(st.integers(2, 12))
    columns = pick(draw, sane, [1, 2, 4], [0])
    train_rows = pick(draw, sane, [8 * window, 20 * window], [0, 1, window - 1, window])
    test_rows = pick(draw, sane, [window + 1, 5 * window], [0, 1, window - 1])
    return {
        "window": window,
        "train": draw(arrays(train_rows, columns, sane)),
        "test": draw(arrays(test_rows, pick(draw, sane, [columns], [0, columns + 1]), sane)),
        "labels": pick(draw, sane, ["none", "good"], ["short", "non-binary"]),
        "format": draw(st.sampled_from(["npy", "csv"])),
    }


def write_folder(folder: Path, case: dict) -> None:
    test_rows = case["test"].shape[0]
    label_values = {
        "none": None,
        "good": np.arange(test_rows) % 7 == 0,
        "short": np.zeros(max(test_rows - 1, 0)),
        "non-binary": np.full(test_rows, 3),
    }[case["labels"]]
    for stem, array in (("train_data", case["train"]), ("test_data", case["test"]), ("test_labels", label_values)):
        if array is None:
            continue
        array = np.asarray(array)
        if case["format"] == "npy":
            np.save(folder / f"{stem}.npy", array)
        else:
            rows = array.reshape(array.shape[0], int(np.prod(array.shape[1:])))  # CSV is 2-D
            np.savetxt(folder / f"{stem}.csv", rows, delimiter=",", fmt="%s")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), sane=st.booleans())
def test_custom_loader_accepts_or_refuses_clearly(data, sane):
    case = data.draw(custom_folders(sane))
    CASES["loader"] += 1
    with tempfile.TemporaryDirectory() as folder:
        write_folder(Path(folder), case)
        try:
            dataset = load_dataset("CUSTOM", folder)
        except UserInputError as error:
            assert str(error) and "\n" not in str(error)
            return
        assert dataset.train.dtype == np.float32 and np.isfinite(dataset.train).all()
        assert dataset.test.shape[1] == dataset.train.shape[1]


FLAG_VALUES = {  # flag: (valid values, invalid values)
    "--d-model": (["4", "8"], ["0", "6"]),
    "--n-heads": (["1", "2"], ["3", "-1"]),
    "--batch-size": (["4", "16"], ["0"]),
    "--epochs": (["1"], ["0", "-2"]),
    "--lr": (["1e-3"], ["-1", "0", "nan"]),
    "--val-ratio": (["0", "0.2"], ["0.99", "1.5", "-0.1"]),
    "--train-stride": (["1", "3"], ["0"]),
    "--patience": (["1", "3"], ["0"]),
    "--score": (["paper", "reconstruction", "discrepancy"], ["bogus"]),
    "--score-channels": (["all", "target", "0"], ["nope", "0,0", "999"]),
    "--smooth": (["0", "3", "500"], ["-1", "x"]),  # 500: longer than some series
    "--seed": (["0", "7"], ["-1", str(2**32)]),
    "--num-workers": (["0"], ["-1"]),
    "--temperature": (["50", "1"], ["0", "-1", "nan", "inf"]),
    "--k": (["3", "0"], ["-1", "nan"]),
}


# capsys is read and cleared after every CLI call, so sharing it across examples is safe.
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    data=st.data(),
    sane=st.booleans(),
    window_offset=st.sampled_from([-1, 0, 1]),
    threshold=st.sampled_from(["50", "99", "100", "-1"]),
)
@pytest.mark.slow
def test_both_clis_end_in_success_or_a_documented_error(capsys, data, sane, window_offset, threshold):
    CASES["cli"] += 1
    case = data.draw(custom_folders(sane))
    flags = {flag: pick(data.draw, sane, *values) for flag, values in FLAG_VALUES.items()}
    with tempfile.TemporaryDirectory() as folder:
        data, out = Path(folder) / "data", Path(folder) / "out"
        data.mkdir()
        write_folder(data, case)
        common = ["--dataset", "CUSTOM", "--data-dir", str(data), "--output-dir", str(out)]
        args = [
            *common,
            "--win-size",
            str(case["window"] + window_offset),
            "--d-ff",
            "8",
            "--e-layers",
            "1",
            "--device",
            "cpu",
            "--no-progress",
            *[item for pair in flags.items() for item in pair],
        ]
        code = run_cli(train.main, args)
        err = capsys.readouterr().err.strip()
        assert code in (0, 1, 2), err
        if code == 1:
            assert "non-finite" in err
        if code == 2:
            assert err.splitlines()[-1].startswith(("error:", "train.py: error:")), err
        if code != 0:
            return
        CASES["trained"] += 1
        code = run_cli(evaluate.main, [*common, "--threshold-percentile", threshold, "--baselines", "all"])
        err = capsys.readouterr().err.strip()
        assert code in (0, 2), err
        if code == 2:
            assert err.splitlines()[-1].startswith(("error:", "evaluate.py: error:")), err
        else:
            CASES["evaluated"] += 1


def run_cli(main, args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as exit_info:  # argparse refuses a malformed flag value with exit code 2
        return exit_info.code


@pytest.fixture(scope="module", autouse=True)
def report_case_counts():
    yield
    print(
        f"\nfuzz cases run: {CASES['loader']} loader, {CASES['cli']} CLI "
        f"({CASES['trained']} trained, {CASES['evaluated']} also evaluated)"
    )


# ---- edited checkpoints: each edit is refused with one line that names the key ---------------------------


def _set(path: tuple, value):
    def edit(record: dict) -> None:
        for key in path[:-1]:
            record = record[key]
        record[path[-1]] = value

    return edit


def _drop(path: tuple):
    def edit(record: dict) -> None:
        for key in path[:-1]:
            record = record[key]
        del record[path[-1]]

    return edit


def _reshape(name: str):
    def edit(record: dict) -> None:
        record["model_state"][name] = torch.zeros(3, 3)

    return edit


CHECKPOINT_EDITS = {  # edit: (change, what the error says)
    "dataset name deleted": (_drop(("dataset", "name")), "dataset['name'] is missing"),
    "normalization std deleted": (_drop(("normalization", "std")), "normalization['std'] is missing"),
    "a weight deleted": (_drop(("model_state", "projection.bias")), "model_state['projection.bias'] is missing"),
    "win_size as text": (_set(("model_config", "win_size"), "20"), "model_config['win_size'] is str '20'"),
    "win_size 20 edited to 30": (_set(("model_config", "win_size"), 30),
                                 "train_config['win_size'] is 20 but model_config['win_size'] is 30"),
    "d_model of other weights": (_set(("model_config", "d_model"), 32),
                                 "train_config['d_model'] is 16 but model_config['d_model'] is 32: they disagree"),
    "d_model of other weights, both edited": (lambda c: (c["model_config"].update(d_model=32),
                                                         c["train_config"].update(d_model=32)),
                                              "model_state['embedding.token.weight'] has shape (16, 12, 3), not "
                                              "(32, 12, 3)"),
    "d_model 2**20, both edited": (lambda c: (c["model_config"].update(d_model=2**20),
                                              c["train_config"].update(d_model=2**20)),
                                   "far fewer than a model of this model_config"),
    "a weight of another shape": (_reshape("projection.weight"), "model_state['projection.weight'] has shape (3, 3)"),
    "a NaN weight": (_set(("model_state", "projection.bias"), torch.full((12,), float("nan"))), "NaN or infinite"),
    "score channel 99": (_set(("scoring", "channels"), [99]), "scoring['channels'] names channel 99, outside 0..11"),
    "temperature NaN": (_set(("scoring", "temperature"), float("nan")), "scoring['temperature'] is nan"),
    "NaN threshold": (_set(("train_scores", "percentiles", "99.0"), float("nan")), "not a finite number"),
    "std of 5 channels": (_set(("normalization", "std"), torch.ones(5)), "normalization['std'] has shape (5,)"),
    "format_version 99": (_set(("format_version",), 99), "has format_version 99, but this tool reads version 1"),
    "n_heads as a float": (_set(("model_config", "n_heads"), 2.0), "model_config['n_heads'] is float 2.0"),
}  # fmt: skip
BUNDLE_EDITS = {  # edits of tests/fixtures/fleet_bundle_CUSTOM.pth: (change, what the error says)
    "an entity's weight deleted": (_drop(("entities", "west", "model_state", "projection.bias")),
                                   "(entity west) is damaged or was edited: model_state['projection.bias'] is missing"),
    "an entity's std deleted": (_drop(("entities", "east", "normalization", "std")),
                                "(entity east) is damaged or was edited: normalization['std'] is missing"),
    "an entity's window edited": (_set(("entities", "west", "model_config", "win_size"), 30),
                                  "(entity west) is damaged or was edited: model_config['win_size'] disagrees with "
                                  "the bundle's config['win_size']"),
    "an entity as a number": (_set(("entities", "east"), 3), "entities['east'] is not a record"),
    "shared epochs as text": (_set(("config", "epochs"), "x"), "config['epochs'] is 'x', not a whole number"),
    "skipped as numbers": (_set(("skipped",), {"stub": 3}), "'skipped' is not a map of entity to reason"),
    "format_version 99": (_set(("format_version",), 99), "fleet bundle"),
}  # fmt: skip
LAST_EDITS = {
    "resume step 10**6": (_set(("step",), 10**6), "at step 1000000 of epoch 1, which has"),
    "finished deleted": (_drop(("finished",)), "'finished' is missing"),
    "finished as text": (_set(("finished",), "yes"), "'finished' is str 'yes', not bool"),
    "epoch 0": (_set(("epoch",), 0), "'epoch' is 0, not an epoch of this run (1 to 2"),
    "a best weight of another shape": (lambda state: state["best_state"].__setitem__("projection.bias", torch.ones(2)),
                                       "best_state['projection.bias'] has shape (2,)"),
    "format_version 99": (_set(("format_version",), 99), "has format_version 99"),
}  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from tests.tiny import TINY_TRAIN_FLAGS

    out = tmp_path_factory.mktemp("tiny")
    assert train.main(["--dataset", "SYNTH", "--output-dir", str(out), *TINY_TRAIN_FLAGS]) == 0
    np.save(out / "day.npy", load_dataset("SYNTH").test[:300])
    return out


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("edit", list(CHECKPOINT_EDITS))
def test_an_edited_checkpoint_is_refused_by_every_cli_naming_the_key(tiny_run, tmp_path, capsys, edit):
    import detect
    import inspect_checkpoint

    change, message = CHECKPOINT_EDITS[edit]
    checkpoint = torch.load(tiny_run / "SYNTH_checkpoint.pth", weights_only=True)
    change(checkpoint)
    edited = tmp_path / "edited.pth"
    torch.save(checkpoint, edited)
    runs = [
        (evaluate, ["--dataset", "SYNTH", "--checkpoint", str(edited), "--output-dir", str(tmp_path / "eval")]),
        (detect, ["--checkpoint", str(edited), "--input", str(tiny_run / "day.npy"), "--output",
                  str(tmp_path / "d.csv")]),
        (inspect_checkpoint, [str(edited)]),
    ]  # fmt: skip
    for module, args in runs:
        assert run_cli(module.main, args) == 2, module.__name__
        assert message in one_line(capsys.readouterr().err), module.__name__
    assert not (tmp_path / "d.csv").exists() and not list((tmp_path / "eval").glob("SYNTH_*"))


@pytest.mark.parametrize("edit", list(BUNDLE_EDITS))
def test_an_edited_bundle_is_refused_naming_the_entity_and_the_key(tmp_path, capsys, edit):
    import inspect_checkpoint

    change, message = BUNDLE_EDITS[edit]
    bundle = torch.load(Path(__file__).parent / "fixtures" / "fleet_bundle_CUSTOM.pth", weights_only=True)
    change(bundle)
    torch.save(bundle, tmp_path / "CUSTOM_fleet.pth")
    assert run_cli(inspect_checkpoint.main, [str(tmp_path / "CUSTOM_fleet.pth")]) == 2
    error = one_line(capsys.readouterr().err)
    assert error.startswith(f"error: fleet bundle {tmp_path / 'CUSTOM_fleet.pth'}") and message in error
    assert "retrain it" in error


@pytest.mark.parametrize("edit", list(LAST_EDITS))
def test_an_edited_resumable_state_is_refused_naming_the_field(tiny_run, tmp_path, capsys, edit):
    change, message = LAST_EDITS[edit]
    state = torch.load(tiny_run / "SYNTH_last.pth", weights_only=True)
    state.update(finished=False, epoch=1, step=0)  # an unfinished run, then the edit
    state["train_config"]["epochs"] = 2
    change(state)
    torch.save(state, tmp_path / "SYNTH_last.pth")
    before = (tmp_path / "SYNTH_last.pth").read_bytes()
    assert run_cli(train.main, ["--resume", "--dataset", "SYNTH", "--output-dir", str(tmp_path), "--no-progress"]) == 2
    assert message in one_line(capsys.readouterr().err)
    assert (tmp_path / "SYNTH_last.pth").read_bytes() == before and not (tmp_path / "SYNTH_checkpoint.pth").exists()


# ---- flag values of evaluate and detect ---------------------------------------------------------------------

DETECT_FLAGS = {  # flag: (valid values, invalid values)
    "--batch-size": (["16", "128"], ["0", "-3"]),
    "--chunk-rows": (["50", "100000"], ["0"]),
    "--top-sensors": (["1", "3"], ["0"]),
    "--threshold-percentile": (["99", "95"], ["97", "nan", "-5"]),
    "--threshold": ([], ["nan", "inf"]),  # without one: the stored percentile
    "--device": (["cpu"], [] if torch.cuda.is_available() else ["cuda"]),
}
EVALUATE_FLAGS = {
    "--batch-size": (["64"], ["0"]),
    "--seed": (["0", "9"], ["-1"]),
    "--threshold-percentile": (["99"], ["0", "100", "nan"]),
    "--top-sensors": (["2"], ["0"]),
    "--explain": (["0"], ["-1"]),
    "--smooth": (["0", "5"], ["-1"]),
    "--score-channels": (["all", "0"], ["99", "nope"]),
    "--device": (["cpu"], [] if torch.cuda.is_available() else ["cuda"]),
}


def draw_flags(draw, table: dict, sane: bool) -> list[str]:
    chosen = []
    for flag, (valid, invalid) in table.items():
        values = valid if sane else valid + invalid
        if values and draw(st.booleans()):
            chosen += [flag, draw(st.sampled_from(values))]
    return chosen


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), sane=st.booleans())
def test_detect_flags_end_in_success_or_one_line_before_writing(tiny_run, tmp_path, capsys, data, sane):
    import detect

    flags = draw_flags(data.draw, DETECT_FLAGS, sane)
    output = Path(tempfile.mkdtemp(dir=tmp_path)) / "d.csv"  # a fresh folder for every example
    args = ["--checkpoint", str(tiny_run / "SYNTH_checkpoint.pth"), "--input", str(tiny_run / "day.npy"),
            "--output", str(output), *flags]  # fmt: skip
    code = run_cli(detect.main, args)
    err = capsys.readouterr().err
    assert code in (0, 2), err
    if code == 2:
        assert err.strip().splitlines()[-1].startswith(("error:", "detect.py: error:")), err
        assert not output.exists()
    elif sane:
        assert output.exists()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), sane=st.booleans())
@pytest.mark.slow
def test_evaluate_flags_end_in_success_or_one_line_before_writing(tiny_run, tmp_path, capsys, data, sane):
    flags = draw_flags(data.draw, EVALUATE_FLAGS, sane)
    out = Path(tempfile.mkdtemp(dir=tmp_path)) / "out"
    args = ["--dataset", "SYNTH", "--checkpoint", str(tiny_run / "SYNTH_checkpoint.pth"), "--output-dir", str(out),
            "--baselines", "random", *flags]  # fmt: skip
    code = run_cli(evaluate.main, args)
    err = capsys.readouterr().err
    assert code in (0, 2), err
    if code == 2:
        assert err.strip().splitlines()[-1].startswith(("error:", "evaluate.py: error:")), err
        assert not out.exists() or not list(out.glob("SYNTH_*"))
