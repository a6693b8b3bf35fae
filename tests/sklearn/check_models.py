#!/usr/bin/env python3
"""Compiles every model of the matrix with `edgeinfer compile`, runs its held-out rows with
`edgeinfer infer`, and compares with onnxruntime's outputs (labels exactly, scores within
1e-5 abs + 1e-4 rel). Prints a markdown table.

    python3 tests/sklearn/check_models.py EDGEINFER_BINARY MODELS_DIR REPO_DIR
"""
import json
import os
import subprocess
import sys

import numpy as np


def compare(expected, got):
    expected, got = np.asarray(expected), np.asarray(got)
    if expected.dtype.kind in "fc":
        got = got.reshape(expected.shape) if got.size == expected.size else got
        if got.shape != expected.shape:
            return f"shape {got.shape}, expected {expected.shape}"
        if not np.allclose(got.astype(np.float64), expected, atol=1e-5, rtol=1e-4):
            worst = np.max(np.abs(got - expected))
            return f"scores differ (max abs {worst:.3g})"
        return None
    if [str(v) for v in got.reshape(-1)] != [str(v) for v in expected.reshape(-1)]:
        return "labels differ"
    return None


def main():
    binary, models, repo = sys.argv[1:4]
    matrix = json.load(open(os.path.join(models, "matrix.json")))
    print("| model | ONNX-ML operators | compiles | matches onnxruntime |")
    print("|---|---|---|---|")
    for entry in matrix:
        name = entry["name"]
        if "export_error" in entry:
            print(f"| {name} | - | skl2onnx cannot export it: {entry['export_error'][:80]} | - |")
            continue
        ops = ", ".join(o.split(":")[1] for o in entry["operators"] if o.startswith("ai.onnx.ml"))
        case = json.load(open(os.path.join(models, f"{name}.json")))
        compiled = subprocess.run(
            [binary, "compile", "--name", name.replace("_", "-"), "--version", "1", "--repo", repo, "--replace",
             os.path.join(models, f"{name}.onnx")], capture_output=True, text=True)
        if compiled.returncode != 0:
            why = compiled.stderr.strip().splitlines()[-1] if compiled.stderr.strip() else "?"
            print(f"| {name} | {ops} | no: {why[:160]} | - |")
            continue
        rows = case["rows"]
        request = {"inputs": [{"name": case["input"], "shape": [len(rows), len(rows[0])], "datatype": "FP32",
                               "data": [v for r in rows for v in r]}]}
        ran = subprocess.run([binary, "infer", "--repo", repo, "--model", name.replace("_", "-"), "--input", "-"],
                             input=json.dumps(request), capture_output=True, text=True)
        if ran.returncode != 0:
            print(f"| {name} | {ops} | yes | no: {ran.stderr.strip()[-160:]} |")
            continue
        outputs = {o["name"]: o["data"] for o in json.loads(ran.stdout)["outputs"]}
        problems = []
        for out_name, expected in case["outputs"].items():
            if out_name not in outputs:
                problems.append(f"no output {out_name}")
                continue
            why = compare(expected, outputs[out_name])
            if why:
                problems.append(f"{out_name}: {why}")
        print(f"| {name} | {ops} | yes | {'yes' if not problems else 'no: ' + '; '.join(problems)} |")


if __name__ == "__main__":
    main()
