#!/usr/bin/env python3
"""Builds the model zoo: what people deploy, exported by the real exporters with seeded random
weights and small configs (torchvision CNNs, Hugging Face encoders and a causal LM, recurrent
sequence models, LightGBM and XGBoost, onnxruntime int8), each with one test input and
onnxruntime's outputs for it.

    python3 -m venv /tmp/zoo && /tmp/zoo/bin/pip install -r tests/zoo/requirements.txt
    /tmp/zoo/bin/python tests/zoo/make_models.py tests/zoo/models

torch pulls ~3 GB of wheels, so CI does not run this: the ONNX files it writes are committed
(tests/zoo/models/, total kept under 100 MB) and tests/all/zoo.rs compiles, serves and checks
them. Writes OUT/<name>.onnx and OUT/<name>.json ({"family", "exporter", "inputs": [{name,
datatype, shape, data}], "outputs": {name: {"datatype", "shape", "data"}}, "operators"}).
Seeded: reruns give the same files.
"""
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch

SEED = 7


def ort_outputs(path, feeds):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


DATATYPES = {"float32": "FP32", "float64": "FP64", "int64": "INT64", "int32": "INT32", "uint8": "UINT8", "int8": "INT8"}


def tensor_json(name, value):
    value = np.asarray(value)
    datatype = DATATYPES[value.dtype.name]
    return {"name": name, "datatype": datatype, "shape": list(value.shape), "data": value.reshape(-1).tolist()}


def write_case(out, name, family, exporter, feeds):
    path = os.path.join(out, name + ".onnx")
    outputs = ort_outputs(path, feeds)
    model = onnx.load(path)
    operators = sorted({n.op_type for n in model.graph.node})
    case = {
        "family": family,
        "exporter": exporter,
        "inputs": [tensor_json(k, v) for k, v in feeds.items()],
        "outputs": {k: tensor_json(k, v) for k, v in outputs.items()},
        "operators": operators,
    }
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump(case, f)
    print(f"{name}: {os.path.getsize(path) / 1e6:.1f} MB, {len(operators)} operators", flush=True)


def torch_export(module, args, path, input_names, output_names, dynamic_axes, dynamo=False):
    """The TorchScript exporter (what most deployed models went through), or torch.export's
    (`dynamo`) where the former lacks an operator."""
    module.eval()
    with torch.no_grad():
        torch.onnx.export(module, args, path, input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=17 if not dynamo else 18, dynamo=dynamo,
                          **({"external_data": False, "optimize": True} if dynamo else {}))


def cnns(out):
    import torchvision
    for name, build, size in [
        ("resnet18", torchvision.models.resnet18, 224),
        ("mobilenet_v3_small", torchvision.models.mobilenet_v3_small, 224),
        ("efficientnet_b0", torchvision.models.efficientnet_b0, 160),
        ("shufflenet_v2_x0_5", torchvision.models.shufflenet_v2_x0_5, 224),
    ]:
        torch.manual_seed(SEED)
        model = build(num_classes=10)
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(SEED))
        path = os.path.join(out, name + ".onnx")
        torch_export(model, (x,), path, ["input"], ["logits"], {"input": {0: "batch"}, "logits": {0: "batch"}})
        write_case(out, name, "cnn", f"torchvision {torchvision.__version__}", {"input": x.numpy()})


def text_feeds(batch=2, length=12, vocab=1000, with_types=True):
    rng = np.random.default_rng(SEED)
    ids = rng.integers(5, vocab, size=(batch, length), dtype=np.int64)
    mask = np.ones((batch, length), dtype=np.int64)
    mask[1, length - 4:] = 0  # the second row is padded
    feeds = {"input_ids": ids, "attention_mask": mask}
    if with_types:
        feeds["token_type_ids"] = np.zeros((batch, length), dtype=np.int64)
    return feeds


