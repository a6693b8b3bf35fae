#!/usr/bin/env python3
"""Exports the ONNX backend node test cases shipped with the `onnx` package for edgeinfer.

    python3 tests/conformance/export_cases.py OUT_DIR

The `onnx` wheel does not ship the generated node test data (onnx/backend/test/data/node), but
it ships the case definitions that generate it (onnx.backend.test.case.node). This writes, per
case, OUT_DIR/<test name>/model.onnx and OUT_DIR/<test name>/case.json:

  {"op": ..., "rtol": ..., "atol": ...,
   "inputs":  [{"name", "datatype", "shape", "data"}],   # first data set; data: base64,
   "outputs": [{"name", "datatype", "shape", "data"}]}   # raw little-endian (BYTES: 4-byte
                                                          # length-prefixed items)
or {"unsupported": "<why>"} for cases the Open Inference Protocol cannot express (sequence,
map or optional values, complex, bfloat16, float8, int4 tensors).
"""
import base64
import json
import os
import struct
import sys
import warnings

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.backend.test.case import node as node_cases

DATATYPES = {
    np.dtype("bool"): "BOOL",
    np.dtype("uint8"): "UINT8",
    np.dtype("uint16"): "UINT16",
    np.dtype("uint32"): "UINT32",
    np.dtype("uint64"): "UINT64",
    np.dtype("int8"): "INT8",
    np.dtype("int16"): "INT16",
    np.dtype("int32"): "INT32",
    np.dtype("int64"): "INT64",
    np.dtype("float16"): "FP16",
    np.dtype("float32"): "FP32",
    np.dtype("float64"): "FP64",
}


class Unsupported(Exception):
    pass


def tensor(name, value):
    if isinstance(value, onnx.TensorProto):
        value = numpy_helper.to_array(value)
    if not isinstance(value, np.ndarray):
        raise Unsupported(f"{name} is a {type(value).__name__}, not a tensor")
    if value.dtype == object or value.dtype.kind in "US":
        items = [v.encode() if isinstance(v, str) else bytes(v) for v in value.reshape(-1)]
        raw = b"".join(struct.pack("<I", len(i)) + i for i in items)
        datatype = "BYTES"
    else:
        datatype = DATATYPES.get(value.dtype)
        if datatype is None:
            raise Unsupported(f"{name} has element type {value.dtype}")
        raw = np.ascontiguousarray(value).astype(value.dtype.newbyteorder("<")).tobytes()
    return {
        "name": name,
        "datatype": datatype,
        "shape": [int(d) for d in value.shape],
        "data": base64.b64encode(raw).decode(),
    }


def operators(cases):
    """The operator each case tests: its node's op type, or for a multi-node graph (an
    `_expanded` function body) the operator of the single-node case whose name prefixes it."""
    single = {c.name: c.model.graph.node[0].op_type for c in cases if len(c.model.graph.node) == 1}
    ops = {}
    for case in cases:
        if case.name in single:
            ops[case.name] = single[case.name]
            continue
        prefixes = [name for name in single if case.name.startswith(name + "_")]
        ops[case.name] = single[max(prefixes, key=len)] if prefixes else case.model.graph.node[-1].op_type
    return ops


def export(case, op, out):
    directory = os.path.join(out, case.name)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "model.onnx"), "wb") as f:
        f.write(case.model.SerializeToString())
    graph = case.model.graph
    try:
        inputs, outputs = case.data_sets[0]
        description = {
            "op": op,
            "rtol": case.rtol,
            "atol": case.atol,
            "inputs": [tensor(graph.input[i].name, v) for i, v in enumerate(inputs)],
            "outputs": [tensor(graph.output[i].name, v) for i, v in enumerate(outputs)],
        }
    except Unsupported as why:
        description = {"op": op, "unsupported": str(why)}
    with open(os.path.join(directory, "case.json"), "w") as f:
        json.dump(description, f)


def main():
    out = sys.argv[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = node_cases.collect_testcases(None)
    ops = operators(cases)
    for case in cases:
        export(case, ops[case.name], out)
    print(f"exported {len(cases)} node test cases to {out}")


if __name__ == "__main__":
    main()
