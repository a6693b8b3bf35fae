"""Distributed engines on real local clusters over loopback: Ray Data, Dask (a LocalCluster of
two worker processes) and Spark (local[2]) each score the same CSV file with the model, and
every row must carry the bits ``edgeinfer batch`` gave it."""

from __future__ import annotations

import os

import pytest

import edgeinfer
from conftest import assert_same_as_batch, require

FEATURES = [f"f{i}" for i in range(64)]


def test_ray_data(model_dir, rows_csv, batch_scored):
    ray = require("ray")
    from edgeinfer.ray import Predictor

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        dataset = ray.data.read_csv(str(rows_csv))
        scored = dataset.map_batches(
            Predictor,
            fn_constructor_args=(str(model_dir), FEATURES),
            fn_kwargs={"keep": ["id"]},
            batch_format="pandas",
            batch_size=300,
            concurrency=2,
            # Half a CPU per actor leaves the read tasks room on a 2-CPU cluster (whole CPUs
            # would deadlock: two actors holding both while the read waits for one).
            num_cpus=0.5,
        ).to_pandas()
    finally:
        ray.shutdown()
    assert_same_as_batch(scored, batch_scored)


def test_dask_local_cluster(model_dir, rows_csv, batch_scored):
    dd = require("dask.dataframe")
    distributed = require("distributed")
    from edgeinfer.dask import predict

    model = edgeinfer.Model(model_dir)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            frame = dd.read_csv(str(rows_csv), blocksize=40_000)
            assert frame.npartitions > 1
            scored = predict(frame, model, FEATURES, keep=["id"]).compute()
            workers = client.run(lambda: os.getpid())
            assert len(set(workers.values())) == 2
    assert_same_as_batch(scored, batch_scored)


def test_spark_local(model_dir, rows_csv, batch_scored):
    require("pyspark")
    from pyspark.sql import SparkSession

    from edgeinfer.spark import predict

    model = edgeinfer.Model(model_dir)
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("edgeinfer-test")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    try:
        frame = spark.read.csv(str(rows_csv), header=True, inferSchema=True).repartition(3)
        scored = predict(frame, model, FEATURES, keep=["id"]).toPandas()
    finally:
        spark.stop()
    assert_same_as_batch(scored, batch_scored)
