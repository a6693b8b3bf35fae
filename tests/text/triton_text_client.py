"""Drives a text model (compiled with `--tokenizer` and `--labels`) through Triton's own
clients, HTTP and gRPC, sending strings, and checks the answers against onnxruntime run on
the Python `tokenizers` library's token ids.

    python3 tests/text/triton_text_client.py HTTP_ADDR GRPC_ADDR MODEL ONNX TOKENIZER LABELS < corpus.json

Prints one JSON line of what it saw; exits non-zero on the first mismatch.
"""

import json
import sys

import numpy as np
import onnxruntime
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tokenizers import Tokenizer

http_addr, grpc_addr, model, onnx_path, tokenizer_path, labels_path = sys.argv[1:7]
texts = json.load(sys.stdin)
labels = [line.strip() for line in open(labels_path, encoding="utf-8") if line.strip()]

# What the component should compute: the same tokens, the same network, under onnxruntime.
tokenizer = Tokenizer.from_file(tokenizer_path)
encodings = tokenizer.encode_batch(texts)
feeds = {
    "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
    "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
}
options = onnxruntime.SessionOptions()
options.intra_op_num_threads = 1
session = onnxruntime.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
expected = session.run(["logits"], feeds)[0]
expected_labels = [labels[i] for i in expected.argmax(axis=1)]

strings = np.array([t.encode("utf-8") for t in texts], dtype=np.object_)
seen = {}


def check(kind, logits, got_labels):
    if logits.shape != expected.shape:
        sys.exit(f"{kind}: logits shape {logits.shape}, expected {expected.shape}")
    worst = float(np.max(np.abs(logits - expected)))
    if not np.allclose(logits, expected, atol=1e-4, rtol=1e-3):
        sys.exit(f"{kind}: logits differ from onnxruntime by up to {worst}")
    got = [g.decode("utf-8") if isinstance(g, bytes) else str(g) for g in got_labels]
    if got != expected_labels:
        sys.exit(f"{kind}: labels {got} != {expected_labels}")
    seen[kind] = {"rows": int(logits.shape[0]), "max_abs_diff": worst, "labels": got[:3]}


http = httpclient.InferenceServerClient(url=http_addr)
metadata = http.get_model_metadata(model)
if [(i["name"], i["datatype"]) for i in metadata["inputs"]] != [("text", "BYTES")]:
    sys.exit(f"metadata inputs {metadata['inputs']}, expected one BYTES input text")
text_input = httpclient.InferInput("text", [len(texts)], "BYTES")
text_input.set_data_from_numpy(strings, binary_data=True)
outputs = [httpclient.InferRequestedOutput("logits", binary_data=True), httpclient.InferRequestedOutput("label")]
result = http.infer(model, [text_input], outputs=outputs)
check("http", result.as_numpy("logits"), result.as_numpy("label"))

# The JSON form of BYTES (strings in "data"), as curl users send it.
text_json = httpclient.InferInput("text", [len(texts)], "BYTES")
text_json.set_data_from_numpy(strings, binary_data=False)
result = http.infer(model, [text_json], outputs=[httpclient.InferRequestedOutput(n, binary_data=False) for n in ["logits", "label"]])
check("http-json", result.as_numpy("logits"), result.as_numpy("label"))

grpc = grpcclient.InferenceServerClient(url=grpc_addr)
grpc_input = grpcclient.InferInput("text", [len(texts)], "BYTES")
grpc_input.set_data_from_numpy(strings)
result = grpc.infer(model, [grpc_input], outputs=[grpcclient.InferRequestedOutput(n) for n in ["logits", "label"]])
check("grpc", result.as_numpy("logits"), result.as_numpy("label"))

print(json.dumps(seen))
