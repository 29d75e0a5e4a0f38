"""Evaluate a trained checkpoint: python evaluate.py --dataset SYNTH [--protocol paper]

Under torchrun (torchrun --nproc_per_node N evaluate.py ...) the ranks share the forward passes.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from data_factory import DATASET_NAMES, DEFAULT_DATA_DIR, UserInputError
from data_factory.names import dataset_label
from evaluation import PROTOCOLS, ThresholdSettings, evaluate_checkpoint, format_table, write_artifacts
from evaluation.attribution import format_summary
from evaluation.baselines import DEFAULT_FLEET_BASELINES, baselines_help, parse_baselines
from evaluation.drift import drift_warning
from evaluation.fleet_report import drift_lines, evaluate_fleet, format_fleet_table, write_fleet_artifacts
from evaluation.method_scores import check_scoring_flags
from evaluation.outputs import FLEET_OUTPUTS, MODEL_OUTPUTS, earlier_outputs_note
from evaluation.report import check_evaluation_settings
from evaluation.thresholds import POT_RISK, THRESHOLD_RULES
from model import SCORES, DetectorConfig
from model.alarm_rule import ALARM_RULES, rules_help
from model.config import DEVICES
from model.fleet import fleet_path
from model.score_settings import check_temperature
from runtime.atomic import run_stoppably
from runtime.distributed import DistributedContext, init_distributed, own_output_folder, shutdown_distributed
from runtime.errors import error_line

DEFAULT_PLOTS = 3  # --per-entity: the worst and the best entities plotted


def build_parser() -> argparse.ArgumentParser:
    about = "Score the test split and report the metric panel beside simple baselines."
    parser = argparse.ArgumentParser(prog="evaluate.py", description=about)
    add = parser.add_argument
    add("--dataset", default="SMAP", help=f"one of {', '.join(DATASET_NAMES)}; must match training (default: SMAP)")
    add("--entity", default=None, help="one channel or machine of the dataset (of a fleet bundle too)")
    add("--checkpoint", default=None,
        help="checkpoint path (default: {OUTPUT_DIR}/{DATASET}_checkpoint.pth, i.e. ./artifacts/...)")
    add("--protocol", choices=PROTOCOLS, default="default",
        help="default: the decision rule (TRAIN scores and the scores before each point; no labels); paper: the "
        "reference's train+test percentile threshold and, unless --score is given, the paper score, to reproduce "
        "the published table (default: default)")
    add("--threshold", choices=[rule for rule in THRESHOLD_RULES if rule != "paper"], default=None,
        help="a fixed threshold rule instead of the decision rule: train (TRAIN percentile), val (validation tail "
        "of TRAIN), fixed, pot (default: none, the decision rule of --alarm-rule)")
    add("--alarm-rule", choices=ALARM_RULES, default=None,
        help=f"the decision rule of the default protocol: {rules_help()} (default: the checkpoint's, "
        f"{DetectorConfig.alarm_rule} unless trained otherwise)".replace("%", "%%"))
    add("--alarm-window", type=int, default=None,
        help="recent scores the guarded and budget rules read (default: the checkpoint's, "
        f"{DetectorConfig.alarm_window})")
    add("--threshold-percentile", type=float, default=None,
        help="TRAIN percentile of the decision rule and of the train and val rules (default: the checkpoint's, "
        f"{DetectorConfig.threshold_percentile:g} unless trained otherwise)")
    add("--threshold-value", type=float, default=None, help="the threshold of the fixed rule")
    add("--pot-risk", type=float, default=None, help=f"exceedance probability of the pot rule (default: {POT_RISK:g})")
    add("--anomaly-ratio", type=float, default=None,
        help="paper protocol: flag the top r %% of train+test scores (default: 1, or 0.5 for SMD)")
    add("--baselines", default=None, help=f"{baselines_help()} (default: random,pca; --per-entity: "
        f"{','.join(DEFAULT_FLEET_BASELINES)})")
    add("--data-dir", default=None, help=f"data folder; required for CUSTOM (default: {DEFAULT_DATA_DIR})")
    add("--output-dir", default="./artifacts", help="where results go (default: ./artifacts)")
    defaults = DetectorConfig()  # the scoring defaults are the training ones, written once there
    add("--batch-size", type=int, default=defaults.batch_size,
        help=f"scoring batch size (default: {defaults.batch_size})")
    add("--device", choices=DEVICES, default=defaults.device, help=f"where to score (default: {defaults.device})")
    add("--score", choices=tuple(SCORES), default=None,
        help="score (default: the checkpoint's; paper under --protocol paper); another score brings its own "
        "--score-channels/--smooth defaults")
    add("--score-channels", default=None,
        help="all, target, or comma-separated channel names/indices whose error counts (default: the checkpoint's)")
    add("--smooth", type=int, default=None,
        help="centred moving average over N points, 0 = off (default: the checkpoint's)")
    add("--temperature", type=float, default=None,
        help="softmax temperature of the paper score (default: the checkpoint's, "
        f"{defaults.temperature:g} unless trained otherwise)")
    add("--seed", type=int, default=0, help="seed of the random-score baseline (default: 0)")
    add("--top-sensors", type=int, default=3,
        help="sensors listed per flagged segment in {DATASET}_attribution.json/.csv and per incident (default: 3)")
    add("--explain", type=int, default=0, metavar="N",
        help="save S, P and sigma of the N highest-scoring and N normal test windows, and a figure (default: 0, off)")
    add("--report", choices=("html",), default=None,
        help="html: also write {DATASET}_report.html (--per-entity: {DATASET}_fleet_report.html, or "
        "{DATASET}_shared_report.html for one shared model), one self-contained page of metrics, scores, labelled "
        "segments and incidents (default: none)")
    add("--per-entity", action="store_true",
        help="evaluate per entity, beside the baselines: the fleet bundle {DATASET}_fleet.pth, or a model of the "
        "whole dataset ({DATASET}_checkpoint.pth where there is no bundle) lent to every entity")
    add("--plots", type=int, default=None,
        help="--per-entity: plot the N worst and N best entities (split between the two plots when fewer than 2N "
        f"are graded) (default: {DEFAULT_PLOTS})")
    # The window is fixed when a model is trained: said so, not argparse's "unrecognized arguments".
    add("--win-size", type=int, default=None, help=argparse.SUPPRESS)
    add("--jobs", type=int, default=None,
        help="--per-entity: entities evaluated at once, each in its own process on one thread "
        "(default: the cores, at most one per 2 GB of memory; 1 on a GPU)")
    return parser  # fmt: skip


def default_checkpoint(args: argparse.Namespace) -> str:
    """{label}_checkpoint.pth; for an entity without one, the dataset's fleet bundle when there is one. Per entity:
    the bundle, or where there is none the dataset's one model, lent to every entity. A folder that holds only the
    bundle, evaluated as one model, is a UserInputError naming --per-entity and --entity."""
    if args.checkpoint:
        return args.checkpoint
    folder = Path(args.output_dir)
    single = folder / f"{dataset_label(args.dataset, args.entity)}_checkpoint.pth"
    bundle = fleet_path(folder, args.dataset)
    if args.per_entity:
        return str(single if single.is_file() and not bundle.is_file() else bundle)
    if single.is_file() or not bundle.is_file():
        return str(single)
    if args.entity:
        return str(bundle)
    raise UserInputError(f"checkpoint {single} does not exist, but the fleet bundle {bundle} does: evaluate it with "
                         "--per-entity (every entity) or --entity NAME (one)")  # fmt: skip


# Flags of the single-model report that a per-entity evaluation has no use for, with their defaults.
SINGLE_MODEL_FLAGS = {"protocol": "default", "threshold": None, "threshold_value": None, "anomaly_ratio": None,
                      "entity": None, "explain": 0}  # fmt: skip


def run_fleet(args: argparse.Namespace, checkpoint: str) -> int:
    """Per-entity evaluation of a fleet bundle: one line per method, the JSON, the CSV and the plots."""
    given = [name for name, default in SINGLE_MODEL_FLAGS.items() if getattr(args, name) != default]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise UserInputError(f"--per-entity does not take {flag} (it uses the decision rule per entity); "
                             "for one entity's full report use --entity NAME without --per-entity")  # fmt: skip
    plots = DEFAULT_PLOTS if args.plots is None else args.plots
    if plots < 0:
        raise UserInputError(f"--plots must be 0 or a number of entities, got {plots}")
    check_scoring_flags(args.batch_size, args.seed, args.device)
    if args.top_sensors < 1:
        raise UserInputError(f"--top-sensors must be at least 1, got {args.top_sensors}")
    names = DEFAULT_FLEET_BASELINES if args.baselines is None else parse_baselines(args.baselines)
    with contextlib.ExitStack() as stack:
        own_output_folder(Path(args.output_dir).expanduser(), DistributedContext(), stack)  # one process
        evaluation = evaluate_fleet(checkpoint, args.dataset, args.data_dir, baselines=names,
                                    batch_size=args.batch_size, device=args.device, seed=args.seed,
                                    threshold_percentile=args.threshold_percentile, alarm_rule=args.alarm_rule,
                                    alarm_window=args.alarm_window, score=args.score,
                                    score_channels=args.score_channels, smooth=args.smooth,
                                    temperature=args.temperature, jobs=args.jobs, top_sensors=args.top_sensors,
                                    settings_checked=True)  # fmt: skip
        paths = write_fleet_artifacts(evaluation, args.output_dir, k=plots, report=args.report)
    print(format_fleet_table(evaluation))
    for line in drift_lines(evaluation):
        print(line, file=sys.stderr)
    print("wrote " + ", ".join(str(path) for path in paths.values()))
    _note_earlier_outputs(paths, evaluation.stem, FLEET_OUTPUTS)
    return 0


def _note_earlier_outputs(paths: dict[str, Path], stem: str, outputs: dict[str, str]) -> None:
    note = earlier_outputs_note(next(iter(paths.values())).parent, stem, outputs, paths.values())
    if note:
        print(note, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_stoppably(lambda: run(args), "no result")


def run(args: argparse.Namespace) -> int:
    if args.win_size is not None:
        print(error_line(UserInputError(f"--win-size is fixed when a model is trained, so evaluate.py reads it from "
                                        f"the checkpoint; retrain with train.py --win-size {args.win_size}")),
              file=sys.stderr)  # fmt: skip
        return 2
    if args.temperature is not None:  # checked before any data is read, for one model and per entity alike
        try:
            check_temperature(args.temperature)
        except UserInputError as error:
            print(error_line(error), file=sys.stderr)
            return 2
    if args.per_entity:
        try:
            return run_fleet(args, default_checkpoint(args))
        except UserInputError as error:
            print(error_line(error), file=sys.stderr)
            return 2
    threshold = ThresholdSettings(rule=args.threshold, percentile=args.threshold_percentile, value=args.threshold_value,
                                  pot_risk=args.pot_risk, anomaly_ratio=args.anomaly_ratio,
                                  alarm_rule=args.alarm_rule, alarm_window=args.alarm_window)  # fmt: skip
    context = init_distributed(args.device)  # under torchrun the ranks share the scoring
    try:
        if args.jobs is not None:
            raise UserInputError("--jobs is for --per-entity (one process per entity); one model scores in one")
        if args.plots is not None:
            raise UserInputError("--plots is for --per-entity (the worst and best entities); one model writes its "
                                 "score plot without it")  # fmt: skip
        check_evaluation_settings(args.protocol, threshold, args.dataset, args.batch_size, args.seed, args.device,
                                  args.top_sensors, args.explain)  # fmt: skip
        checkpoint = default_checkpoint(args)
        with contextlib.ExitStack() as stack:
            own_output_folder(Path(args.output_dir).expanduser(), context, stack)  # one run at a time writes it
            evaluation = evaluate_checkpoint(
                checkpoint, args.dataset, args.data_dir, protocol=args.protocol, threshold=threshold,
                baselines=parse_baselines(args.baselines or "random,pca"), batch_size=args.batch_size,
                device=args.device, seed=args.seed, score=args.score, score_channels=args.score_channels,
                smooth=args.smooth, temperature=args.temperature, entity=args.entity, top_sensors=args.top_sensors,
                explain=args.explain, context=context, settings_checked=True,
            )  # fmt: skip
            if evaluation is None:  # a torchrun rank other than 0: it scored its share, rank 0 reports
                return 0
            paths = write_artifacts(evaluation, args.output_dir, report=args.report)
    except UserInputError as error:
        if context.is_main:
            print(error_line(error), file=sys.stderr)
        return 2
    finally:
        shutdown_distributed()
    print(format_table(evaluation))
    print(format_summary(evaluation.attribution, stamps=evaluation.stamps))
    warning = drift_warning(evaluation.drift)
    if warning:
        print(warning, file=sys.stderr)
    print("wrote " + ", ".join(str(path) for path in paths.values()))
    _note_earlier_outputs(paths, evaluation.dataset, MODEL_OUTPUTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
