#!/usr/bin/env python3
"""Python package bench: rows/s of ``edgeinfer.Model.predict`` against onnxruntime's
``InferenceSession.run`` (1 intra-op thread) on the same numpy batches, and of a Dask job
(LocalCluster, 2 worker processes) scoring the same frame with each. One run; ratios against
the baseline measured in the same run. Prints markdown tables.

    pip install ./python && python3 benches/python_bench.py

Models: the digits MLP (tests/fixtures/digits.onnx) and the 64-512-512-10 MLP
(tests/fixtures/mlp_large.onnx), compiled into a temporary repository (code cached in
target/bench-cache). Each figure is the best of ROUNDS rounds of at least MIN_SECONDS.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("EDGEINFER_CACHE_DIR", str(ROOT / "target" / "bench-cache"))

import edgeinfer  # noqa: E402
import onnxruntime as ort  # noqa: E402

ROUNDS = 5
MIN_SECONDS = 0.3
MODELS = [("digits", "digits.onnx"), ("mlp 64-512-512-10", "mlp_large.onnx")]
BATCHES = [1, 64, 1024]
DASK_ROWS = 200_000


def best_seconds_per_call(call) -> float:
    call()
    best = float("inf")
    for _ in range(ROUNDS):
        calls, started = 0, time.perf_counter()
        while True:
            call()
            calls += 1
            elapsed = time.perf_counter() - started
            if elapsed >= MIN_SECONDS:
                break
        best = min(best, elapsed / calls)
    return best


def ort_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def predict_table(repo: Path) -> None:
    print("| model | rows per call | onnxruntime rows/s | edgeinfer rows/s | edgeinfer/onnxruntime | onnxruntime µs/call | edgeinfer µs/call | fresh sandbox µs/call |")
    print("|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(7)
    for label, file in MODELS:
        name = Path(file).stem
        model = edgeinfer.Model.from_repository(repo, name)
        fresh = edgeinfer.Model.from_repository(repo, name, reuse_instances=False)
        session = ort_session(ROOT / "tests" / "fixtures" / file)
        input_name = session.get_inputs()[0].name
        for rows in BATCHES:
            x = rng.random((rows, 64), dtype=np.float32)
            ours = model.predict(x)
            theirs = session.run(None, {input_name: x})
            # Same model, same rows: the answers agree (different engines, so not bit for bit).
            np.testing.assert_allclose(ours[model.outputs[-1].name], theirs[-1], rtol=1e-4, atol=1e-5)
            t_ort = best_seconds_per_call(lambda: session.run(None, {input_name: x}))
            t_ours = best_seconds_per_call(lambda: model.predict(x))
            t_fresh = best_seconds_per_call(lambda: fresh.predict(x))
            print(
                f"| {label} | {rows} | {rows / t_ort:,.0f} | {rows / t_ours:,.0f} | {t_ort / t_ours:.2f}x "
                f"| {t_ort * 1e6:,.1f} | {t_ours * 1e6:,.1f} | {t_fresh * 1e6:,.1f} |"
            )
        sys.stdout.flush()


_SESSIONS: dict = {}


def ort_partition(frame, path: str, input_name: str):
    """Scores one pandas partition with onnxruntime (one session per worker process)."""
    import pandas as pd

    session = _SESSIONS.get(path)
    if session is None:
        session = _SESSIONS[path] = ort_session(Path(path))
    x = frame.to_numpy(dtype=np.float32)
    outputs = []
    for start in range(0, len(x), edgeinfer.DEFAULT_BATCH_SIZE):
        outputs.append(session.run(None, {input_name: x[start : start + edgeinfer.DEFAULT_BATCH_SIZE]})[-1])
    scored = np.concatenate(outputs)
    return pd.DataFrame({f"p_{i}": scored[:, i] for i in range(scored.shape[1])}, index=frame.index)


def dask_table(repo: Path) -> None:
    import dask.dataframe as dd
    import distributed
    import pandas as pd

    from edgeinfer.dask import predict

    print()
    print(f"| model | Dask job, 2 workers, {DASK_ROWS:,} rows | onnxruntime rows/s | edgeinfer rows/s | edgeinfer/onnxruntime |")
    print("|---|---|---|---|---|")
    rng = np.random.default_rng(11)
    frame = pd.DataFrame(rng.random((DASK_ROWS, 64), dtype=np.float32), columns=[f"f{i}" for i in range(64)])
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster):
            for label, file in MODELS:
                name = Path(file).stem
                model = edgeinfer.Model.from_repository(repo, name)
                session = ort_session(ROOT / "tests" / "fixtures" / file)
                input_name = session.get_inputs()[0].name
                width = session.get_outputs()[-1].shape[-1]
                meta = pd.DataFrame({f"p_{i}": pd.Series(dtype=np.float32) for i in range(width)})
                fixtures = ROOT / "tests" / "fixtures"
                jobs = {
                    "edgeinfer": lambda ddf: predict(ddf, model),
                    "onnxruntime": lambda ddf: ddf.map_partitions(
                        ort_partition, str(fixtures / file), input_name, meta=meta
                    ),
                }
                timings = {engine: float("inf") for engine in jobs}
                # Each round scores new data (the cluster could otherwise answer from results
                # it still holds under the same task keys); round 0 warms the workers (each
                # loads the model / session once) and is not counted.
                for round in range(4):
                    ddf = dd.from_pandas(frame + np.float32(round / 64), npartitions=16).persist()
                    distributed.wait(ddf)
                    for engine, job in jobs.items():
                        started = time.perf_counter()
                        result = job(ddf).compute()
                        if round > 0:
                            timings[engine] = min(timings[engine], time.perf_counter() - started)
                        assert len(result) == DASK_ROWS
                    del ddf
                print(
                    f"| {label} | | {DASK_ROWS / timings['onnxruntime']:,.0f} | {DASK_ROWS / timings['edgeinfer']:,.0f} "
                    f"| {timings['onnxruntime'] / timings['edgeinfer']:.2f}x |"
                )
                sys.stdout.flush()


def main() -> None:
    with tempfile.TemporaryDirectory() as repo:
        repo = Path(repo)
        for _, file in MODELS:
            edgeinfer.compile(ROOT / "tests" / "fixtures" / file, repo, Path(file).stem, 1)
        predict_table(repo)
        dask_table(repo)


if __name__ == "__main__":
    main()
