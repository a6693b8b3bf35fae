//! The one request path: decode an Open Inference Protocol v2 body (JSON or the binary
//! tensor extension) -> run it in a fresh sandbox -> encode the v2 answer.
//!
//! The HTTP server, the CLI and anything later (batch jobs, batching, gRPC) go through
//! [`run`]; transports only translate. Picking the version is the caller's (the server's
//! registry, or the CLI's single loaded model).

use std::time::{Duration, Instant};

use edgeinfer_oip::{
    Bytes, EncodedResponse, HttpBody, InferenceRequest, Tensor, check_unique, decode_request_with_binary, split_body,
};

use crate::Result;
use crate::limits::LimitOverrides;
use crate::model::InferOutcome;
use crate::model::LoadedModel;
use crate::protocol::{encode_response, requested_outputs};

/// One request as its transport hands it over.
#[derive(Debug, Clone)]
pub enum RequestBody {
    /// A v2 HTTP body: JSON, or JSON followed by binary tensor data (inputs taken from the
    /// binary part are views of this buffer, not copies). Answered with an [`HttpBody`].
    Http {
        /// The body.
        bytes: Bytes,
        /// The `Inference-Header-Content-Length` value, for bodies with binary data.
        header_length: Option<String>,
    },
    /// A request the transport decoded itself (gRPC's protobuf tensors). Answered with the
    /// [`EncodedResponse`], for the transport to encode.
    Decoded {
        /// The request's id, parameters and outputs asked for (`inputs` unused).
        request: InferenceRequest,
        /// The inputs.
        inputs: Vec<Tensor>,
    },
}

impl RequestBody {
    /// A plain JSON body.
    pub fn json(bytes: Bytes) -> Self {
        RequestBody::Http { bytes, header_length: None }
    }
}

/// A request's answer, in the form its [`RequestBody`] came in.
#[derive(Debug, Clone)]
pub enum ResponseBody {
    /// The v2 HTTP body.
    Http(HttpBody),
    /// The response for the transport to encode.
    Decoded(EncodedResponse),
}

impl ResponseBody {
    /// The answer as a v2 HTTP body.
    pub fn into_http(self) -> Result<HttpBody> {
        match self {
            ResponseBody::Http(body) => Ok(body),
            ResponseBody::Decoded(encoded) => Ok(encoded.into_http_body()?),
        }
    }
}

/// Where the time of one request went.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimes {
    /// Decoding the body into tensors.
    pub decode: Duration,
    /// Creating the instance and running the model.
    pub infer: Duration,
    /// Of `infer`, creating the instance.
    pub instantiate: Duration,
    /// Encoding the answer.
    pub encode: Duration,
}

impl StageTimes {
    /// Decode, infer and encode together: the request's time in the pipeline.
    pub fn total(&self) -> Duration {
        self.decode + self.infer + self.encode
    }
}

/// What a successful request produced.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The encoded v2 response.
    pub body: ResponseBody,
    /// Fuel the inference consumed.
    pub fuel_used: u64,
    /// Stage timings.
    pub times: StageTimes,
    /// The request's inputs and the outputs computed, kept when [`Options::keep_tensors`] is
    /// set (shadow comparison, prediction logs).
    pub tensors: Option<KeptTensors>,
    /// The request id: the client's, or the one assigned ([`Options::assign_id`]).
    pub id: Option<String>,
    /// Rows the request carried (Triton's inference count).
    pub rows: u64,
}

/// Inputs and outputs of one request, for those that compare or record them.
#[derive(Debug, Clone)]
pub struct KeptTensors {
    /// The decoded inputs.
    pub inputs: Vec<Tensor>,
    /// The outputs the request asked for (empty: all).
    pub requested: Vec<String>,
    /// The outputs computed.
    pub outputs: Vec<Tensor>,
}

/// How one request runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Limits over the model's manifest limits.
    pub limits: LimitOverrides,
    /// Keep the inputs and outputs in the answer.
    pub keep_tensors: bool,
    /// Give a request without an `id` a fresh one (returned in the response's `id`).
    pub assign_id: bool,
}