def transformers_models(out):
    import transformers
    from transformers import BertConfig, BertForSequenceClassification, BertModel, GPT2Config, GPT2LMHeadModel

    exporter = f"transformers {transformers.__version__}"
    small = dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=128, max_position_embeddings=128)
    dynamic = {"batch": 0, "sequence": 1}
    axes = lambda names: {n: {0: "batch", 1: "sequence"} for n in names}  # noqa: E731

    torch.manual_seed(SEED)
    classifier = BertForSequenceClassification(BertConfig(num_labels=3, **small))
    classifier.config.return_dict = False
    feeds = text_feeds()
    names = ["input_ids", "attention_mask", "token_type_ids"]
    path = os.path.join(out, "bert_classifier.onnx")
    torch_export(classifier, tuple(torch.from_numpy(feeds[n]) for n in names), path, names, ["logits"],
                 {**axes(names), "logits": {0: "batch"}})
    write_case(out, "bert_classifier", "encoder", exporter, feeds)

    class MeanPooled(torch.nn.Module):
        """A sentence embedding: the encoder's last hidden states averaged over real tokens."""

        def __init__(self):
            super().__init__()
            self.encoder = BertModel(BertConfig(**small), add_pooling_layer=False)

        def forward(self, input_ids, attention_mask):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    torch.manual_seed(SEED)
    feeds = text_feeds(with_types=False)
    names = ["input_ids", "attention_mask"]
    path = os.path.join(out, "sentence_embedding.onnx")
    torch_export(MeanPooled(), tuple(torch.from_numpy(feeds[n]) for n in names), path, names, ["embedding"],
                 {**axes(names), "embedding": {0: "batch"}})
    write_case(out, "sentence_embedding", "encoder", exporter, feeds)

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lm = GPT2LMHeadModel(GPT2Config(vocab_size=1000, n_embd=64, n_layer=2, n_head=2, n_positions=128))

        def forward(self, input_ids):
            return self.lm(input_ids=input_ids, use_cache=False, return_dict=False)[0]

    torch.manual_seed(SEED)
    feeds = {"input_ids": text_feeds(with_types=False)["input_ids"]}
    path = os.path.join(out, "causal_lm.onnx")
    torch_export(Logits(), (torch.from_numpy(feeds["input_ids"]),), path, ["input_ids"], ["logits"],
                 {"input_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"}}, dynamo=True)
    write_case(out, "causal_lm", "decoder", exporter + " (torch.export)", feeds)
    del dynamic


def recurrent(out):
    class Sequence(torch.nn.Module):
        """A 1-D conv front over a multichannel signal, a 2-layer bidirectional RNN, a head."""

        def __init__(self, cell):
            super().__init__()
            self.front = torch.nn.Conv1d(4, 16, kernel_size=5, padding=2)
            self.rnn = cell(16, 24, num_layers=2, bidirectional=True, batch_first=True)
            self.head = torch.nn.Linear(48, 5)

        def forward(self, signal):
            features = torch.relu(self.front(signal)).transpose(1, 2)
            states, _ = self.rnn(features)
            return self.head(states[:, -1, :])

    for name, cell in [("bilstm", torch.nn.LSTM), ("bigru", torch.nn.GRU)]:
        torch.manual_seed(SEED)
        x = torch.randn(2, 4, 50, generator=torch.Generator().manual_seed(SEED))
        path = os.path.join(out, name + ".onnx")
        torch_export(Sequence(cell), (x,), path, ["signal"], ["scores"],
                     {"signal": {0: "batch", 2: "time"}, "scores": {0: "batch"}})
        write_case(out, name, "recurrent", f"torch {torch.__version__}", {"signal": x.numpy()})


