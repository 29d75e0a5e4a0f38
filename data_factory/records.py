"""Arrays as JSON values that read back bit for bit: the raw bytes in base64, with dtype and shape.

A restartable stream (detect.py --follow --state) keeps its windows and scores this way: decimal text
would round float32 rows, and is several times larger.
"""

from __future__ import annotations

import base64

import numpy as np


def encode_array(array: np.ndarray) -> dict:
    array = np.ascontiguousarray(array)
    return {"dtype": array.dtype.str, "shape": list(array.shape), "data": base64.b64encode(array.tobytes()).decode()}


def decode_array(record: dict) -> np.ndarray:
    raw = base64.b64decode(record["data"])
    return np.frombuffer(raw, dtype=np.dtype(record["dtype"])).reshape(record["shape"]).copy()
