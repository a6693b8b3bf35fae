#!/usr/bin/env python3
"""Talks to edgeinfer's gRPC endpoint with Triton's own gRPC client, unchanged, and checks
it answers as the REST endpoint does.

    python3 tests/python/triton_grpc_client.py GRPC_ADDR HTTP_ADDR tests/fixtures/digits_holdout.json MAX_BODY_BYTES

Checks health, metadata, inference with raw contents (the client's default) and with typed
contents (the generated stubs), outputs bit-equal to REST's binary answer, a version-pinned
request, statistics, the gRPC health service, and a table of hostile requests each getting
its status code with the server healthy after, and bidirectional streaming (one answer per
request in order, an error in-stream that does not end the stream). Prints "ok" on success
(exit 1 otherwise).
"""
import json
import sys
import threading

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

METHOD = "/inference.GRPCInferenceService/ModelInfer"


def expect_code(code, call, contains=""):
    try:
        call()
    except grpc.RpcError as error:
        got, message = error.code(), error.details() or ""
    except InferenceServerException as error:
        got, message = error.status(), error.message() or ""
    else:
        raise AssertionError(f"expected {code}, the call succeeded")
    assert str(got) == str(code) or got == code, f"expected {code}, got {got}: {message}"
    assert contains in message, f"{code}: {message!r} does not name {contains!r}"


def typed_request(x, version=""):
    request = service_pb2.ModelInferRequest(model_name="digits", model_version=version, id="typed")
    tensor = request.inputs.add(name="X", datatype="FP32", shape=list(x.shape))
    tensor.contents.fp32_contents.extend(x.reshape(-1).tolist())
    return request


def main(grpc_addr, http_addr, holdout_path, max_body):
    with open(holdout_path) as f:
        holdout = json.load(f)
    client = grpcclient.InferenceServerClient(url=grpc_addr)
    assert client.is_server_live() and client.is_server_ready(), "server not live/ready"
    assert client.is_model_ready("digits") and client.is_model_ready("digits", "1"), "digits not ready"
    assert not client.is_model_ready("no-such-model"), "an unknown model is ready"
    assert client.get_server_metadata().name == "edgeinfer"
    metadata = client.get_model_metadata("digits")
    assert metadata.inputs[0].name == "X" and list(metadata.inputs[0].shape) == [-1, 64], metadata

    x = np.array(holdout["x"][:16], dtype=np.float32)
    expected = holdout["ort_labels"][:16]
    tensor = grpcclient.InferInput("X", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("digits", [tensor], request_id="raw")
    assert result.as_numpy("label").tolist() == expected, result.as_numpy("label")
    assert result.get_response().id == "raw" and result.get_response().model_name == "digits"

    # Bit for bit what REST answers in binary.
    rest = httpclient.InferenceServerClient(url=http_addr)
    http_input = httpclient.InferInput("X", list(x.shape), "FP32")
    http_input.set_data_from_numpy(x, binary_data=True)
    rest_result = rest.infer("digits", [http_input], outputs=[
        httpclient.InferRequestedOutput("label", binary_data=True),
        httpclient.InferRequestedOutput("probabilities", binary_data=True)])
    for name in ("label", "probabilities"):
        assert result.as_numpy(name).tobytes() == rest_result.as_numpy(name).tobytes(), f"{name} differs from REST"

    # Typed contents through the generated stubs, pinned to version 1.
    channel = grpc.insecure_channel(grpc_addr, options=[("grpc.max_send_message_length", 64 << 20)])
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    typed = stub.ModelInfer(typed_request(x, "1"))
    assert typed.model_version == "1" and typed.id == "typed", typed
    probabilities = np.frombuffer(typed.raw_output_contents[1], dtype=np.float32).reshape(16, 10)
    assert probabilities.tobytes() == rest_result.as_numpy("probabilities").tobytes(), "typed contents differ"

    stats = client.get_inference_statistics("digits").model_stats[0]
    assert stats.inference_count >= 2 and stats.inference_stats.success.count >= 2, stats

    health = channel.unary_unary("/grpc.health.v1.Health/Check",
                                 request_serializer=lambda b: b, response_deserializer=lambda b: b)
    assert health(b"") == b"\x08\x01", "health check is not SERVING"
    for version in ("v1", "v1alpha"):  # server reflection, as grpcurl uses it: list_services
        reflect = channel.stream_stream(f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                                        request_serializer=lambda b: b, response_deserializer=lambda b: b)
        listed = b"".join(reflect(iter([b"\x3a\x00"])))
        for service in (b"inference.GRPCInferenceService", b"grpc.health.v1.Health"):
            assert service in listed, f"reflection {version} does not list {service}: {listed!r}"

    # Hostile requests: each its code, naming the problem.
    wrong_type = service_pb2.ModelInferRequest(model_name="digits")
    wrong_type.inputs.add(name="X", datatype="INT32", shape=[1, 64]).contents.int_contents.extend([1] * 64)
    short = typed_request(x[:1, :10].reshape(1, 10))
    short.inputs[0].shape[:] = [1, 64]
    raw_short = service_pb2.ModelInferRequest(model_name="digits")
    raw_short.inputs.add(name="X", datatype="FP32", shape=[1, 64])
    raw_short.raw_input_contents.append(b"\0" * 255)
    unknown = typed_request(x)
    unknown.model_name = "no-such-model"
    bad_version = typed_request(x, "7")
    huge = service_pb2.ModelInferRequest(model_name="digits")
    huge.inputs.add(name="X", datatype="FP32", shape=[int(max_body) // 256 + 1, 64])
    huge.raw_input_contents.append(b"\0" * ((int(max_body) // 256 + 1) * 256))
    garbage = channel.unary_unary(METHOD, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    table = [
        (grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.ModelInfer(wrong_type), "X"),
        (grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.ModelInfer(short), "fp32_contents holds 10 values"),
        (grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.ModelInfer(raw_short), "holds 255 bytes"),
        (grpc.StatusCode.NOT_FOUND, lambda: stub.ModelInfer(unknown), "no-such-model"),
        (grpc.StatusCode.NOT_FOUND, lambda: stub.ModelInfer(bad_version), "7"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, lambda: stub.ModelInfer(huge), "limit is"),
        (grpc.StatusCode.INVALID_ARGUMENT, lambda: garbage(b"\xff\xff\xff\xff"), ""),
    ]
    for code, call, contains in table:
        expect_code(code, call, contains)

    # Streaming with Triton's client: answers in request order, bit-equal to unary; a request
    # for an unknown model is answered in-stream and the stream goes on.
    answers = []
    all_in = threading.Event()

    def on_answer(result, error):  # Triton's client passes these by keyword
        answers.append((result, error))
        if len(answers) == 12:
            all_in.set()

    client.start_stream(callback=on_answer)
    for n in range(12):
        model = "no-such-model" if n == 5 else "digits"
        client.async_stream_infer(model, [tensor], request_id=f"stream-{n}")
    assert all_in.wait(60), f"only {len(answers)} of 12 streamed answers"
    client.stop_stream()
    for n, (answer, error) in enumerate(answers):
        if n == 5:
            assert answer is None and "no-such-model" in str(error), (answer, error)
            continue
        assert error is None, error
        assert answer.get_response().id == f"stream-{n}", answer.get_response().id
        assert answer.as_numpy("label").tobytes() == result.as_numpy("label").tobytes(), "streamed answer differs"
    again = client.infer("digits", [tensor])
    assert again.as_numpy("label").tolist() == expected, "the server is not healthy after hostile requests"
    print("ok")


if __name__ == "__main__":
    main(*sys.argv[1:5])
