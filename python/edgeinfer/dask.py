"""Dask: score a dask DataFrame partition by partition.

    import dask.dataframe as dd, edgeinfer
    from edgeinfer.dask import predict
    model = edgeinfer.Model("models/digits/1")
    scored = predict(dd.read_csv("rows-*.csv"), model, keep=["id"])
    scored.to_csv("scored-*.csv")

The model pickles as its path and digest: each worker process loads and verifies it once.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from . import _DTYPES, DEFAULT_BATCH_SIZE, Model
from ._frames import output_columns, score_frame


def predict(
    frame: Any,
    model: Model,
    columns: Optional[Sequence[str]] = None,
    keep: Sequence[str] = (),
    batch_size: int = DEFAULT_BATCH_SIZE,
):
    """A lazy dask DataFrame: ``frame``'s ``keep`` columns, then the model's output columns
    (the feature ``columns`` in the model's order; default: every column not kept)."""
    import pandas as pd

    meta = {name: frame[name].dtype for name in keep}
    for name, datatype in output_columns(model):
        meta[name] = _DTYPES.get(datatype, np.dtype(object))
    empty = pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in meta.items()})
    return frame.map_partitions(score_frame, model, columns, list(keep), batch_size, meta=empty)
