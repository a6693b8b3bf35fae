"""Spark: score a DataFrame with ``mapInPandas`` (Arrow batches to Python workers).

    from pyspark.sql import SparkSession
    import edgeinfer
    from edgeinfer.spark import predict
    spark = SparkSession.builder.master("local[2]").getOrCreate()
    model = edgeinfer.Model("models/digits/1")
    scored = predict(spark.read.csv("rows.csv", header=True, inferSchema=True), model, keep=["id"])

The model pickles as its path and digest: each Python worker loads and verifies it once.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence

from . import DEFAULT_BATCH_SIZE, Model
from ._frames import output_columns, score_frame

# Spark SQL types of the protocol's datatypes (Spark has no unsigned integers: each unsigned
# type takes the next wider signed one; UINT64 values above 2^63 do not fit).
SPARK_TYPES = {
    "BOOL": "boolean",
    "UINT8": "smallint",
    "UINT16": "int",
    "UINT32": "bigint",
    "UINT64": "bigint",
    "INT8": "tinyint",
    "INT16": "smallint",
    "INT32": "int",
    "INT64": "bigint",
    "FP16": "float",
    "FP32": "float",
    "FP64": "double",
    "BYTES": "binary",
}


def output_schema(model: Model, frame: Any = None, keep: Sequence[str] = ()) -> str:
    """The DDL schema of ``predict``'s result: the kept columns' types from ``frame``, then
    one column per output element."""
    fields = []
    for name in keep:
        fields.append(f"`{name}` {frame.schema[name].dataType.simpleString()}")
    fields.extend(f"`{name}` {SPARK_TYPES[datatype]}" for name, datatype in output_columns(model))
    return ", ".join(fields)


def predict(
    frame: Any,
    model: Model,
    columns: Optional[Sequence[str]] = None,
    keep: Sequence[str] = (),
    batch_size: int = DEFAULT_BATCH_SIZE,
):
    """A Spark DataFrame: ``frame``'s ``keep`` columns, then the model's output columns (the
    feature ``columns`` in the model's order; default: every column not kept)."""
    keep = list(keep)
    columns = list(columns) if columns is not None else None

    def score(batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            yield score_frame(batch, model, columns, keep, batch_size)

    return frame.mapInPandas(score, schema=output_schema(model, frame, keep))
