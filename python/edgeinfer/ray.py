"""Ray Data: score a dataset with a model in every actor of a pool.

    import ray, edgeinfer
    from edgeinfer.ray import Predictor
    ds = ray.data.read_csv("rows.csv")
    scored = ds.map_batches(Predictor, fn_constructor_args=("models/digits/1",),
                            fn_kwargs={"keep": ["id"]}, batch_format="pandas",
                            concurrency=2, num_cpus=1)

Each actor loads and verifies the model once; ``batch_size`` rows per sandbox call. Leave
the cluster CPUs for the read tasks besides the actors' (``num_cpus=0.5`` per actor on a
machine whose every CPU is an actor), or the read waits for a CPU the actors hold.
"""

from __future__ import annotations

from typing import Optional, Sequence

from . import DEFAULT_BATCH_SIZE, Model
from ._frames import score_frame


class Predictor:
    """A callable class for ``Dataset.map_batches`` (``batch_format="pandas"``): loads the
    model version at ``path`` once per actor and scores each batch, the ``keep`` columns
    first (e.g. an id), then one column per output element."""

    def __init__(self, path: str, columns: Optional[Sequence[str]] = None, batch_size: int = DEFAULT_BATCH_SIZE):
        self.model = path if isinstance(path, Model) else Model(path)
        self.columns = list(columns) if columns is not None else None
        self.batch_size = batch_size

    def __call__(self, batch, keep: Sequence[str] = ()):
        return score_frame(batch, self.model, self.columns, list(keep), self.batch_size)
