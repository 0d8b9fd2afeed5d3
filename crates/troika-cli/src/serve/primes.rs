//! `GET /is_prime/<numbers>` and `POST /is_prime`: the Flask app's prime service.
//!
//! Input is checked whole before any work reaches the pool: the count against
//! the limit first, then every token with [`parse_number`], so a bad request
//! costs the pool nothing. The numbers then go to the pool in a few chunks;
//! the handler awaits them up to the request deadline, and a request that is
//! answered early (deadline, client gone) cancels what it left queued and
//! tells its running chunks to stop.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use http_body_util::BodyExt;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use troika::Handle;
use troika_workloads::primes::{Algorithm, NumberError, Verdict, parse_number};

use super::App;
use super::error::{ApiError, json_headers};
use super::pool::{Refused, chunk_len, describe_failure};

/// `?format=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// `{"<n>": bool}`, one key per distinct number (the Flask app's dict).
    Object,
    /// `[{"n": …, "prime": …}]` in input order, repeats kept.
    List,
}

/// The query string of both routes.
#[derive(Clone, Copy, Debug)]
struct Options {
    algorithm: Algorithm,
    format: Format,
}

fn options(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Options, ApiError> {
    let Query(pairs) =
        query.map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))?;
    let mut options = Options {
        algorithm: Algorithm::MillerRabin,
        format: Format::Object,
    };
    for (key, value) in pairs {
        match key.as_str() {
            "algorithm" => {
                options.algorithm = match value.as_str() {
                    "trial" => Algorithm::Trial,
                    "miller-rabin" => Algorithm::MillerRabin,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "unknown algorithm '{}' (expected trial or miller-rabin)",
                            shorten(other)
                        )));
                    }
                }
            }
            "format" => {
                options.format = match value.as_str() {
                    "object" => Format::Object,
                    "list" => Format::List,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "unknown format '{}' (expected object or list)",
                            shorten(other)
                        )));
                    }
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter '{}' (expected algorithm or format)",
                    shorten(other)
                )));
            }
        }
    }
    Ok(options)
}

/// A token as shown in an error message: at most 64 characters.
fn shorten(token: &str) -> String {
    let mut shown: String = token.chars().take(64).collect();
    if shown.len() < token.len() {
        shown.push('…');
    }
    shown
}

/// The error for item `position` (1-based).
fn item_error(position: usize, error: &NumberError) -> ApiError {
    match error {
        NumberError::Empty => ApiError::bad_request(format!(
            "empty item at position {position}: expected a number"
        )),
        other => ApiError::bad_request(format!("item {position}: {other}")),
    }
}

/// `GET /is_prime/<numbers>`.
pub(crate) async fn get_is_prime(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let deadline = Instant::now() + app.deadline;
    let Path(list) = path.map_err(|e| ApiError::bad_request(format!("bad path: {e}")))?;
    let options = options(query)?;
    if list.is_empty() {
        return Err(empty_list());
    }
    let count = list.split(',').count();
    let max = app.limits.max_get_numbers;
    if count > max {
        return Err(ApiError::bad_request(format!(
            "too many numbers: {count} (at most {max} per GET; POST /is_prime takes up to {})",
            app.limits.max_post_numbers
        )));
    }
    let numbers = list
        .split(',')
        .enumerate()
        .map(|(i, token)| parse_number(token).map_err(|e| item_error(i + 1, &e)))
        .collect::<Result<Vec<u64>, ApiError>>()?;
    answer(&app, numbers, options, deadline).await
}

/// `GET /is_prime` and `GET /is_prime/`: no numbers at all.
pub(crate) async fn get_empty() -> ApiError {
    empty_list()
}

fn empty_list() -> ApiError {
    ApiError::bad_request("empty list: expected comma-separated numbers, as in /is_prime/2,3,4")
}

