#!/usr/bin/env python3
"""Warm latency of each zoo model under onnxruntime, one thread (the peer of tests/all/zoo.rs):
one warm-up run, then the median of RUNS, in ms, as JSON {name: ms} on stdout.

    python3 tests/zoo/ort_latency.py tests/zoo/models RUNS NAME...
"""
import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort

NUMPY = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}


def main():
    models, runs, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    result = {}
    for name in names:
        case = json.load(open(os.path.join(models, name + ".json")))
        feeds = {t["name"]: np.array(t["data"], dtype=NUMPY[t["datatype"]]).reshape(t["shape"]) for t in case["inputs"]}
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(os.path.join(models, name + ".onnx"), options,
                                       providers=["CPUExecutionProvider"])
        session.run(None, feeds)
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            session.run(None, feeds)
            times.append((time.perf_counter() - started) * 1000)
        result[name] = sorted(times)[len(times) // 2]
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
