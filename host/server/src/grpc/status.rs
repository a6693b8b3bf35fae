//! The server's errors as gRPC statuses: one mapping from what REST answers.

use tonic::{Code, Status};

use super::super::response::{ApiError, Cause};

/// `error` as the gRPC status a Triton or KServe client expects: INVALID_ARGUMENT naming the
/// input, NOT_FOUND, UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED with a retry hint
/// for a full queue or quota, UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL only for a guest trap.
pub fn status_of(error: ApiError) -> Status {
    let code = match (error.cause, error.status.as_u16()) {
        (Cause::Deadline, _) => Code::DeadlineExceeded,
        (Cause::Exhausted, _) => Code::ResourceExhausted,
        (Cause::Trap, _) => Code::Internal,
        (_, 400) => Code::InvalidArgument,
        (_, 401) => Code::Unauthenticated,
        (_, 403) => Code::PermissionDenied,
        (_, 404) => Code::NotFound,
        (_, 408 | 504) => Code::DeadlineExceeded,
        (_, 409) => Code::FailedPrecondition,
        (_, 413 | 429) => Code::ResourceExhausted,
        (_, 503) if error.retry_after.is_some() => Code::ResourceExhausted,
        (_, 503) => Code::Unavailable,
        _ => Code::Unknown,
    };
    let mut status = Status::new(code, error.message);
    if let Some(seconds) = error.retry_after {
        let metadata = status.metadata_mut();
        metadata.insert("retry-after", seconds.into());
        metadata.insert("grpc-retry-pushback-ms", (seconds * 1000).into());
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::StatusCode;

    #[test]
    fn rest_statuses_map_to_grpc_codes() {
        let code = |status: StatusCode, cause: Cause, retry: Option<u64>| {
            status_of(ApiError { cause, retry_after: retry, ..ApiError::new(status, "m") }).code()
        };
        assert_eq!(code(StatusCode::BAD_REQUEST, Cause::Status, None), Code::InvalidArgument);
        assert_eq!(code(StatusCode::NOT_FOUND, Cause::Status, None), Code::NotFound);
        assert_eq!(code(StatusCode::UNAUTHORIZED, Cause::Status, None), Code::Unauthenticated);
        assert_eq!(code(StatusCode::FORBIDDEN, Cause::Status, None), Code::PermissionDenied);
        assert_eq!(code(StatusCode::SERVICE_UNAVAILABLE, Cause::Status, Some(1)), Code::ResourceExhausted);
        assert_eq!(code(StatusCode::SERVICE_UNAVAILABLE, Cause::Status, None), Code::Unavailable);
        assert_eq!(code(StatusCode::INTERNAL_SERVER_ERROR, Cause::Deadline, None), Code::DeadlineExceeded);
        assert_eq!(code(StatusCode::INTERNAL_SERVER_ERROR, Cause::Trap, None), Code::Internal);
        assert_eq!(code(StatusCode::INTERNAL_SERVER_ERROR, Cause::Exhausted, None), Code::ResourceExhausted);
        let throttled =
            status_of(ApiError { retry_after: Some(2), ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "slow") });
        assert_eq!(throttled.metadata().get("retry-after").and_then(|v| v.to_str().ok()), Some("2"));
    }
}
