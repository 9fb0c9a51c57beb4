//! The fault-injection API:
//!
//! - `POST /api/v1/faults` (JSON fault) → 201 with the fault and its `id`;
//! - `GET /api/v1/faults` → `{"items": [...]}`, active and past faults with what they did;
//! - `GET /api/v1/faults/{id}`, `DELETE /api/v1/faults/{id}` (ends it early).
//!
//! Checked in this order: the API is disabled in config → 404 (`faults_disabled`); no or a
//! wrong `Authorization: Bearer <token>` → 401 (every method, reads too: what faults run
//! tells an attacker what is weak); a body over `http.max_body_bytes` → 413; a bad body
//! → 400 naming the field. Nothing changes unless the request is accepted.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::FaultSpec;
use crate::http::api::{ApiError, PathParam};
use crate::http::AppState;

/// Constant-time comparison (the token's length is not secret).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 404 if the API is disabled, 401 unless the request carries the token.
fn authorize(s: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &s.faults_token else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "faults_disabled",
            "the fault API is disabled in config: set [faults] enabled = true with a token (or token_file)",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    match given {
        Some(t) if same(t.as_bytes(), token.0.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "wrong bearer token")),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the fault API needs an `Authorization: Bearer <token>` header ([faults] token)",
        )),
    }
}

fn parse_id(id: &str) -> Result<u64, ApiError> {
    id.parse().map_err(|_| ApiError::bad_param("id", format!("fault ids are positive integers, got \"{id}\"")))
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the request body is larger than http.max_body_bytes = {limit} bytes"),
    )
}

/// `GET /api/v1/faults`
pub async fn list(State(s): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers)?;
    Ok(Json(s.faults.list_json()))
}

/// `GET /api/v1/faults/{id}`
pub async fn get_one(
    State(s): State<AppState>,
    headers: HeaderMap,
    PathParam(id): PathParam,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers)?;
    let id = parse_id(&id)?;
    s.faults.get(id).map(|f| Json(json!(f))).ok_or_else(|| ApiError::not_found(format!("no fault {id}")))
}

/// `DELETE /api/v1/faults/{id}`: end it now (a fault already ended is returned as is).
pub async fn delete(
    State(s): State<AppState>,
    headers: HeaderMap,
    PathParam(id): PathParam,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers)?;
    let id = parse_id(&id)?;
    s.faults.delete(id).map(|f| Json(json!(f))).ok_or_else(|| ApiError::not_found(format!("no fault {id}")))
}

/// `POST /api/v1/faults`
pub async fn create(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    authorize(&s, &headers)?;
    let limit = s.max_body_bytes;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| too_large(limit))?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_param("body", format!("the body is not valid JSON: {e}")))?;
    let spec = FaultSpec::from_json(&value).map_err(|e| ApiError::bad_param(&e.field, e.message))?;
    let view = s.faults.inject(spec).map_err(|e| ApiError::bad_param(&e.field, e.message))?;
    let location = format!("/api/v1/faults/{}", view.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(json!(view))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
