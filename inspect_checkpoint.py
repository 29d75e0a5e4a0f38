"""Show what a checkpoint holds: python inspect_checkpoint.py artifacts/SYNTH_checkpoint.pth [--json]

The file is opened with torch.load(weights_only=True), which only rebuilds tensors, numbers,
strings, lists and dicts: a file that would run code when unpickled is refused, never executed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from commands.inspection import describe, format_text
from data_factory import UserInputError
from model.fleet import open_fleet
from runtime.atomic import json_text
from runtime.errors import end_quietly_on_broken_pipe, error_line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inspect_checkpoint.py", description="Print what a checkpoint holds, without running any code from it."
    )
    parser.add_argument("checkpoint", help="a checkpoint written by train.py, e.g. artifacts/SYNTH_checkpoint.pth")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path = Path(args.checkpoint).expanduser()
    try:
        described = describe(open_fleet(path), path)
    except UserInputError as error:
        print(error_line(error), file=sys.stderr)
        return 2
    try:
        print(json_text(described).rstrip("\n") if args.json else format_text(described), flush=True)
    except BrokenPipeError:  # the reader (e.g. head) stopped early
        return end_quietly_on_broken_pipe()
    return 0


if __name__ == "__main__":
    sys.exit(main())
