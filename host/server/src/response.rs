//! Turning results into HTTP responses: one place maps errors to statuses.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use hyper::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};
use serde_json::Value;

use super::admission::Refusal;
use super::registry::ChangeError;
use super::security::{Denial, Throttle};
use crate::Error;

/// The response body of every handler: buffers sent one after another (an inference answer
/// is its JSON followed by each binary output's own buffer, none copied into one), with an
/// exact length, so it goes out with a `Content-Length`.
#[derive(Debug, Default)]
pub struct Body {
    chunks: VecDeque<Bytes>,
    remaining: u64,
}

impl Body {
    /// A body of one buffer.
    pub fn new(bytes: impl Into<Bytes>) -> Body {
        Body::from_chunks([bytes.into()])
    }

    /// A body of these buffers, in order.
    pub fn from_chunks(chunks: impl IntoIterator<Item = Bytes>) -> Body {
        let chunks: VecDeque<Bytes> = chunks.into_iter().filter(|chunk| !chunk.is_empty()).collect();
        let remaining = chunks.iter().map(|chunk| chunk.len() as u64).sum();
        Body { chunks, remaining }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let chunk = self.chunks.pop_front();
        if let Some(chunk) = &chunk {
            self.remaining -= chunk.len() as u64;
        }
        Poll::Ready(chunk.map(|chunk| Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// An error that knows its HTTP status; rendered as `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    /// The status to answer with.
    pub status: StatusCode,
    /// The message.
    pub message: String,
    /// Seconds for `Retry-After` (429/503).
    pub retry_after: Option<u64>,
    /// Send `WWW-Authenticate: Bearer` (401).
    pub challenge: bool,
    /// What failed, where the status alone does not say (gRPC maps it to its own codes).
    #[cfg_attr(not(feature = "grpc"), allow(dead_code))]
    pub cause: Cause,
}

/// What made a request fail, beyond its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cause {
    /// The status says it all.
    #[default]
    Status,
    /// The request ran past its deadline.
    Deadline,
    /// The request used up its fuel, memory or output budget.
    Exhausted,
    /// The model trapped or failed inside the sandbox.
    Trap,
}

impl ApiError {
    /// An error with a status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), retry_after: None, challenge: false, cause: Cause::Status }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// The response.
    pub fn into_response(self) -> Response<Body> {
        let mut response = json_response(self.status, &edgeinfer_oip::error_body(&self.message));
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.challenge {
            response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl ApiError {
    /// The status a failed request answers with.
    pub fn status_of(error: &Error) -> StatusCode {
        match error {
            Error::InvalidInput { .. } | Error::Protocol(_) | Error::Config(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Manifest { .. }
            | Error::IntegrityMismatch { .. }
            | Error::CapabilityRefused(_)
            | Error::SmokeTest { .. }
            | Error::Signature { .. }
            | Error::Refused { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        let cause = match &error {
            Error::DeadlineExceeded { .. } => Cause::Deadline,
            Error::FuelExhausted { .. } | Error::MemoryLimit { .. } | Error::OutputLimit(_) => Cause::Exhausted,
            Error::GuestTrap(_) | Error::Model(_) => Cause::Trap,
            _ => Cause::Status,
        };
        ApiError { cause, ..ApiError::new(ApiError::status_of(&error), error.to_string()) }
    }
}

impl From<super::jobs::JobError> for ApiError {
    fn from(error: super::jobs::JobError) -> Self {
        use super::jobs::JobError;
        match error {
            JobError::Invalid(message) => ApiError::bad_request(message),
            JobError::NotFound(_) | JobError::Off => ApiError::not_found(error.to_string()),
            JobError::NotBuilt => ApiError::new(StatusCode::NOT_IMPLEMENTED, error.to_string()),
        }
    }
}

impl From<ChangeError> for ApiError {
    fn from(error: ChangeError) -> Self {
        match error {
            ChangeError::Invalid(message) => ApiError::bad_request(message),
            ChangeError::Conflict(message) => ApiError::new(StatusCode::CONFLICT, message),
            ChangeError::Failed(error) => error.into(),
        }
    }
}

impl From<Denial> for ApiError {
    fn from(denial: Denial) -> Self {
        match denial {
            Denial::Unauthenticated(failure) => {
                ApiError { challenge: true, ..ApiError::new(StatusCode::UNAUTHORIZED, failure.to_string()) }
            }
            Denial::Forbidden { token, needed } => {
                ApiError::new(StatusCode::FORBIDDEN, format!("token '{token}' lacks the scope this needs: {needed}"))
            }
            Denial::LockedOut(left) => ApiError {
                retry_after: Some(left.as_secs().max(1)),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "locked out: too many failed authentications from this address; try again later",
                )
            },
        }
    }
}

impl From<Throttle> for ApiError {
    fn from(throttle: Throttle) -> Self {
        ApiError {
            retry_after: Some(throttle.retry_after()),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, throttle.to_string())
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        let mut error = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, refusal.to_string());
        if refusal != Refusal::ShuttingDown {
            error.retry_after = Some(1);
        }
        error
    }
}

impl From<edgeinfer_oip::ProtocolError> for ApiError {
    fn from(error: edgeinfer_oip::ProtocolError) -> Self {
        ApiError::bad_request(error.to_string())
    }
}

/// A view as a JSON value.
pub fn to_json(view: &impl serde::Serialize) -> Value {
    serde_json::to_value(view).unwrap_or_default()
}

/// A JSON response.
pub fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(Body::new(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