/// `POST /is_prime` with a JSON array of numbers (JSON numbers, or strings of
/// digits for clients whose numbers lose precision past 2^53), sent as
/// `application/json` (415 otherwise).
///
/// The body is limited twice: to [`App::max_body_bytes`] (413, at once when
/// `Content-Length` declares more), and with every other body in flight to
/// `[limits] body_budget_bytes` (503 when it does not fit), room that is
/// reserved before the body is read.
pub(crate) async fn post_is_prime(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let deadline = Instant::now() + app.deadline;
    require_json(&headers)?;
    let options = options(query)?;
    let limit = app.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = declared
        && length > limit as u64
    {
        return Err(too_large(limit));
    }
    let (bytes, room) = match tokio::time::timeout_at(
        deadline,
        read_body(&app, body, declared.map(|n| n as usize), limit),
    )
    .await
    {
        // The client did not send its body in time: its fault, not a
        // backend's (408, not 504).
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within the request deadline of {} s",
                    app.deadline.as_secs_f64()
                ),
            ));
        }
        Ok(outcome) => outcome?,
    };
    let items: Vec<&serde_json::value::RawValue> = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!("the body must be a JSON array of numbers: {e}"))
    })?;
    if items.is_empty() {
        return Err(ApiError::bad_request(
            "empty list: expected a JSON array of numbers, as in [2, 3, 4]",
        ));
    }
    let max = app.limits.max_post_numbers;
    if items.len() > max {
        return Err(ApiError::bad_request(format!(
            "too many numbers: {} (at most {max} per POST)",
            items.len()
        )));
    }
    let numbers = items
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            let text = raw.get();
            let parsed = if text.starts_with('"') {
                let s: String = serde_json::from_str(text).map_err(|_| {
                    ApiError::bad_request(format!("item {}: bad string {}", i + 1, shorten(text)))
                })?;
                parse_number(&s)
            } else {
                parse_number(text)
            };
            parsed.map_err(|e| item_error(i + 1, &e))
        })
        .collect::<Result<Vec<u64>, ApiError>>()?;
    // The body is parsed: its room in the budget is free again.
    drop(items);
    drop(bytes);
    drop(room);
    answer(&app, numbers, options, deadline).await
}

/// 415 unless the content type is `application/json` (parameters such as
/// `charset` are fine).
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let value = headers.get(header::CONTENT_TYPE).map(|v| v.to_str());
    let essence = match value {
        Some(Ok(v)) => v.split(';').next().unwrap_or_default().trim(),
        Some(Err(_)) => "(not text)",
        None => "",
    };
    if essence.eq_ignore_ascii_case("application/json") {
        return Ok(());
    }
    let got = if essence.is_empty() {
        "no Content-Type".to_owned()
    } else {
        format!("Content-Type '{}'", shorten(essence))
    };
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!("POST /is_prime takes a JSON array sent as application/json; got {got}"),
    ))
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is larger than {limit} bytes"),
    )
}

/// Room for `bytes` of body in the budget shared by all requests, or 503.
fn reserve(app: &App, bytes: usize) -> Result<OwnedSemaphorePermit, ApiError> {
    let count = u32::try_from(bytes).unwrap_or(u32::MAX);
    Arc::clone(&app.body_budget)
        .try_acquire_many_owned(count)
        .map_err(|_| {
            app.metrics.shed.fetch_add(1, Ordering::Relaxed);
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "too many request bodies in memory (a budget of {} bytes); retry later",
                    app.limits.body_budget_bytes
                ),
            )
        })
}

/// Read a body of at most `limit` bytes, reserving room for it in the
/// budget first: all of it when its length is declared, else chunk by chunk.
async fn read_body(
    app: &App,
    mut body: Body,
    declared: Option<usize>,
    limit: usize,
) -> Result<(Bytes, OwnedSemaphorePermit), ApiError> {
    let mut room = reserve(app, declared.unwrap_or(0))?;
    let mut bytes = BytesMut::with_capacity(declared.unwrap_or(0));
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::bad_request(format!("could not read the body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if bytes.len() + data.len() > limit {
            return Err(too_large(limit));
        }
        let unreserved = (bytes.len() + data.len()).saturating_sub(room.num_permits());
        if unreserved > 0 {
            room.merge(reserve(app, unreserved)?);
        }
        bytes.extend_from_slice(&data);
    }
    Ok((bytes.freeze(), room))
}

