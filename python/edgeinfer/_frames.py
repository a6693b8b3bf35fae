"""What the engine helpers share: the output columns a model gives a table of rows (the
columns ``edgeinfer batch`` writes) and scoring one pandas frame with pass-through columns."""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import numpy as np


def output_columns(model: Any) -> List[Tuple[str, str]]:
    """``(column, OIP datatype)`` for each column ``predict_pandas`` returns, in order."""
    columns = []
    for info in model.outputs:
        inner = info.shape[1:]
        if not inner:
            columns.append((info.name, info.datatype))
            continue
        if any(d < 0 for d in inner):
            raise ValueError(
                f"output '{info.name}' has a dynamic inner shape {list(info.shape)}: its columns are unknown ahead of time"
            )
        width = int(np.prod(inner))
        columns.extend((f"{info.name}_{i}", info.datatype) for i in range(width))
    return columns


def score_frame(frame: Any, model: Any, columns: Optional[Sequence[str]], keep: Sequence[str], batch_size: int):
    """``frame``'s ``keep`` columns followed by the model's output columns for its rows."""
    import pandas as pd

    features = [c for c in frame.columns if c not in keep] if columns is None else list(columns)
    scored = model.predict_pandas(frame, features, batch_size=batch_size)
    if not keep:
        return scored
    return pd.concat([frame[list(keep)], scored], axis=1)
