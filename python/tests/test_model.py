"""The package on its own: loading and verifying, metadata, predict in every form, errors,
pickling, threads, compile, and the same bits as ``edgeinfer serve`` and ``edgeinfer batch``."""

from __future__ import annotations

import pickle
import re
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import edgeinfer
from conftest import FIXTURES, assert_same_as_batch, copy_version, require


@pytest.fixture(scope="module")
def model(model_dir):
    return edgeinfer.Model(model_dir)


def test_metadata_matches_the_servers(model, model_dir):
    assert (model.name, model.version, Path(model.path)) == ("digits", 1, model_dir)
    assert [(i.name, i.datatype, i.shape) for i in model.inputs] == [("X", "FP32", (-1, 64))]
    assert [(o.name, o.datatype, o.shape) for o in model.outputs] == [
        ("label", "INT64", (-1,)),
        ("probabilities", "FP32", (-1, 10)),
    ]
    assert re.fullmatch(r"[0-9a-f]{64}", model.sha256)
    assert model.limits["fuel"] > 0 and model.limits["timeout_ms"] > 0


def test_predict_agrees_with_onnxruntime_on_the_holdout(model, holdout):
    x = np.array(holdout["x"], dtype=np.float32)
    out = model.predict({"X": x})
    assert out["label"].dtype == np.int64 and out["label"].shape == (len(x),)
    assert out["probabilities"].dtype == np.float32 and out["probabilities"].shape == (len(x), 10)
    assert (out["label"] == np.array(holdout["ort_labels"])).all()
    np.testing.assert_allclose(out["probabilities"], np.array(holdout["ort_probabilities"]), atol=1e-5)


def test_single_input_shorthand_casts_and_output_selection(model, holdout):
    x = np.array(holdout["x"][:8])  # float64: cast to FP32 (same kind)
    full = model.predict({"X": x.astype(np.float32)})
    short = model.predict(x)
    assert short["probabilities"].tobytes() == full["probabilities"].tobytes()
    only = model.predict(x.tolist(), outputs=["label"])
    assert list(only) == ["label"] and (only["label"] == full["label"]).all()
    # Results are writable numpy arrays of their own.
    only["label"][0] = 7


def test_bad_inputs_raise_clear_errors(model):
    with pytest.raises(edgeinfer.InvalidInput, match=r"shape \[2, 63\]"):
        model.predict(np.zeros((2, 63), np.float32))
    with pytest.raises(edgeinfer.InvalidInput, match="unknown input 'Y'"):
        model.predict({"Y": np.zeros((1, 64), np.float32)})
    with pytest.raises(edgeinfer.InvalidInput, match="expected FP32"):
        model.predict(np.full((1, 64), "a"))
    with pytest.raises(edgeinfer.InvalidInput):
        model.predict(np.zeros((1, 64), np.float32), outputs=["nope"])
    assert isinstance(edgeinfer.InvalidInput("x"), edgeinfer.EdgeInferError)
    # And the model still answers.
    assert model.predict(np.zeros((1, 64), np.float32))["label"].shape == (1,)


@pytest.mark.parametrize("reuse", [True, False])
def test_limits_hold_and_a_trap_loses_nothing(model_dir, reuse):
    model = edgeinfer.Model(model_dir, reuse_instances=reuse)
    x = np.zeros((4, 64), np.float32)
    want = model.predict(x)
    with pytest.raises(edgeinfer.LimitExceeded, match="fuel exhausted"):
        model.predict(x, fuel=1000)
    again = model.predict(x)
    assert again["probabilities"].tobytes() == want["probabilities"].tobytes()


def test_warm_and_fresh_sandboxes_give_the_same_bits(model_dir, holdout):
    x = np.array(holdout["x"], dtype=np.float32)
    warm = edgeinfer.Model(model_dir)
    fresh = edgeinfer.Model(model_dir, reuse_instances=False)
    for rows in (1, 7, 64, 450):
        a, b = warm.predict(x[:rows]), fresh.predict(x[:rows])
        assert a["probabilities"].tobytes() == b["probabilities"].tobytes()
        # A row's answer does not depend on the batch it sits in.
        assert a["probabilities"][-1].tobytes() == warm.predict(x[rows - 1 : rows])["probabilities"][0].tobytes()


def test_tampered_component_is_refused(model_dir, tmp_path):
    copy = copy_version(model_dir, tmp_path)
    model = edgeinfer.Model(copy)
    component = next(p for p in copy.iterdir() if p.suffix == ".wasm")
    data = bytearray(component.read_bytes())
    data[len(data) // 2] ^= 0xFF
    component.write_bytes(bytes(data))
    with pytest.raises(edgeinfer.IntegrityError, match="sha256"):
        edgeinfer.Model(copy)
    # A pickled model whose directory changed since refuses to load on the worker.
    blob = pickle.dumps(model)
    edgeinfer._LOADED.clear()
    with pytest.raises(edgeinfer.IntegrityError):
        pickle.loads(blob)


def test_pickles_as_path_and_digest_and_loads_once_per_process(model, holdout):
    blob = pickle.dumps(model)
    assert len(blob) < 500 and model.sha256.encode() in blob
    first, second = pickle.loads(blob), pickle.loads(blob)
    assert first._native is second._native
    x = np.array(holdout["x"][:5], dtype=np.float32)
    assert first.predict(x)["probabilities"].tobytes() == model.predict(x)["probabilities"].tobytes()


def test_missing_model_and_version(model_dir):
    repo = model_dir.parent.parent
    with pytest.raises(edgeinfer.ModelNotFound, match="no version 99"):
        edgeinfer.Model.from_repository(repo, "digits", 99)
    newest = edgeinfer.Model.from_repository(repo, "digits")
    assert newest.version >= 1
    with pytest.raises(edgeinfer.EdgeInferError):
        edgeinfer.Model(repo / "nowhere")


def test_threads_share_one_model(model, holdout):
    x = np.array(holdout["x"], dtype=np.float32)
    want = [model.predict(x[i : i + 10])["probabilities"].tobytes() for i in range(0, 400, 10)]
    start = threading.Barrier(8)

    def worker(offset):
        start.wait()
        return [model.predict(x[i : i + 10])["probabilities"].tobytes() for i in range(0, 400, 10)][offset:] + [
            model.predict(x[i : i + 10])["probabilities"].tobytes() for i in range(0, 400, 10)
        ][:offset]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(worker, range(8)))
    for offset, got in enumerate(results):
        assert got == want[offset:] + want[:offset]


