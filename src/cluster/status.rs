//! What a scheduler reports about its cluster (`medallion cluster status`,
//! and the check `--engine ballista://` makes before it sends a job): its
//! executors with their slots and last heartbeat, and its jobs.
//!
//! The scheduler serves it as JSON at `/medallion/status` on its own port,
//! beside Ballista's gRPC service (see `scheduler`).

use std::time::Duration;

use object_store::client::{HttpClient, HttpConnector, HttpRequestBody, ReqwestConnector};
use object_store::ClientOptions;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The path of the status document on the scheduler's port.
pub const STATUS_PATH: &str = "/medallion/status";

/// The cluster as its scheduler sees it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ClusterStatus {
    /// `host:port` the scheduler listens on.
    pub scheduler: String,
    pub version: String,
    pub executors: Vec<ExecutorStatus>,
    /// Jobs the scheduler still knows (running first, then the newest).
    pub jobs: Vec<JobStatus>,
}

/// One registered executor.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ExecutorStatus {
    pub id: String,
    /// `host:port` of its data (Arrow Flight) service.
    pub address: String,
    /// Tasks it runs at once.
    pub slots: u32,
    /// Seconds since its last heartbeat, when one arrived.
    pub last_seen_seconds: Option<u64>,
}

/// One job (a query of a client).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JobStatus {
    pub id: String,
    pub name: String,
    /// queued, running, failed or successful.
    pub state: String,
    pub stages: usize,
    pub completed_stages: usize,
    /// Seconds it ran (until now when still running).
    pub seconds: f64,
    /// Why the scheduler cancelled it, when it did.
    #[serde(default)]
    pub reason: Option<String>,
}

impl ClusterStatus {
    /// Total task slots of the registered executors.
    pub fn slots(&self) -> u32 {
        self.executors.iter().map(|e| e.slots).sum()
    }

    /// Jobs queued or running.
    pub fn running_jobs(&self) -> usize {
        self.jobs.iter().filter(|j| j.state == "running" || j.state == "queued").count()
    }
}

/// Asks the scheduler at `host:port` for its status, within `timeout`.
pub async fn fetch(host: &str, port: u16, timeout: Duration) -> Result<ClusterStatus> {
    let address = format!("{host}:{port}");
    let unreachable = |reason: String| Error::Cluster {
        scheduler: address.clone(),
        reason: format!(
            "the scheduler does not answer ({reason}): start it with `medallion cluster scheduler --bind {address}`, \
             or point --engine (MEDALLION_ENGINE) at a running one"
        ),
    };
    let options = ClientOptions::new().with_allow_http(true).with_connect_timeout(timeout).with_timeout(timeout);
    let http: HttpClient = ReqwestConnector::default()
        .connect(&options)
        .map_err(|e| Error::other("HTTP client", e))?;
    let request = http::Request::builder()
        .method(http::Method::GET)
        .uri(format!("http://{address}{STATUS_PATH}"))
        .body(HttpRequestBody::empty())
        .map_err(|e| Error::other("status request", e))?;
    let response = http.execute(request).await.map_err(|e| unreachable(root_cause(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(Error::Cluster {
            scheduler: address.clone(),
            reason: format!(
                "answered HTTP {} to {STATUS_PATH}: is this a `medallion cluster scheduler` (not another Ballista scheduler or service)?",
                status.as_u16()
            ),
        });
    }
    let body = response.into_body().bytes().await.map_err(|e| unreachable(root_cause(&e)))?;
    serde_json::from_slice(&body)
        .map_err(|e| Error::Cluster { scheduler: address.clone(), reason: format!("unreadable status document: {e}") })
}

/// The innermost message of an error chain (a refused connection says so
/// there, not in the outer "HTTP error").
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(source) = current.source() {
        current = source;
    }
    crate::error::one_line(&current.to_string())
}
