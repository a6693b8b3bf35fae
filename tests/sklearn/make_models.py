#!/usr/bin/env python3
"""Builds the scikit-learn coverage matrix: pipelines exported with skl2onnx (ZipMap left on
for classifiers, skl2onnx's default), with held-out rows and onnxruntime's outputs.

    pip install -r tests/fixtures/requirements.txt
    python3 tests/sklearn/make_models.py OUT_DIR

Writes OUT_DIR/<name>.onnx and OUT_DIR/<name>.json ({"input", "rows", "outputs": {name:
values}, "operators": [...]}) per model, and OUT_DIR/matrix.json listing them. Seeded: reruns
give the same models.
"""
import json
import os
import sys
import warnings

import numpy as np
import onnxruntime as ort
import skl2onnx.common._container as skl2onnx_container
import skl2onnx.common._topology as skl2onnx_topology
from skl2onnx import to_onnx
from skl2onnx.common.data_types import StringTensorType
from sklearn import datasets
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (ExtraTreesClassifier, ExtraTreesRegressor, GradientBoostingClassifier,
                              GradientBoostingRegressor, HistGradientBoostingClassifier,
                              HistGradientBoostingRegressor, RandomForestClassifier, RandomForestRegressor)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import Lasso, LinearRegression, LogisticRegression, Ridge, SGDClassifier
from sklearn.model_selection import train_test_split
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import (Binarizer, LabelEncoder, MaxAbsScaler, MinMaxScaler, Normalizer, OneHotEncoder,
                                   PolynomialFeatures, RobustScaler, StandardScaler)
from sklearn.svm import SVC, SVR, LinearSVC
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

SEED = 7
HELD_OUT = 20


def work_around_skl2onnx_1_20():
    """Two skl2onnx 1.20 bugs with scikit-learn 1.9, mended so the matrix exports what
    scikit-learn trained (onnxruntime then runs the same file we compile):
    - HistGradientBoosting: `nodes_missing_value_tracks_true` holds numpy bools, which onnx's
      make_node refuses in an ints attribute ("Expected an int, got a boolean");
    - a pipeline ending in LinearSVC gets the `zipmap` option, which LinearSVC's converter does
      not declare (NameError); LinearSVC has no probabilities to zip, so it is dropped.
    """
    make_node = skl2onnx_container.make_node

    def make_node_with_int_flags(op_type, inputs, outputs, name=None, doc_string=None, domain=None, **attrs):
        for key, value in attrs.items():
            if isinstance(value, (list, tuple, np.ndarray)) and any(isinstance(v, (bool, np.bool_)) for v in value):
                attrs[key] = [int(v) for v in value]
        return make_node(op_type, inputs, outputs, name=name, doc_string=doc_string, domain=domain, **attrs)

    build_options = skl2onnx_container._build_options

    def build_options_without_stray_zipmap(model, defined, defaults, allowed, fail):
        if allowed not in (None, "passthrough") and "zipmap" not in allowed and defined:
            defined = {key: {o: v for o, v in opts.items() if o != "zipmap"} for key, opts in defined.items()}
        return build_options(model, defined, defaults, allowed, fail)

    skl2onnx_container.make_node = make_node_with_int_flags
    skl2onnx_container._build_options = build_options_without_stray_zipmap
    skl2onnx_topology._build_options = build_options_without_stray_zipmap


def data(name):
    if name == "iris":
        x, y = datasets.load_iris(return_X_y=True)
    elif name == "wine":
        x, y = datasets.load_wine(return_X_y=True)
    elif name == "cancer":
        x, y = datasets.load_breast_cancer(return_X_y=True)
    elif name == "diabetes":
        x, y = datasets.load_diabetes(return_X_y=True)
    else:  # california-housing-like synthetic regression
        x, y = datasets.make_regression(n_samples=600, n_features=8, noise=5.0, random_state=SEED)
    return train_test_split(x.astype(np.float32), y, test_size=HELD_OUT, random_state=SEED)


