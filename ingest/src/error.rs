//! Why a request was refused, and the one table that maps it to HTTP and gRPC.

use std::time::Duration;

/// Why a whole request was refused. [`IngestError::http_status`] and
/// [`IngestError::grpc_code`] are the one mapping table both transports use.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IngestError {
    /// Malformed or invalid data: never retried.
    #[error("{0}")]
    Invalid(String),
    /// Over a size limit: never retried.
    #[error("{0}")]
    TooLarge(String),
    /// Wrong `Content-Type` or `Content-Encoding` (HTTP only).
    #[error("{0}")]
    UnsupportedMedia(String),
    /// The body did not arrive within `request_timeout` (HTTP only; gRPC calls end with
    /// CANCELLED from tonic's own timeout).
    #[error("{0}")]
    TimedOut(String),
    /// The receiver asks the sender to slow down (a full agent buffer): HTTP 429 and
    /// gRPC RESOURCE_EXHAUSTED, both with a retry hint, so OTLP clients retry.
    #[error("{message}")]
    Throttled {
        /// What is full.
        message: String,
        /// When to retry.
        retry_after: Duration,
    },
    /// The collector cannot take more now; retry after the hint.
    #[error("{message}")]
    Overloaded {
        /// What is full.
        message: String,
        /// When to retry.
        retry_after: Duration,
    },
    /// The collector cannot store data now (disk error, shutting down); retry later.
    #[error("{message}")]
    Unavailable {
        /// What failed.
        message: String,
        /// When to retry.
        retry_after: Duration,
    },
}

impl IngestError {
    /// HTTP status of this error.
    pub fn http_status(&self) -> ::http::StatusCode {
        use ::http::StatusCode as S;
        match self {
            IngestError::Invalid(_) => S::BAD_REQUEST,
            IngestError::TooLarge(_) => S::PAYLOAD_TOO_LARGE,
            IngestError::UnsupportedMedia(_) => S::UNSUPPORTED_MEDIA_TYPE,
            IngestError::TimedOut(_) => S::REQUEST_TIMEOUT,
            IngestError::Throttled { .. } => S::TOO_MANY_REQUESTS,
            IngestError::Overloaded { .. } | IngestError::Unavailable { .. } => {
                S::SERVICE_UNAVAILABLE
            }
        }
    }

    /// gRPC code of this error. Oversize is RESOURCE_EXHAUSTED *without* RetryInfo, which
    /// OTLP clients treat as permanent; overload is UNAVAILABLE with RetryInfo.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            IngestError::Invalid(_) | IngestError::UnsupportedMedia(_) => {
                tonic::Code::InvalidArgument
            }
            IngestError::TooLarge(_) | IngestError::Throttled { .. } => {
                tonic::Code::ResourceExhausted
            }
            IngestError::Overloaded { .. } | IngestError::Unavailable { .. } => {
                tonic::Code::Unavailable
            }
            IngestError::TimedOut(_) => tonic::Code::DeadlineExceeded,
        }
    }

    /// The retry hint, for the retryable errors.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            IngestError::Overloaded { retry_after, .. }
            | IngestError::Throttled { retry_after, .. }
            | IngestError::Unavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// Every [`IngestError::reason`], for metrics that show each at 0 from the start.
    pub const REASONS: [&'static str; 7] = [
        "invalid",
        "too_large",
        "unsupported_media",
        "timed_out",
        "overloaded",
        "throttled",
        "unavailable",
    ];

    /// Label used for the refused-items counter and the request outcome.
    pub fn reason(&self) -> &'static str {
        match self {
            IngestError::Invalid(_) => "invalid",
            IngestError::TooLarge(_) => "too_large",
            IngestError::UnsupportedMedia(_) => "unsupported_media",
            IngestError::TimedOut(_) => "timed_out",
            IngestError::Overloaded { .. } => "overloaded",
            IngestError::Throttled { .. } => "throttled",
            IngestError::Unavailable { .. } => "unavailable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_listed() {
        let all = [
            IngestError::Invalid(String::new()),
            IngestError::TooLarge(String::new()),
            IngestError::UnsupportedMedia(String::new()),
            IngestError::TimedOut(String::new()),
            IngestError::Overloaded {
                message: String::new(),
                retry_after: Duration::ZERO,
            },
            IngestError::Throttled {
                message: String::new(),
                retry_after: Duration::ZERO,
            },
            IngestError::Unavailable {
                message: String::new(),
                retry_after: Duration::ZERO,
            },
        ];
        let reasons: Vec<_> = all.iter().map(IngestError::reason).collect();
        assert_eq!(reasons, IngestError::REASONS);
    }

    #[test]
    fn oversize_is_permanent_not_retryable() {
        let e = IngestError::TooLarge("x".into());
        assert_eq!(e.grpc_code(), tonic::Code::ResourceExhausted);
        assert_eq!(e.retry_after(), None);
        use tonic_types::StatusExt;
        assert!(crate::grpc::to_status(&e)
            .get_details_retry_info()
            .is_none());
    }
}
