"""The NaN policy, one for the whole tool (docs/datasets.md, "Missing values").

Data that train a model must be finite: a NaN or infinity in TRAIN, TEST or labels stops the
loader with an error naming the first one (data_factory.dataset.check_series). Data scored by
detect follow `--nan`: `fail` (the default) stops the same way; `fill` carries each channel's
last finite value forward, and a channel without one yet takes its TRAIN mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from runtime.errors import UserInputError

NAN_POLICIES = ("fail", "fill")


class MissingValues:
    """The NaN policy. fail: stop at the first NaN/Inf. fill: carry each channel's last finite value
    forward; a channel with none yet takes its TRAIN mean."""

    def __init__(self, policy: str, train_mean: np.ndarray, name: str, channel_names: list[str]) -> None:
        self.policy, self.name, self.channel_names = policy, name, channel_names
        self.last = train_mean.astype(np.float32).copy()
        self.filled = 0
        # Per channel, so that a dead tag (NaN on every row, scored as its TRAIN mean throughout) can be named.
        self.filled_by_channel = np.zeros(len(channel_names), dtype=np.int64)

    def apply(self, values: np.ndarray, first_row: int, rows: Sequence[int] | None = None) -> np.ndarray:
        """values: the next (n, C) rows, the first of them row first_row of the input; rows: each one's input row
        where they are not consecutive (one entity's rows among others'), so that a message names the file's row."""
        bad = ~np.isfinite(values)
        if not bad.any():
            self.last = values[-1].copy() if len(values) else self.last
            return values
        if self.policy == "fail":
            row, column = (int(i[0]) for i in np.nonzero(bad))
            shown = first_row + row if rows is None else int(rows[row])
            raise UserInputError(
                f"{self.name} has NaN/Inf values (first at row {shown}, column "
                f"{self.channel_names[column]}); clean the data or pass --nan fill to carry the last value forward"
            )
        self.filled += int(bad.sum())
        self.filled_by_channel += bad.sum(axis=0)
        values = np.vstack([self.last[None, :], values])
        frame = pd.DataFrame(np.where(np.isfinite(values), values, np.nan))
        values = frame.ffill().to_numpy(dtype=np.float32)[1:]
        self.last = values[-1].copy()
        return values


