//! `GET /api/cluster`: where the server's ad-hoc queries run, for the
//! dashboard's Cluster panel and for monitoring.
//!
//! | engine | answer |
//! |---|---|
//! | local | `200 {"engine": "local"}` |
//! | a cluster that answers | `200`, the scheduler's `ClusterStatus` (address, executors with slots and last heartbeat, jobs with state and reason) and `"engine": "ballista://host:port"` |
//! | a cluster that does not | `502 {"engine": "ballista://host:port", "error": "<one line>"}` |
//!
//! The status is asked of the scheduler at each call (one small HTTP
//! request, a short timeout), so the panel shows executors as they come
//! and go. The scheduler's status holds no secret: addresses, slots, job ids
//! and states.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::state::AppState;
use crate::cluster::status::{self, ClusterStatus};
use crate::config::Engine;
use crate::error::Result;

/// How long the scheduler has to answer: the dashboard waits for it.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn handle(State(state): State<Arc<AppState>>) -> Response {
    let engine = &state.options.engine;
    let fetched = match engine {
        Engine::Local => None,
        Engine::Ballista { host, port } => Some(status::fetch(host, *port, STATUS_TIMEOUT).await),
    };
    let (code, body) = answer(engine, fetched);
    (code, axum::Json(body)).into_response()
}

/// The status code and body for `engine`, given what its scheduler answered
/// (`None` for a local engine). A scheduler that does not answer is a 502:
/// the server is up, the upstream it relays is not, and a probe sees it
/// without reading the body.
fn answer(engine: &Engine, fetched: Option<Result<ClusterStatus>>) -> (StatusCode, Value) {
    let name = engine.to_string();
    match fetched {
        None => (StatusCode::OK, json!({ "engine": name })),
        Some(Ok(cluster)) => {
            let mut body = serde_json::to_value(&cluster).unwrap_or_else(|_| json!({}));
            body["engine"] = json!(name);
            (StatusCode::OK, body)
        }
        Some(Err(err)) => (StatusCode::BAD_GATEWAY, json!({ "engine": name, "error": crate::error::one_line(&err.to_string()) })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::status::{ExecutorStatus, JobStatus};
    use crate::error::Error;

    fn cluster() -> Engine {
        Engine::Ballista { host: "10.0.0.5".into(), port: 50050 }
    }

    #[test]
    fn a_local_server_says_local_and_nothing_else() {
        assert_eq!(answer(&Engine::Local, None), (StatusCode::OK, json!({ "engine": "local" })));
    }

    #[test]
    fn a_cluster_answers_with_its_executors_and_jobs_and_the_engine() {
        let status = ClusterStatus {
            scheduler: "10.0.0.5:50050".into(),
            version: "55.0.0".into(),
            executors: vec![ExecutorStatus { id: "e1".into(), address: "10.0.0.6:50051".into(), slots: 4, last_seen_seconds: Some(2) }],
            jobs: vec![JobStatus { id: "j1".into(), state: "failed".into(), reason: Some("executor lost".into()), ..Default::default() }],
        };
        let (code, body) = answer(&cluster(), Some(Ok(status)));
        assert_eq!(code, StatusCode::OK);
        assert_eq!(body["engine"], "ballista://10.0.0.5:50050");
        assert_eq!(body["scheduler"], "10.0.0.5:50050");
        assert_eq!((body["executors"][0]["id"].as_str(), body["executors"][0]["slots"].as_u64()), (Some("e1"), Some(4)));
        assert_eq!(body["executors"][0]["last_seen_seconds"], 2);
        assert_eq!((body["jobs"][0]["state"].as_str(), body["jobs"][0]["reason"].as_str()), (Some("failed"), Some("executor lost")));
    }

    #[test]
    fn a_scheduler_that_does_not_answer_is_a_502_with_one_line() {
        let err = Error::Cluster { scheduler: "10.0.0.5:50050".into(), reason: "connection refused\n(os error 111)".into() };
        let (code, body) = answer(&cluster(), Some(Err(err)));
        assert_eq!(code, StatusCode::BAD_GATEWAY);
        assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
        assert_eq!(body["engine"], "ballista://10.0.0.5:50050");
        let line = body["error"].as_str().unwrap();
        assert!(line.contains("connection refused") && !line.contains('\n'), "{line}");
    }
}
