#!/usr/bin/env python3
"""The Python baseline of `cargo bench --bench batch`: the same job with pandas + onnxruntime
(read the CSV, session.run in batches, write the CSV). Usage: MODEL INPUT OUTPUT BATCH_SIZE."""
import sys

import numpy as np
import onnxruntime as ort
import pandas as pd


def main(model, source, target, batch_size):
    options = ort.SessionOptions()
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    frame = pd.read_csv(source)
    ids = frame["key"]
    x = frame.drop(columns=["key"]).to_numpy(dtype=np.float32)
    labels, probabilities = [], []
    for start in range(0, len(x), batch_size):
        label, probability = session.run(None, {"X": x[start : start + batch_size]})
        labels.append(label)
        probabilities.append(probability)
    probabilities = np.concatenate(probabilities)
    out = pd.DataFrame({"id": ids, "label": np.concatenate(labels)})
    for i in range(probabilities.shape[1]):
        out[f"probabilities_{i}"] = probabilities[:, i]
    out.to_csv(target, index=False)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