def boosted(out):
    import lightgbm
    import onnxmltools
    import xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType
    from sklearn.datasets import make_classification, make_regression

    features = 12
    kinds = {
        "binary": make_classification(n_samples=400, n_features=features, n_informative=6, random_state=SEED),
        "multiclass": make_classification(n_samples=400, n_features=features, n_informative=8, n_classes=4,
                                          random_state=SEED),
        "regressor": make_regression(n_samples=400, n_features=features, noise=0.1, random_state=SEED),
    }
    initial = [("X", FloatTensorType([None, features]))]
    for kind, (x, y) in kinds.items():
        x = x.astype(np.float32)
        rows = x[:16]
        if kind == "regressor":
            lgb = lightgbm.LGBMRegressor(n_estimators=30, num_leaves=15, random_state=SEED, verbose=-1)
            xgb = xgboost.XGBRegressor(n_estimators=30, max_depth=4, random_state=SEED)
        else:
            lgb = lightgbm.LGBMClassifier(n_estimators=30, num_leaves=15, random_state=SEED, verbose=-1)
            xgb = xgboost.XGBClassifier(n_estimators=30, max_depth=4, random_state=SEED)
        lgb.fit(x, y)
        xgb.fit(x, y)
        for name, model, convert, exporter in [
            (f"lightgbm_{kind}", lgb, onnxmltools.convert_lightgbm, f"lightgbm {lightgbm.__version__}"),
            (f"xgboost_{kind}", xgb, onnxmltools.convert_xgboost, f"xgboost {xgboost.__version__}"),
        ]:
            options = {} if kind == "regressor" else {"zipmap": False}
            try:
                proto = convert(model, initial_types=initial, target_opset=15, zipmap=False) if options \
                    else convert(model, initial_types=initial, target_opset=15)
            except TypeError:
                proto = convert(model, initial_types=initial, target_opset=15)
            path = os.path.join(out, name + ".onnx")
            onnx.save(proto, path)
            write_case(out, name, "boosted trees", f"{exporter}, onnxmltools {onnxmltools.__version__}", {"X": rows})


def int8(out):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, \
        quantize_static

    exporter = f"onnxruntime.quantization {ort.__version__}"
    for source, name in [("bert_classifier", "bert_classifier_int8_dynamic"),
                         ("shufflenet_v2_x0_5", "shufflenet_v2_x0_5_int8_dynamic")]:
        quantize_dynamic(os.path.join(out, source + ".onnx"), os.path.join(out, name + ".onnx"),
                         weight_type=QuantType.QInt8)
        case = json.load(open(os.path.join(out, source + ".json")))
        feeds = {t["name"]: np.array(t["data"], dtype=np.float32 if t["datatype"] == "FP32" else np.int64)
                 .reshape(t["shape"]) for t in case["inputs"]}
        write_case(out, name, "int8", exporter, feeds)

    class Reader(CalibrationDataReader):
        def __init__(self, feeds_list):
            self.feeds = iter(feeds_list)

        def get_next(self):
            return next(self.feeds, None)

    rng = np.random.default_rng(SEED)
    for source, name, make in [
        ("shufflenet_v2_x0_5", "shufflenet_v2_x0_5_int8_qdq",
         lambda: {"input": rng.standard_normal((1, 3, 224, 224)).astype(np.float32)}),
        ("bert_classifier", "bert_classifier_int8_qdq", lambda: text_feeds()),
    ]:
        calibration = [make() for _ in range(4)]
        quantize_static(os.path.join(out, source + ".onnx"), os.path.join(out, name + ".onnx"), Reader(calibration),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        case = json.load(open(os.path.join(out, source + ".json")))
        feeds = {t["name"]: np.array(t["data"], dtype=np.float32 if t["datatype"] == "FP32" else np.int64)
                 .reshape(t["shape"]) for t in case["inputs"]}
        write_case(out, name, "int8", exporter, feeds)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "models")
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    only = set(sys.argv[2:])
    for step in [cnns, transformers_models, recurrent, boosted, int8]:
        if not only or step.__name__ in only:
            step(out)


if __name__ == "__main__":
    main()
