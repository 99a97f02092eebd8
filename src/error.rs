//! The one error shape of the API, and the one route by which every error
//! reaches the client: handlers and routes give an [`Answer`], rejections
//! become one in [`recover`], and [`respond`] alone turns an error into its
//! response.
//!
//! Every error answer is
//! `{"error": {"status": 400, "code": "invalid_value", "message": "...", "key": "x1", "position": 4}}`
//! where `key` and `position` appear only when the problem is inside a value.

use std::convert::Infallible;

use serde::Serialize;
use warp::http::{header, StatusCode};
use warp::reject::Reject;
use warp::reply::Response;
use warp::Rejection;

use crate::budget::Spent;
use crate::input::InputError;
use crate::reply::{bytes_response, JSON};

/// What a handler or route answers: its response, or the error to answer.
pub type Answer = Result<Response, ApiError>;

/// Everything the API refuses, as the client should hear it.
#[derive(Debug, Clone)]
pub enum ApiError {
    Input(InputError),
    BodyTooLarge {
        limit: u64,
    },
    BadQuery(String),
    NotFound,
    MethodNotAllowed {
        allow: &'static str,
    },
    BodyRead(String),
    /// The in-flight budget stayed spent for the whole wait (see `budget`).
    Busy,
    /// The body did not arrive within the request's time (`SORTD_TIMEOUT_SECS`).
    BodyTimeout {
        seconds: u64,
    },
    /// The work was still going at the request's deadline, and was stopped.
    Timeout {
        seconds: u64,
    },
    /// The client closed its connection before the answer, and the work was
    /// stopped: nobody reads this answer, but the access log and metrics do.
    ClientGone,
    Internal,
}

/// What a `503 busy` answer tells the client to wait, in seconds.
pub const RETRY_AFTER_SECS: u64 = 1;

impl Reject for ApiError {}

impl From<InputError> for ApiError {
    fn from(error: InputError) -> Self {
        ApiError::Input(error)
    }
}

impl From<serde_json::Error> for ApiError {
    fn from(error: serde_json::Error) -> Self {
        log::error!("could not serialise an answer: {error}");
        ApiError::Internal
    }
}

impl From<Spent> for ApiError {
    fn from(_: Spent) -> Self {
        ApiError::Busy
    }
}

/// nginx's status for a request whose client closed the connection first.
const CLIENT_CLOSED_REQUEST: u16 = 499;

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    status: u16,
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    position: Option<usize>,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Input(InputError::TooManyNumbers { .. } | InputError::TooManyKeys { .. })
            | ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Input(_) | ApiError::BadQuery(_) | ApiError::BodyRead(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Busy | ApiError::Timeout { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::ClientGone => {
                StatusCode::from_u16(CLIENT_CLOSED_REQUEST).unwrap_or(StatusCode::BAD_REQUEST)
            }
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable, machine-readable name for the error.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Input(InputError::EmptyBody) => "empty_body",
            ApiError::Input(InputError::MalformedJson(_)) => "malformed_json",
            ApiError::Input(InputError::NotObjectOrArray(_)) => "wrong_body_type",
            ApiError::Input(InputError::InvalidValue { .. }) => "invalid_value",
            ApiError::Input(InputError::TooManyNumbers { .. }) => "too_many_numbers",
            ApiError::Input(InputError::TooManyKeys { .. }) => "too_many_keys",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::BadQuery(_) => "bad_query",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::BodyRead(_) => "body_read_error",
            ApiError::Busy => "busy",
            ApiError::BodyTimeout { .. } => "body_timeout",
            ApiError::Timeout { .. } => "timeout",
            ApiError::ClientGone => "client_closed_request",
            ApiError::Internal => "internal_error",
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::Input(error) => error.to_string(),
            ApiError::BodyTooLarge { limit } => {
                format!("the request body is larger than the limit of {limit} bytes")
            }
            ApiError::BadQuery(detail) => {
                format!("invalid query string ({detail}); the only parameter is order=asc|desc")
            }
            ApiError::NotFound => {
                "no such resource; POST / sorts numbers, GET / explains how".to_owned()
            }
            ApiError::MethodNotAllowed { allow } => {
                format!("method not allowed here; allowed: {allow}")
            }
            ApiError::BodyRead(detail) => format!("the request body could not be read: {detail}"),
            ApiError::Busy => {
                format!("sortd is busy with other large requests; retry in {RETRY_AFTER_SECS} s")
            }
            ApiError::BodyTimeout { seconds } => {
                format!("the request body did not arrive within {seconds} s")
            }
            ApiError::Timeout { seconds } => {
                format!("the request took longer than {seconds} s and was stopped; retry in {RETRY_AFTER_SECS} s")
            }
            ApiError::ClientGone => "the client closed the connection before the answer".to_owned(),
            ApiError::Internal => "internal error; it has been logged".to_owned(),
        }
    }

    fn into_response(self) -> Response {
        let (key, position) = match &self {
            ApiError::Input(InputError::InvalidValue { key, position, .. }) => {
                (key.as_deref(), Some(*position))
            }
            _ => (None, None),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                status: self.status().as_u16(),
                code: self.code(),
                message: self.message(),
                key,
                position,
            },
        };
        // Strings and integers only: serialising them cannot fail.
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = bytes_response(self.status(), JSON, body);
        match self {
            ApiError::MethodNotAllowed { allow } => {
                response
                    .headers_mut()
                    .insert(header::ALLOW, header::HeaderValue::from_static(allow));
            }
            ApiError::Busy | ApiError::Timeout { .. } => {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    header::HeaderValue::from(RETRY_AFTER_SECS),
                );
            }
            _ => {}
        }
        response
    }
}

/// The response to an answer: the one place an error becomes its response.
pub fn respond(answer: Answer) -> Response {
    answer.unwrap_or_else(ApiError::into_response)
}

/// Turns a rejection (no route took the request) into the error to answer.
/// Rejections nobody planned for are logged at error level and answered
/// 500, so they get noticed.
pub async fn recover(rejection: Rejection) -> Result<Answer, Infallible> {
    let error = if let Some(error) = rejection.find::<ApiError>() {
        error.clone()
    } else if rejection.is_not_found() {
        ApiError::NotFound
    } else if let Some(error) = rejection.find::<warp::reject::InvalidQuery>() {
        ApiError::BadQuery(error.to_string())
    } else {
        log::error!("unhandled rejection: {rejection:?}");
        ApiError::Internal
    };
    Ok(Err(error))
}
