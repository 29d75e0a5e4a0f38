"""What each decision rule raises when the scores step up to a new level and stay there.

    python bench/level_shift.py

A machine moved to a regime its TRAIN never held: its scores (TRAIN-like, gamma-distributed) step up by
a factor at TEST point 2000 and stay up. The table counts the flags of each rule (model/alarm_rule.py,
window 1000) before the step, in the 300 points after it, in the 700 after those, and over the last 2000:
what an operator sees, a burst at the change and then, under the windowed rules, little.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.alarm_rule import ALARM_RULES, AlarmRule  # noqa: E402

STEP, LENGTH = 2000, 5000
SPANS = {"before the step (2000)": (0, STEP), "next 300": (STEP, STEP + 300), "next 700": (STEP + 300, STEP + 1000),
         "last 2000": (STEP + 1000, LENGTH)}  # fmt: skip


def main() -> int:
    rng = np.random.default_rng(0)
    train = rng.gamma(4.0, 0.25, 3000)
    print("| step | rule | " + " | ".join(f"flags {span}" for span in SPANS) + " |")
    print("|---|---|" + "---|" * len(SPANS))
    for factor in (1.5, 3.0, 10.0):
        test = rng.gamma(4.0, 0.25, LENGTH)
        test[STEP:] *= factor
        for kind in ALARM_RULES:
            flags = AlarmRule.fit(train, kind, 99.0, 1000).flags(test)[0]
            counts = [int(flags[start:stop].sum()) for start, stop in SPANS.values()]
            print(f"| x{factor:g} | {kind} | " + " | ".join(map(str, counts)) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
