"""Score new data with a trained checkpoint: python detect.py --checkpoint CHECKPOINT --input new.csv

The input (.csv, .npy, .parquet, or - for CSV on stdin) is read in chunks of --chunk-rows rows,
normalised with the checkpoint's TRAIN statistics and scored exactly as evaluate.py scores a
test split; points are flagged by the decision rule stored in the checkpoint (evaluation/detection.py),
and each run of flagged points is one incident, written beside the output (evaluation/incidents.py).
With --follow it is a live stream instead: rows scored as they arrive, incidents printed as JSON lines
when they open and close (evaluation/follow.py).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from data_factory import UserInputError
from data_factory.missing import NAN_POLICIES
from data_factory.readers import DEFAULT_TIME_COLUMN
from evaluation.detection import check_detect_flags, detect, summary_lines
from evaluation.follow import DEFAULT_POLL_SECONDS, follow
from evaluation.incidents import write_incidents_csv
from model.alarm_rule import ALARM_RULES, rules_help
from model.config import DEVICES, DetectorConfig
from model.detector import SCORE_PERCENTILES
from runtime.atomic import atomic_paths, ensure_writable_dir, json_text, new_folders_kept_only_on_success, run_stoppably
from runtime.distributed import DistributedContext, init_distributed, shutdown_distributed
from runtime.errors import end_quietly_on_broken_pipe, error_line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detect.py",
                                     description="Score new data with a trained checkpoint and flag anomalies.")
    add = parser.add_argument
    add("--checkpoint", required=True, help="a checkpoint written by train.py")
    add("--input", required=True, help="a .csv, .npy or .parquet file with the training columns, or - for CSV on stdin")
    add("--output", default="artifacts/detections.csv",
        help="per-point CSV, - for stdout (default: artifacts/detections.csv)")
    add("--report", default=None,
        help="JSON report with the drift section (default: the output path with .json; none for --output -)")
    stored = ", ".join(f"{q:g}" for q in SCORE_PERCENTILES)
    add("--threshold-percentile", type=float, default=None,
        help=f"stored percentile of TRAIN scores to flag above: {stored} or the one trained with "
        f"(default: the checkpoint's, {DetectorConfig.threshold_percentile:g} unless trained otherwise)")
    add("--threshold", type=float, default=None, help="flag above this score instead of the stored decision rule")
    add("--alarm-rule", choices=ALARM_RULES, default=None,
        help=f"{rules_help()} (default: the checkpoint's)".replace("%", "%%"))
    add("--alarm-window", type=int, default=None,
        help="recent scores the guarded and budget rules read; at most the checkpoint's (default: the checkpoint's)")
    add("--top-sensors", type=int, default=3, help="sensors listed for each flagged point (default: 3)")
    add("--nan", choices=NAN_POLICIES, default="fail",
        help="fail: stop at the first NaN/Inf; fill: carry each channel's last value forward, "
        "its TRAIN mean before the first one (default: fail)")
    add("--timestamp-column", default=DEFAULT_TIME_COLUMN,
        help="CSV/parquet column echoed as the first output column (default: timestamp, or else a first column "
        "named time, date or datetime, as CUSTOM reads it)")
    add("--chunk-rows", type=int, default=100_000, help="rows read and scored at a time (default: 100000)")
    defaults = DetectorConfig()  # the scoring defaults are the training ones, written once there
    add("--batch-size", type=int, default=defaults.batch_size,
        help=f"scoring batch size (default: {defaults.batch_size})")
    add("--device", choices=DEVICES, default=defaults.device, help=f"where to score (default: {defaults.device})")
    add("--entity", default=None, help="a fleet bundle: score every row with this entity's model")
    add("--entity-column", default=None,
        help="a fleet bundle: route each row to the model of the entity named in this column")
    add("--follow", action="store_true",
        help="a live stream: read --input (a CSV file that grows, or - for stdin) as rows arrive and print each "
        "incident as a JSON line on stdout when it opens and when it closes; no per-point CSV")
    add("--state", default=None,
        help="with --follow: keep the stream's state in this file after each commit, and resume from it on restart")
    add("--poll-seconds", type=float, default=DEFAULT_POLL_SECONDS,
        help=f"with --follow on a file: seconds between looks for new lines (default: {DEFAULT_POLL_SECONDS:g})")
    return parser  # fmt: skip


def _same_file(first: Path, second: Path) -> bool:
    """One file under two names: the same resolved path (symlinks, relative parts) or the same inode (hard links)."""
    if os.path.realpath(first) == os.path.realpath(second):
        return True
    try:
        return first.exists() and second.exists() and os.path.samefile(first, second)
    except OSError:
        return False


def check_outputs(args: argparse.Namespace, outputs: dict[str, Path]) -> None:
    """Refuse, before anything is read or written, an output that is a folder or that would overwrite the
    input, the checkpoint or the other output."""
    sources = {"--input": args.input, "--checkpoint": args.checkpoint}
    for flag, path in outputs.items():
        if path.is_dir():
            raise UserInputError(f"{flag} {path} is a folder; give a file name, e.g. {path / 'detections.csv'}")
        for source_flag, source in sources.items():
            if source != "-" and _same_file(path, Path(source).expanduser()):
                raise UserInputError(
                    f"{flag} {path} is the same file as {source_flag} {source}, which writing it would destroy; "
                    f"choose another {flag}"
                )
    flags = list(outputs)
    for number, first in enumerate(flags):
        for second in flags[number + 1 :]:
            if _same_file(outputs[first], outputs[second]):
                raise UserInputError(f"{first} and {second} are the same file ({outputs[first]}); give them two names")


def incident_paths(output: Path | None, report: Path | None) -> dict[str, Path]:
    """{stem}_incidents.csv and .json beside --output, or beside --report when the CSV goes to stdout."""
    base = output or report
    if base is None:
        return {}
    stem = base.with_suffix("").name
    return {"incidents CSV": base.with_name(f"{stem}_incidents.csv"),
            "incidents JSON": base.with_name(f"{stem}_incidents.json")}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.follow:
        return run_stoppably(lambda: run_follow(args, parser), "nothing")
    if args.state is not None:
        parser.error("--state goes with --follow")
    return run_stoppably(lambda: run(args), "nothing")


def run_follow(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """detect.py --follow: evaluation/follow.py's live stream; the flags that shape a whole-file run are refused."""
    for flag, given, default in (("--output", args.output, parser.get_default("output")),
                                 ("--report", args.report, None),
                                 ("--batch-size", args.batch_size, parser.get_default("batch_size"))):  # fmt: skip
        if given != default and not (flag == "--batch-size" and given == 1):
            message = f"{flag} does not go with --follow, which prints incidents on stdout and scores each window"
            print(error_line(UserInputError(message + " as soon as it is full")), file=sys.stderr)
            return 2
    try:
        check_detect_flags(args.chunk_rows, 1, args.top_sensors, args.nan, args.device, args.threshold)
        state = Path(args.state).expanduser() if args.state else None
        rule_options = {"percentile": args.threshold_percentile, "value": args.threshold, "kind": args.alarm_rule,
                        "window": args.alarm_window}  # fmt: skip
        with new_folders_kept_only_on_success([] if state is None else [state.parent]):
            if state is not None:
                check_outputs(args, {"--state": state})
                ensure_writable_dir(state.parent)
            return follow(args.checkpoint, args.input, sys.stdout, state_path=state, poll_seconds=args.poll_seconds,
                          rule_options=rule_options, top_sensors=args.top_sensors, nan_policy=args.nan,
                          timestamp_column=args.timestamp_column, device=args.device, entity=args.entity,
                          entity_column=args.entity_column)  # fmt: skip
    except UserInputError as error:
        print(error_line(error), file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of the incident lines went away
        return end_quietly_on_broken_pipe()


def run(args: argparse.Namespace) -> int:
    to_stdout = args.output == "-"
    report_path = Path(args.report) if args.report else (None if to_stdout else Path(args.output).with_suffix(".json"))
    outputs = {flag: path.expanduser() for flag, path in
               (("--output", None if to_stdout else Path(args.output)), ("--report", report_path)) if path is not None}
    outputs |= incident_paths(outputs.get("--output"), outputs.get("--report"))
    options = {
        "threshold_percentile": args.threshold_percentile,
        "threshold": args.threshold,
        "alarm_rule": args.alarm_rule,
        "alarm_window": args.alarm_window,
        "top_sensors": args.top_sensors,
        "nan_policy": args.nan,
        "timestamp_column": args.timestamp_column,
        "chunk_rows": args.chunk_rows,
        "batch_size": args.batch_size,
        "device": args.device,
        "entity": args.entity,
        "entity_column": args.entity_column,
    }
    context = init_distributed(args.device)  # under torchrun the ranks share the forward passes
    try:
        with new_folders_kept_only_on_success(path.parent for path in outputs.values() if context.is_main):
            return _detect_into(args, outputs, options, context, to_stdout)
    except UserInputError as error:
        if context.is_main:  # the other ranks meet the same error; one line is enough
            print(error_line(error), file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of --output - (e.g. head) stopped early
        return end_quietly_on_broken_pipe()
    except RuntimeError:
        if context.is_main:
            raise
        return 1  # rank 0 stopped mid-run (its own error says why): the gather has no peer left
    finally:
        shutdown_distributed()


def _detect_into(
    args: argparse.Namespace, outputs: dict[str, Path], options: dict, context: DistributedContext, to_stdout: bool
) -> int:
    """The whole-file run once the flags are read: score, write the CSV, the report and the incidents, summarise."""
    if context.enabled and "-" in (args.input, args.output):
        raise UserInputError("under torchrun every rank reads --input and rank 0 writes --output: give files, not -")
    check_detect_flags(args.chunk_rows, args.batch_size, args.top_sensors, args.nan, args.device, args.threshold)
    check_outputs(args, outputs)
    # Every rank checks the folders, so a bad one stops them all before any scoring.
    for path in outputs.values():
        ensure_writable_dir(path.parent)
    if not context.is_main:  # score its share of the batches; rank 0 writes everything
        with open(os.devnull, "w") as sink:
            detect(args.checkpoint, args.input, sink, **options, context=context)
        return 0
    # The CSV and the report go to temp files, renamed together at the end: replaced together or not at all.
    with atomic_paths(outputs.values()) as temps:
        staged = dict(zip(outputs, temps, strict=True))
        with contextlib.ExitStack() as stack:
            output = sys.stdout if to_stdout else stack.enter_context(open(staged["--output"], "w", newline=""))
            report = detect(args.checkpoint, args.input, output, **options, context=context)
        incidents = report["incidents"]  # its own files; the report keeps the count
        if "--report" in staged:
            kept = {key: value for key, value in report.items() if key != "incidents"}
            staged["--report"].write_text(json_text(kept | {"n_incidents": incidents["n_incidents"]}))
        if "incidents JSON" in staged:
            staged["incidents JSON"].write_text(json_text(incidents))
            write_incidents_csv(incidents, staged["incidents CSV"])
    for line in summary_lines(report):
        print(line, file=sys.stderr)
    if outputs:
        print("wrote " + ", ".join(str(p) for p in outputs.values()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