/// A request that failed, with the stage timings up to the failure.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong.
    pub error: Box<crate::Error>,
    /// Stage timings up to the failure.
    pub times: StageTimes,
}

/// Decodes `body`, runs it on `model` in a fresh sandbox, encodes the answer.
pub fn run(model: &LoadedModel, body: RequestBody, options: Options) -> std::result::Result<Answer, Failure> {
    let (inputs, pending) = decode(body, options)?;
    let started = Instant::now();
    let outcome = model.infer(inputs, &pending.requested, options.limits);
    answer(model, pending, outcome, started.elapsed())
}

/// A decoded request waiting for its outputs: what [`answer`] needs besides them.
#[derive(Debug)]
pub struct Pending {
    /// The request (its id, requested outputs and their parameters).
    pub request: InferenceRequest,
    /// The outputs asked for (empty: all).
    pub requested: Vec<String>,
    /// Whether the answer keeps the tensors ([`Options::keep_tensors`]): the inputs handed
    /// back by the model call and the outputs, moved, not copied.
    keep_tensors: bool,
    /// Rows of the request: the first dimension of its first input (1 for a scalar).
    pub rows: u64,
    /// Whether the answer is an HTTP body (the request was one).
    http: bool,
    times: StageTimes,
}

/// First stage: decodes the body (JSON or binary extension; a decoded request is checked for
/// repeated names) and assigns an id when asked. Returns the inputs for the model and the
/// rest of the request.
pub fn decode(body: RequestBody, options: Options) -> std::result::Result<(Vec<Tensor>, Pending), Failure> {
    let started = Instant::now();
    let http = matches!(body, RequestBody::Http { .. });
    let decoded = match body {
        RequestBody::Http { bytes, header_length } => split_body(&bytes, header_length.as_deref())
            .and_then(|(json, binary)| decode_request_with_binary(&json, &binary)),
        RequestBody::Decoded { request, inputs } => check_unique(&inputs).map(|()| (request, inputs)),
    }
    .map_err(crate::Error::from);
    let times = StageTimes { decode: started.elapsed(), ..StageTimes::default() };
    let (mut request, inputs) = decoded.map_err(|error| Failure { error: Box::new(error), times })?;
    if options.assign_id && request.id.is_none() {
        request.id = Some(new_request_id());
    }
    let requested = requested_outputs(&request);
    let rows = rows_of(&inputs);
    Ok((inputs, Pending { request, requested, keep_tensors: options.keep_tensors, rows, http, times }))
}

/// Rows of a request: the first dimension of its first input (1 for a scalar).
pub fn rows_of(inputs: &[Tensor]) -> u64 {
    inputs.first().and_then(|t| t.shape.first().copied()).unwrap_or(1)
}

/// Last stage: the outcome of the model call that took `infer` (alone or in a batch)
/// encoded as the request's v2 answer.
pub fn answer(
    model: &LoadedModel,
    pending: Pending,
    outcome: Result<InferOutcome>,
    infer: Duration,
) -> std::result::Result<Answer, Failure> {
    let Pending { request, requested, keep_tensors, rows, http, mut times } = pending;
    times.infer = infer;
    let outcome = outcome.map_err(|error| Failure { error: Box::new(error), times })?;
    times.instantiate = outcome.instantiate_time;
    let fuel_used = outcome.fuel_used;
    let started = Instant::now();
    let encoded = encode_response(model, &request, &outcome).and_then(|encoded| {
        Ok(if http { ResponseBody::Http(encoded.into_http_body()?) } else { ResponseBody::Decoded(encoded) })
    });
    times.encode = started.elapsed();
    let body = encoded.map_err(|error| Failure { error: Box::new(error), times })?;
    let kept = keep_tensors.then_some(KeptTensors { inputs: outcome.inputs, requested, outputs: outcome.outputs });
    Ok(Answer { body, fuel_used, times, tensors: kept, id: request.id, rows })
}

/// A fresh request id: 128 random bits as a UUID (version 4 layout).
pub fn new_request_id() -> String {
    let bits = fastrand::u128(..);
    let bits = (bits & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_uuid_shaped_and_distinct() {
        let (a, b) = (new_request_id(), new_request_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }
}
