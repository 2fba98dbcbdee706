//! Hostile and careless clients: numbers outside their ranges are refused with 422 and never
//! stored, and the daemon starts and serves whatever its store holds.

mod boot;
mod files;
mod surface;

use crate::support::*;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request};

/// The worst numbers a client can write, as JSON text.
pub const WORST: &[&str] = &[
    "0",
    "-1",
    "18446744073709551615",
    "2305843009213693952",
    "1e308",
    "-1e308",
    "1.5",
    "99999999999999999999999",
    "\"12\"",
];

/// A request whose JSON body is `text` as written (numbers `serde_json::Value` cannot hold).
pub fn raw(method: Method, path: &str, token: &str, text: String) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(text)))
        .unwrap()
}

/// Asserts a 422 `invalid_field` whose message names `field` and a range.
pub fn assert_out_of_range(reply: &Reply, field: &str, what: &str) {
    assert_eq!(
        reply.status,
        422,
        "{what}: {}",
        String::from_utf8_lossy(&reply.body)
    );
    let body = reply.json();
    assert_eq!(body["error"], "invalid_field", "{what}: {body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(field) && message.contains(" to "),
        "{what}: the message names the field and its range: {message}"
    );
}
