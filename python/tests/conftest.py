"""Shared fixtures of the Python package's tests.

Run by ``cargo test --release`` (tests/all/python.rs, which passes the compiled digits fixture,
the ``edgeinfer`` binary and the code cache in EDGEINFER_TEST_MODEL, EDGEINFER_BIN and
EDGEINFER_CACHE_DIR), or alone: ``python -m pytest python/tests`` compiles the digits fixture
itself and looks for ``target/release/edgeinfer``. Under CI (``CI`` set) nothing skips.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import edgeinfer

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


def require(module: str):
    """Imports an optional engine; skips the test where it is missing, fails under CI."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as error:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"{module} is not installed ({error}); tests/setup.sh installs it")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A compiled digits version directory (repository layout ``<repo>/digits/1``)."""
    given = os.environ.get("EDGEINFER_TEST_MODEL")
    if given:
        return Path(given)
    repo = tmp_path_factory.mktemp("repo")
    return Path(edgeinfer.compile(FIXTURES / "digits.onnx", repo, "digits", 1))


@pytest.fixture(scope="session")
def binary() -> Path:
    """The ``edgeinfer`` command line."""
    path = Path(os.environ.get("EDGEINFER_BIN", ROOT / "target" / "release" / "edgeinfer"))
    if not path.exists():
        if os.environ.get("CI"):
            raise AssertionError(f"{path} is missing")
        pytest.skip(f"{path} is missing: cargo build --release")
    return path


@pytest.fixture(scope="session")
def holdout():
    """The held-out digits rows and onnxruntime's answers, recorded by make_fixtures.py."""
    return json.loads((FIXTURES / "digits_holdout.json").read_text())


@pytest.fixture(scope="session")
def rows_csv(tmp_path_factory, holdout) -> Path:
    """A CSV of the held-out rows, repeated to 1,800 rows: an ``id`` column and ``f0``..``f63``.
    The pixels are multiples of 1/16, exact in float32 and float64 alike, so every reader
    (Rust's, pandas', Spark's) gets the same bits."""
    path = tmp_path_factory.mktemp("rows") / "rows.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id"] + [f"f{i}" for i in range(64)])
        for index in range(1800):
            pixels = holdout["x"][index % len(holdout["x"])]
            writer.writerow([index] + [repr(p) for p in pixels])
    return path


@pytest.fixture(scope="session")
def batch_scored(tmp_path_factory, binary, model_dir, rows_csv):
    """``edgeinfer batch``'s answer for ``rows_csv``: {id: (label, probabilities float32)}."""
    out = tmp_path_factory.mktemp("batch") / "scored.ndjson"
    repo, name = model_dir.parent.parent, model_dir.parent.name
    subprocess.run(
        [str(binary), "batch", "--repo", str(repo), "--model", name, "--version", model_dir.name,
         "--input", str(rows_csv), "--output", str(out), "--id-column", "id",
         "--columns", ",".join(f"f{i}" for i in range(64))],
        check=True,
        capture_output=True,
    )
    scored = {}
    for line in out.read_text().splitlines():
        row = json.loads(line)
        scored[int(row["id"])] = (int(row["label"]), np.array(row["probabilities"], dtype=np.float32))
    assert len(scored) == 1800
    return scored


def assert_same_as_batch(frame, batch_scored) -> None:
    """Every row of a scored pandas frame (``id``, ``label``, ``probabilities_0..9``) has the
    exact bits ``edgeinfer batch`` gave it."""
    assert len(frame) == len(batch_scored)
    probabilities = frame[[f"probabilities_{i}" for i in range(10)]].to_numpy(dtype=np.float32)
    for (row_id, label), probs in zip(zip(frame["id"], frame["label"]), probabilities):
        want_label, want_probs = batch_scored[int(row_id)]
        assert int(label) == want_label, row_id
        assert probs.tobytes() == want_probs.tobytes(), (row_id, probs, want_probs)


def copy_version(src: Path, repo: Path, name: str = "digits", version: int = 1) -> Path:
    """A copy of a version directory at ``<repo>/<name>/<version>`` (its manifest kept)."""
    dest = repo / name / str(version)
    shutil.copytree(src, dest)
    return dest