def test_pandas_and_arrow_give_batch_bits(model, rows_csv, batch_scored):
    pd = require("pandas")
    pa_csv = require("pyarrow.csv")
    frame = pd.read_csv(rows_csv)
    scored = model.predict_pandas(frame, columns=[f"f{i}" for i in range(64)], batch_size=100)
    assert list(scored.columns) == ["label"] + [f"probabilities_{i}" for i in range(10)]
    assert_same_as_batch(pd.concat([frame[["id"]], scored], axis=1), batch_scored)
    empty = model.predict_pandas(frame.iloc[:0], columns=[f"f{i}" for i in range(64)])
    assert list(empty.columns) == list(scored.columns) and len(empty) == 0
    table = pa_csv.read_csv(rows_csv)
    arrow = model.predict_arrow(table, columns=[f"f{i}" for i in range(64)])
    assert arrow.num_rows == 1800
    assert_same_as_batch(pd.concat([frame[["id"]], arrow.to_pandas()], axis=1), batch_scored)


def test_same_bits_as_the_servers_binary_answer(model_dir, binary, holdout):
    tritonclient = require("tritonclient.http")
    repo = model_dir.parent.parent
    server = subprocess.Popen(
        [str(binary), "serve", "--listen", "127.0.0.1:0", "--repo", str(repo)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        address = None
        for line in server.stderr:
            found = re.search(r"on http://(\S+)", line)
            if found:
                address = found.group(1)
                break
        assert address, "the server printed its address"
        client = tritonclient.InferenceServerClient(address)
        x = np.array(holdout["x"][:32], dtype=np.float32)
        tensor = tritonclient.InferInput("X", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=True)
        wanted = [tritonclient.InferRequestedOutput(n, binary_data=True) for n in ("label", "probabilities")]
        answer = client.infer("digits", [tensor], outputs=wanted)
        ours = edgeinfer.Model(model_dir).predict(x)
        assert answer.as_numpy("probabilities").tobytes() == ours["probabilities"].tobytes()
        assert (answer.as_numpy("label") == ours["label"]).all()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_compile_like_the_cli(tmp_path):
    first = Path(edgeinfer.compile(FIXTURES / "digits.onnx", tmp_path, "digits"))
    second = Path(edgeinfer.compile(str(FIXTURES / "digits.onnx"), str(tmp_path), "digits", fuel=10**9))
    assert (first.name, second.name) == ("1", "2")
    model = edgeinfer.Model.from_repository(tmp_path, "digits")
    assert model.version == 2 and model.limits["fuel"] == 10**9
    with pytest.raises(edgeinfer.CompileError, match="already exists"):
        edgeinfer.compile(FIXTURES / "digits.onnx", tmp_path, "digits", 2)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(edgeinfer.CompileError):
        edgeinfer.compile(garbage, tmp_path, "garbage")
    with pytest.raises(edgeinfer.EdgeInferError):
        edgeinfer.compile(tmp_path / "missing.onnx", tmp_path, "missing")


def test_profile_names_every_node_and_a_dynamic_batch_gets_the_specialised_kernels(model, holdout):
    x = np.array(holdout["x"][:64], dtype=np.float32)
    nodes = model.profile(x, runs=2)
    assert nodes and all(seconds >= 0 for _, _, seconds in nodes)
    ops = {op for _, op, _ in nodes}
    assert any("MatMul" in op for op in ops), ops
    # Element-wise ops on the dynamic batch dimension take tract's by-scalar/unicast kernels,
    # not the generic broadcasting one (30x slower in the sandbox on 1,024 rows).
    assert not ops & {"Max", "Min", "Add", "Sub", "Mul", "Div"}, ops
    with pytest.raises(edgeinfer.InvalidInput):
        model.profile(np.zeros((1, 3), np.float32))


def test_a_forked_child_reloads_the_model_and_keeps_its_deadlines(model, holdout):
    import multiprocessing

    global _INHERITED_MODEL
    _INHERITED_MODEL = model  # reaches the child through fork's copy of memory, not pickle
    x = np.array(holdout["x"][:3], dtype=np.float32)
    want = model.predict(x)["probabilities"].tobytes()
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got, reloaded, timed_out = pool.apply(_in_forked_child, (x,))
    assert got == want
    assert reloaded, "the child loaded the model again with its own runtime"
    assert timed_out, "a 1 ms deadline fired in the forked child"


_INHERITED_MODEL = None


def _in_forked_child(x):
    model = _INHERITED_MODEL
    inherited = model._native
    got = model.predict(x)["probabilities"].tobytes()
    try:
        model.predict(np.tile(x, (20000, 1)), timeout_ms=1)
        timed_out = False
    except edgeinfer.LimitExceeded:
        timed_out = True
    return got, model._native is not inherited, timed_out