def with_categories(x):
    """The first column binned into 4 integer categories, for OneHotEncoder."""
    bins = np.quantile(x[:, 0], [0.25, 0.5, 0.75])
    out = x.copy()
    out[:, 0] = np.digitize(x[:, 0], bins).astype(np.float32)
    return out


def one_hot(model):
    return make_pipeline(
        ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), [0])], remainder=StandardScaler()),
        model,
    )


CLASSIFIERS = [
    ("standard_logistic_iris", "iris", lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))),
    ("minmax_logistic_wine", "wine", lambda: make_pipeline(MinMaxScaler(), LogisticRegression(max_iter=500))),
    ("robust_sgd_cancer", "cancer", lambda: make_pipeline(RobustScaler(), SGDClassifier(loss="log_loss", random_state=SEED))),
    ("maxabs_linearsvc_wine", "wine", lambda: make_pipeline(MaxAbsScaler(), LinearSVC(random_state=SEED))),
    ("standard_svc_linear_iris", "iris", lambda: make_pipeline(StandardScaler(), SVC(kernel="linear"))),
    ("standard_svc_rbf_prob_cancer", "cancer", lambda: make_pipeline(StandardScaler(), SVC(kernel="rbf", probability=True, random_state=SEED))),
    ("standard_svc_rbf_cancer", "cancer", lambda: make_pipeline(StandardScaler(), SVC(kernel="rbf"))),
    ("minmax_svc_poly_prob_iris", "iris", lambda: make_pipeline(MinMaxScaler(), SVC(kernel="poly", degree=2, probability=True, random_state=SEED))),
    ("normalizer_knn_iris", "iris", lambda: make_pipeline(Normalizer(), KNeighborsClassifier(n_neighbors=5))),
    ("imputer_tree_wine", "wine", lambda: make_pipeline(SimpleImputer(), DecisionTreeClassifier(max_depth=5, random_state=SEED))),
    ("forest_cancer", "cancer", lambda: RandomForestClassifier(n_estimators=20, max_depth=6, random_state=SEED)),
    ("extratrees_iris", "iris", lambda: ExtraTreesClassifier(n_estimators=20, max_depth=6, random_state=SEED)),
    ("gradient_boosting_wine", "wine", lambda: GradientBoostingClassifier(n_estimators=20, random_state=SEED)),
    ("hist_gradient_boosting_cancer", "cancer", lambda: HistGradientBoostingClassifier(max_iter=20, random_state=SEED)),
    ("standard_mlp_wine", "wine", lambda: make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(16,), max_iter=500, random_state=SEED))),
    ("gaussian_nb_iris", "iris", lambda: GaussianNB()),
    ("binarizer_logistic_cancer", "cancer", lambda: make_pipeline(StandardScaler(), Binarizer(), LogisticRegression(max_iter=500))),
    ("onehot_logistic_iris", "iris-cat", lambda: one_hot(LogisticRegression(max_iter=500))),
    ("onehot_strings_logistic_iris", "iris-words", None),
]

TRANSFORMERS = [
    ("label_encoder_species", "iris-words", None),
]

REGRESSORS = [
    ("standard_linear_diabetes", "diabetes", lambda: make_pipeline(StandardScaler(), LinearRegression())),
    ("poly_ridge_diabetes", "diabetes", lambda: make_pipeline(PolynomialFeatures(2), Ridge())),
    ("minmax_lasso_housing", "housing", lambda: make_pipeline(MinMaxScaler(), Lasso(alpha=0.1))),
    ("standard_svr_diabetes", "diabetes", lambda: make_pipeline(StandardScaler(), SVR())),
    ("knn_regressor_housing", "housing", lambda: KNeighborsRegressor(n_neighbors=5)),
    ("tree_regressor_diabetes", "diabetes", lambda: DecisionTreeRegressor(max_depth=6, random_state=SEED)),
    ("forest_regressor_housing", "housing", lambda: RandomForestRegressor(n_estimators=20, max_depth=6, random_state=SEED)),
    ("extratrees_regressor_diabetes", "diabetes", lambda: ExtraTreesRegressor(n_estimators=20, max_depth=6, random_state=SEED)),
    ("gradient_boosting_regressor_housing", "housing", lambda: GradientBoostingRegressor(n_estimators=20, random_state=SEED)),
    ("hist_gradient_boosting_regressor_diabetes", "diabetes", lambda: HistGradientBoostingRegressor(max_iter=20, random_state=SEED)),
    ("standard_mlp_regressor_housing", "housing", lambda: make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(16,), max_iter=800, random_state=SEED))),
    ("robust_ridge_housing", "housing", lambda: make_pipeline(RobustScaler(), Ridge())),
    ("maxabs_linear_housing", "housing", lambda: make_pipeline(MaxAbsScaler(), LinearRegression())),
    ("imputer_linear_diabetes", "diabetes", lambda: make_pipeline(SimpleImputer(), LinearRegression())),
    ("onehot_ridge_housing", "housing-cat", lambda: one_hot(Ridge())),
]


