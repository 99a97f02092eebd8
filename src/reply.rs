//! Building responses: every answer of the API has a known length, built
//! here, so the access log and metrics can read its size.

use serde::Serialize;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;

pub const JSON: &str = "application/json";

/// A response with `body` as it is and the given content type.
pub fn bytes_response(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response {
    let length = body.len();
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    response
}

/// `value` as a JSON response. Serialising our own types cannot fail; if it
/// ever did, the error becomes an internal error's answer (see `error`).
pub fn json_response(status: StatusCode, value: &impl Serialize) -> serde_json::Result<Response> {
    Ok(bytes_response(status, JSON, serde_json::to_vec(value)?))
}

/// The byte length a response declares, for the access log.
pub fn content_length(response: &Response) -> u64 {
    response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