/// The handles of a request's chunks. Dropping it — the request answered
/// early, timed out, or its client gone — stops the work: queued chunks are
/// cancelled and running ones see the stop flag.
struct InFlight {
    handles: Vec<Handle<Vec<Verdict>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for handle in &self.handles {
            if !handle.is_done() {
                handle.cancel();
            }
        }
    }
}

fn deadline_passed(app: &App) -> ApiError {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        format!(
            "the request deadline of {} s passed",
            app.deadline.as_secs_f64()
        ),
    )
}

/// Check `numbers` on the pool and write the answer.
async fn answer(
    app: &App,
    numbers: Vec<u64>,
    options: Options,
    deadline: Instant,
) -> Result<Response, ApiError> {
    // Each distinct number is checked once per request (never cached across requests).
    let mut index: HashMap<u64, usize> = HashMap::with_capacity(numbers.len());
    let mut distinct = Vec::with_capacity(numbers.len());
    for &n in &numbers {
        index.entry(n).or_insert_with(|| {
            distinct.push(n);
            distinct.len() - 1
        });
    }
    let verdicts = check(app, &distinct, options.algorithm, deadline).await?;
    let mut body = String::with_capacity(numbers.len() * 32);
    match options.format {
        Format::Object => {
            body.push('{');
            for (i, v) in verdicts.iter().enumerate() {
                if i > 0 {
                    body.push(',');
                }
                let _ = write!(body, "\"{}\":{}", v.n, v.prime);
            }
            body.push('}');
        }
        Format::List => {
            body.push('[');
            for (i, n) in numbers.iter().enumerate() {
                if i > 0 {
                    body.push(',');
                }
                let prime = index.get(n).and_then(|&k| verdicts.get(k)).map(|v| v.prime);
                let _ = write!(body, "{{\"n\":{n},\"prime\":{}}}", prime.unwrap_or(false));
            }
            body.push(']');
        }
    }
    Ok((StatusCode::OK, json_headers(), body).into_response())
}

/// Run the checks: a few chunks on the pool, awaited until `deadline`.
async fn check(
    app: &App,
    numbers: &[u64],
    algorithm: Algorithm,
    deadline: Instant,
) -> Result<Vec<Verdict>, ApiError> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut in_flight = InFlight {
        handles: Vec::new(),
        stop: Arc::clone(&stop),
    };
    let size = chunk_len(numbers.len(), app.backend.stats().workers, algorithm);
    for chunk in numbers.chunks(size) {
        match app.backend.try_check(
            chunk.to_vec(),
            algorithm,
            Arc::clone(&stop),
            Arc::clone(&app.crash_on),
        ) {
            Ok(handle) => in_flight.handles.push(handle),
            Err(refused) => {
                app.metrics.shed.fetch_add(1, Ordering::Relaxed);
                let message = match refused {
                    Refused::Full => {
                        "the pool's queue is full: too many checks waiting; retry later"
                    }
                    Refused::ShutDown => "the server is shutting down",
                };
                return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message));
            }
        }
    }
    let mut verdicts = Vec::with_capacity(numbers.len());
    let gather = async {
        for handle in &mut in_flight.handles {
            match handle.await {
                Ok(part) => verdicts.extend(part),
                Err(e) => {
                    let (code, message) = describe_failure(&e);
                    return Err(ApiError::from_code(code, message));
                }
            }
        }
        Ok(())
    };
    match tokio::time::timeout_at(deadline, gather).await {
        Err(_) => return Err(deadline_passed(app)),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(())) => {}
    }
    drop(in_flight);
    if verdicts.len() != numbers.len() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the pool returned an incomplete answer; retry",
        ));
    }
    Ok(verdicts)
}
