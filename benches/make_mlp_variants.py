#!/usr/bin/env python3
"""Writes COUNT variants of one small MLP (30 features -> 128 -> 2, softmax), ~17 KB each.

    python3 benches/make_mlp_variants.py COUNT OUT_DIR

Used by `cargo bench --bench models`; each variant has its own seeded random weights, so
every compiled component differs (no two share a digest).
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def variant(index):
    rng = np.random.default_rng(index)
    w1 = rng.standard_normal((30, 128)).astype(np.float32) * 0.2
    b1 = rng.standard_normal(128).astype(np.float32) * 0.1
    w2 = rng.standard_normal((128, 2)).astype(np.float32) * 0.2
    b2 = rng.standard_normal(2).astype(np.float32) * 0.1
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["o0"]),
        helper.make_node("Add", ["o0", "b2"], ["o1"]),
        helper.make_node("Softmax", ["o1"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        f"mlp{index}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 30])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(a, n) for a, n in [(w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2")]],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def main():
    count, out = int(sys.argv[1]), sys.argv[2]
    os.makedirs(out, exist_ok=True)
    for index in range(count):
        onnx.save(variant(index), os.path.join(out, f"mlp{index}.onnx"))


if __name__ == "__main__":
    main()
