//! Request plumbing shared by every handler: bodies read within the size, time and memory
//! budgets, method checks, version parsing, and blocking work off the reactor.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_LENGTH;
use hyper::{Method, Request, StatusCode};

use edgeinfer_oip::{InferenceRequest, Tensor};
use edgeinfer_runtime::pipeline::RequestBody;

use super::App;
use super::admission::BodyReservation;
use super::response::ApiError;

/// A request body in memory and its share of the body budget, held until dropped.
pub struct ReceivedBody {
    /// The bytes.
    pub bytes: Bytes,
    reservation: BodyReservation,
}

impl ReceivedBody {
    /// The body as an inference request (`header_length`: its binary extension header).
    pub fn into_inference(self, header_length: Option<String>) -> InferenceBody {
        InferenceBody { body: RequestBody::Http { bytes: self.bytes, header_length }, _reservation: self.reservation }
    }
}

/// An inference request in memory, as its transport handed it over, and its share of the
/// body budget, held until the request is settled.
pub struct InferenceBody {
    /// The request.
    pub body: RequestBody,
    _reservation: BodyReservation,
}

impl InferenceBody {
    /// A request the transport decoded (gRPC), its tensors' size reserved from the budget
    /// (503 when the budget is used up).
    #[cfg_attr(not(feature = "grpc"), allow(dead_code))]
    pub fn decoded(app: &App, request: InferenceRequest, inputs: Vec<Tensor>) -> Result<InferenceBody, ApiError> {
        let size = inputs.iter().map(|input| input.data.len()).sum();
        let reservation = app.admission.reserve_body(size)?;
        Ok(InferenceBody { body: RequestBody::Decoded { request, inputs }, _reservation: reservation })
    }

    /// Splits off the budget share, to hold while the request runs.
    pub fn into_parts(self) -> (RequestBody, BodyReservation) {
        (self.body, self._reservation)
    }
}

/// Reads the whole body within the size and time limits (413 / 408), after reserving its
/// size from the server's body budget (503 when the budget is used up).
pub async fn read_body(app: &App, request: Request<Incoming>) -> Result<ReceivedBody, ApiError> {
    let max = app.config.max_body_bytes;
    let too_large = || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, edgeinfer_oip::body_too_large_message(max));
    let declared =
        request.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let deadline = Duration::from_millis(app.config.request_read_timeout_ms);
    let body = request.into_body();
    if declared.is_some_and(|len| len > max as u64) {
        drain(body, deadline).await;
        return Err(too_large());
    }
    let reserve = declared.map_or(max, |len| len as usize);
    let reservation = app.admission.reserve_body(reserve)?;
    match tokio::time::timeout(deadline, Limited::new(body, max).collect()).await {
        Err(_) => Err(ApiError::new(StatusCode::REQUEST_TIMEOUT, "the request body did not arrive in time")),
        Ok(Ok(collected)) => Ok(ReceivedBody { bytes: collected.to_bytes(), reservation }),
        Ok(Err(error)) if error.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(error)) => Err(ApiError::bad_request(format!("cannot read the request body: {error}"))),
    }
}

/// Reads and discards an oversized body (bounded), so the client can read our 413.
async fn drain(mut body: Incoming, deadline: Duration) {
    let mut left: u64 = 256 << 20;
    let _ = tokio::time::timeout(deadline, async {
        while let Some(Ok(frame)) = body.frame().await {
            let len = frame.data_ref().map_or(0, |d| d.len() as u64);
            left = left.saturating_sub(len);
            if left == 0 {
                break;
            }
        }
    })
    .await;
}

/// Runs blocking work (compiles, inferences) off the async reactor. The work runs to its end
/// even when the caller's future is dropped; whatever it must hold, it owns.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("worker failed: {e}")))?
}

/// 405 unless `method` is `expected`.
pub fn allow(method: &Method, expected: Method) -> Result<(), ApiError> {
    if *method == expected {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            edgeinfer_oip::wrong_method_message(expected.as_str(), method.as_str()),
        ))
    }
}

/// A version number from a path segment (400 when it is not one).
pub fn parse_version(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| ApiError::bad_request(format!("version '{text}' is not a number")))
}
