#!/usr/bin/env python3
"""Talks to an edgeinfer server with Triton's own HTTP client, unchanged.

    python3 tests/python/triton_client.py 127.0.0.1:PORT tests/fixtures/digits_holdout.json [TOKEN]

Checks liveness, server and model metadata, JSON and binary inference of the digits model
against onnxruntime's labels, and prints "ok" on success (exit 1 otherwise).
"""
import json
import sys

import numpy as np
import tritonclient.http as httpclient


def main(url, holdout_path, token=None):
    with open(holdout_path) as f:
        holdout = json.load(f)
    h = {"Authorization": "Bearer " + token} if token else None
    client = httpclient.InferenceServerClient(url=url)
    assert client.is_server_live(), "server not live"
    assert client.is_server_ready(), "server not ready"
    if token:
        try:
            client.get_model_metadata("digits")
        except Exception as error:
            assert "authentication required" in str(error), str(error)
        else:
            raise AssertionError("metadata answered without a token")
    assert client.is_model_ready("digits", headers=h), "digits not ready"
    server = client.get_server_metadata(headers=h)
    assert server["name"] == "edgeinfer", server
    model = client.get_model_metadata("digits", headers=h)
    assert model["inputs"][0]["name"] == "X" and model["inputs"][0]["datatype"] == "FP32", model

    x = np.array(holdout["x"][:16], dtype=np.float32)
    expected = holdout["ort_labels"][:16]
    for binary in (False, True):
        tensor = httpclient.InferInput("X", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        outputs = [httpclient.InferRequestedOutput("label", binary_data=binary),
                   httpclient.InferRequestedOutput("probabilities", binary_data=binary)]
        result = client.infer("digits", [tensor], outputs=outputs, request_id="py-%s" % binary, headers=h)
        labels = result.as_numpy("label").tolist()
        assert labels == expected, (binary, labels, expected)
        probabilities = result.as_numpy("probabilities")
        assert probabilities.shape == (16, 10), probabilities.shape
        expected_p = np.array(holdout["ort_probabilities"][:16], dtype=np.float32)
        assert np.allclose(probabilities, expected_p, atol=1e-5, rtol=1e-4), "probabilities differ"
        response = result.get_response()
        assert response["model_name"] == "digits" and response["id"] == "py-%s" % binary, response

    try:
        client.infer("digits", [httpclient.InferInput("X", [1, 3], "FP32").set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))], headers=h)
    except Exception as error:  # tritonclient raises InferenceServerException with our message
        assert "shape [1, 3] does not match" in str(error), str(error)
    else:
        raise AssertionError("a wrong shape was accepted")
    print("ok")


if __name__ == "__main__":
    main(*sys.argv[1:4])
