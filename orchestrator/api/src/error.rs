//! Why a request failed, in a form scripts can act on.

use serde::{Deserialize, Serialize};

/// Why a request failed; `code` tells a script what kind of failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// `file:line:column: message` lines for config errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Forbidden,
    NotFound,
    /// The request conflicts with the current state (e.g. a group others need).
    Conflict,
    InvalidConfig,
    /// A dependency of the daemon (Docker, NVML) cannot do it right now.
    Unavailable,
    /// The request names another host that cannot be reached (unknown,
    /// down, or no federation).
    HostUnreachable,
    /// The request or the daemon speaks another version of this API.
    Version,
    Internal,
}

impl ErrorCode {
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::InvalidConfig => 400,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::Unavailable => 503,
            ErrorCode::HostUnreachable => 502,
            ErrorCode::Version => 400,
            ErrorCode::Internal => 500,
        }
    }
}