def iris_words():
    """Iris as words: two features binned into low/mid/high, and the species names."""
    x, y = datasets.load_iris(return_X_y=True)
    words = np.array(["low", "mid", "high"])
    binned = [words[np.digitize(x[:, c], np.quantile(x[:, c], [1 / 3, 2 / 3]))] for c in (2, 3)]
    names = datasets.load_iris().target_names[y]
    return train_test_split(np.stack(binned, axis=1), names, test_size=HELD_OUT, random_state=SEED)


def build_words(name, out):
    """The string-input models: a LabelEncoder of species names (plus one it never saw) and
    string categories one-hot encoded into a logistic regression."""
    x_train, x_test, y_train, y_test = iris_words()
    if name == "label_encoder_species":
        model = LabelEncoder().fit(y_train)
        rows = np.append(y_test, "unseen")
        input_type = StringTensorType([None])
    else:
        model = make_pipeline(OneHotEncoder(handle_unknown="ignore"), LogisticRegression(max_iter=500))
        model.fit(x_train, y_train)
        rows = x_test
        input_type = StringTensorType([None, 2])
    onx = to_onnx(model, initial_types=[("X", input_type)], target_opset={"": 17, "ai.onnx.ml": 3})
    return write_case(name, onx, rows, "BYTES", out)


def write_case(name, onx, rows, datatype, out):
    path = os.path.join(out, f"{name}.onnx")
    with open(path, "wb") as f:
        f.write(onx.SerializeToString())
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    outputs, labels = {}, {}
    for meta, value in zip(session.get_outputs(), session.run(None, {input_name: rows})):
        if isinstance(value, list):  # ZipMap: list of {label: probability}, in label order
            labels[meta.name] = [str(label) for label in value[0].keys()]
            value = [list(row.values()) for row in value]
        outputs[meta.name] = np.asarray(value).tolist()
    description = {
        "input": input_name,
        "datatype": datatype,
        "rows": rows.tolist(),
        "outputs": outputs,
        "labels": labels,
        "operators": sorted({f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in onx.graph.node}),
    }
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(description, f)
    return {"name": name, "operators": description["operators"]}


def build(name, dataset, make, out):
    if dataset == "iris-words":
        return build_words(name, out)
    base = dataset.split("-")[0]
    x_train, x_test, y_train, _ = data(base)
    if dataset.endswith("-cat"):
        x_train, x_test = with_categories(x_train), with_categories(x_test)
    model = make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x_train, y_train)
        try:
            onx = to_onnx(model, x_train[:1], target_opset={"": 17, "ai.onnx.ml": 3})
        except Exception as error:  # skl2onnx cannot export it: recorded, not skipped
            return {"name": name, "export_error": f"{type(error).__name__}: {str(error)[:200]}"}
    return write_case(name, onx, x_test, "FP32", out)


def main():
    work_around_skl2onnx_1_20()
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    models = [build(n, d, m, out) for n, d, m in CLASSIFIERS + REGRESSORS + TRANSFORMERS]
    with open(os.path.join(out, "matrix.json"), "w") as f:
        json.dump(models, f, indent=1)
    exported = sum("export_error" not in m for m in models)
    print(f"{exported} of {len(models)} models exported to {out}")


if __name__ == "__main__":
    main()
