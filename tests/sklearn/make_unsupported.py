#!/usr/bin/env python3
"""ONNX-ML nodes with attribute combinations the runtime does not support, one model each,
for the test that the compile fails naming the attribute (tests/all/sklearn.rs).

    python3 tests/sklearn/make_unsupported.py OUT_DIR

Writes OUT_DIR/<case>.onnx and OUT_DIR/unsupported.json: [{"case", "names"}], where "names"
is the text the compile error must contain.
"""
import json
import os
import sys

from onnx import TensorProto, helper


def model(op, attributes, input_type=TensorProto.FLOAT, outputs=("Y",), output_type=TensorProto.FLOAT):
    node = helper.make_node(op, ["X"], list(outputs), domain="ai.onnx.ml", **attributes)
    graph = helper.make_graph(
        [node], op,
        [helper.make_tensor_value_info("X", input_type, [None, 2])],
        [helper.make_tensor_value_info(o, output_type if i == len(outputs) - 1 else TensorProto.INT64, None)
         for i, o in enumerate(outputs)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])


TREE = dict(nodes_treeids=[0, 0, 0], nodes_nodeids=[0, 1, 2], nodes_featureids=[0, 0, 0],
            nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF"], nodes_values=[0.5, 0.0, 0.0],
            nodes_truenodeids=[1, 0, 0], nodes_falsenodeids=[2, 0, 0])
SVC = dict(classlabels_ints=[0, 1], vectors_per_class=[1, 1], support_vectors=[0.0, 1.0, 1.0, 0.0],
           coefficients=[1.0, -1.0], rho=[0.1], kernel_type="RBF", kernel_params=[0.5, 0.0, 3.0])

CASES = {
    "one_hot_zeros_0": (model("OneHotEncoder", dict(cats_int64s=[1, 2], zeros=0)), "zeros"),
    "one_hot_both_category_lists": (model("OneHotEncoder", dict(cats_int64s=[1], cats_strings=["a"])), "cats_strings"),
    "imputer_int64": (model("Imputer", dict(imputed_value_int64s=[1, 2], replaced_value_int64=0),
                            input_type=TensorProto.INT64, output_type=TensorProto.INT64), "imputed_value_int64s"),
    "tree_regressor_softmax": (model("TreeEnsembleRegressor", dict(
        TREE, n_targets=1, target_treeids=[0, 0], target_nodeids=[1, 2], target_ids=[0, 0],
        target_weights=[1.0, 2.0], post_transform="SOFTMAX")), "post_transform"),
    "tree_classifier_probit": (model("TreeEnsembleClassifier", dict(
        TREE, classlabels_int64s=[0, 1], class_treeids=[0, 0], class_nodeids=[1, 2], class_ids=[0, 1],
        class_weights=[1.0, 1.0], post_transform="PROBIT"), outputs=("label", "Y")), "PROBIT"),
    "svm_classifier_logistic": (model("SVMClassifier", dict(SVC, post_transform="LOGISTIC"),
                                      outputs=("label", "Y")), "post_transform"),
    "svm_classifier_linear_mode": (model("SVMClassifier", dict(
        classlabels_ints=[0, 1], coefficients=[1.0, 1.0, -1.0, -1.0], rho=[0.0]), outputs=("label", "Y")),
        "vectors_per_class"),
    "svm_classifier_unknown_kernel": (model("SVMClassifier", dict(SVC, kernel_type="CUBIC"),
                                            outputs=("label", "Y")), "kernel_type CUBIC"),
    "svm_regressor_one_class": (model("SVMRegressor", dict(
        support_vectors=[0.0, 1.0], coefficients=[1.0], rho=[0.0], n_supports=1, one_class=1)), "one_class"),
    "label_encoder_two_key_lists": (model("LabelEncoder", dict(
        keys_strings=["a"], keys_int64s=[1], values_int64s=[1]), input_type=TensorProto.STRING,
        output_type=TensorProto.INT64), "exactly one of keys_strings"),
    "feature_vectorizer_widths": (model("FeatureVectorizer", dict(inputdimensions=[2, 3])), "inputdimensions"),
}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    listed = []
    for case, (onnx_model, names) in CASES.items():
        with open(os.path.join(out, f"{case}.onnx"), "wb") as f:
            f.write(onnx_model.SerializeToString())
        listed.append({"case": case, "names": names})
    with open(os.path.join(out, "unsupported.json"), "w") as f:
        json.dump(listed, f, indent=1)


if __name__ == "__main__":
    main()
