//! JSON POSTs to a receiver that must never slow the sender: `up`'s alerts
//! and OpenLineage events (`lineage::openlineage`).
//!
//! Bodies are queued and delivered in order by a task of their own, each
//! retried a few times with a doubling pause; one that keeps failing is
//! logged and dropped. The URL may hold a secret (Slack puts its token in
//! the path): messages name its host only.

use std::time::Duration;

use object_store::client::{HttpClient, HttpConnector, HttpRequestBody, ReqwestConnector};
use object_store::ClientOptions;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// How deliveries are tried.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryPolicy {
    pub attempts: u32,
    /// Pause after the first failed try, doubled after each.
    pub first_pause: Duration,
    /// Longest a single POST may take.
    pub timeout: Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy { attempts: 4, first_pause: Duration::from_secs(2), timeout: Duration::from_secs(10) }
    }
}

/// Most bodies waiting for delivery; more are dropped (and logged).
const QUEUE: usize = 256;

/// The queue of one receiver. Cheap to clone.
#[derive(Clone)]
pub struct Webhook {
    queue: mpsc::Sender<String>,
    /// What the bodies are, for log lines ("alert", "OpenLineage event").
    what: &'static str,
}

/// The delivery task of a `Webhook`, to wait for at the end of a command.
pub struct Delivery(JoinHandle<()>);

impl Delivery {
    /// Waits until every queued body is delivered or dropped (once every
    /// `Webhook` clone is gone), at most `limit`.
    pub async fn finish(self, limit: Duration) {
        if tokio::time::timeout(limit, self.0).await.is_err() {
            tracing::warn!("some events were still being delivered after {limit:?}: not waiting longer");
        }
    }
}

impl Webhook {
    /// Starts the delivery task for `url` (http or https); `setting` names
    /// the option in a message about a bad URL.
    pub fn start(url: &str, setting: &str, what: &'static str, policy: DeliveryPolicy) -> Result<(Webhook, Delivery)> {
        let url = url::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| Error::Config(format!("{setting} is not an http(s) URL: give the full URL the receiver gave you")))?;
        let options = ClientOptions::new()
            .with_allow_http(url.scheme() == "http")
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(policy.timeout);
        let client = ReqwestConnector::default().connect(&options).map_err(|e| Error::other(format!("{what} HTTP client"), e))?;
        let (sender, receiver) = mpsc::channel(QUEUE);
        let task = tokio::spawn(deliver_all(client, url, policy, what, receiver));
        Ok((Webhook { queue: sender, what }, Delivery(task)))
    }

    /// Queues `body` (never waits).
    pub fn send(&self, body: String) {
        if self.queue.try_send(body).is_err() {
            tracing::warn!("{} dropped: {QUEUE} already wait for delivery", self.what);
        }
    }
}

/// Delivers queued bodies one after the other until every sender is gone.
async fn deliver_all(
    client: HttpClient,
    url: url::Url,
    policy: DeliveryPolicy,
    what: &'static str,
    mut queue: mpsc::Receiver<String>,
) {
    let host = url.host_str().unwrap_or("the receiver").to_string();
    while let Some(body) = queue.recv().await {
        let mut pause = policy.first_pause;
        let attempts = policy.attempts.max(1);
        for attempt in 1..=attempts {
            match post(&client, &url, body.clone()).await {
                Ok(()) => break,
                Err(reason) if attempt == attempts => {
                    tracing::warn!("{what} not delivered to {host} after {attempt} tries: {reason}");
                }
                Err(reason) => {
                    tracing::debug!("{what} delivery to {host} failed ({reason}); retrying in {pause:?}");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
            }
        }
    }
}

/// One POST; the reason of a failure never shows the URL.
async fn post(client: &HttpClient, url: &url::Url, body: String) -> std::result::Result<(), String> {
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(url.as_str())
        .header("content-type", "application/json")
        .body(HttpRequestBody::from(body))
        .map_err(|_| "the request could not be built".to_string())?;
    let response = client.execute(request).await.map_err(|e| format!("{:?} error", e.kind()))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", status.as_u16()))
    }
}
