//! Alerts of `medallion up`: a JSON POST to a webhook on a failure after the
//! last retry, on the recovery that follows, and on a freshness breach.
//!
//! The body has a `text` field (what Slack and Teams incoming webhooks show)
//! and structured fields (`event`, `pipeline`, `stage`, `error`, `run_id`,
//! `table`, `lake`, `at`) for other receivers. Alerts are queued and
//! delivered by a task of their own (`webhook`), each retried a few times
//! with a pause between tries, so that the pipeline never waits for a
//! webhook; a delivery that keeps failing is logged and dropped. The webhook
//! URL is a secret (Slack puts its token in the path): messages name its
//! host only.

use chrono::{DateTime, Utc};

use crate::error::Result;
pub use crate::webhook::DeliveryPolicy;
use crate::webhook::Webhook;

/// Why an alert is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertEvent {
    /// A run failed after its last retry.
    Failure,
    /// The first success after a failure.
    Recovery,
    /// A table is older than its freshness limit.
    FreshnessBreach,
    /// A table that breached its limit is fresh again.
    FreshnessRecovered,
}

/// One alert, as POSTed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Alert {
    /// One line a person reads in a chat channel.
    pub text: String,
    pub event: AlertEvent,
    /// The schedule or part concerned (`nightly`, `stream`…).
    pub pipeline: String,
    pub stage: Option<String>,
    pub error: Option<String>,
    pub run_id: Option<String>,
    pub table: Option<String>,
    pub lake: String,
    pub at: DateTime<Utc>,
}

/// Queues alerts for the delivery task (`webhook`). Cheap to clone.
/// Without a webhook configured, alerts are only logged.
#[derive(Clone)]
pub struct Alerter {
    webhook: Option<Webhook>,
}

impl Alerter {
    /// Alerts that are only logged.
    pub fn log_only() -> Alerter {
        Alerter { webhook: None }
    }

    /// Starts the delivery task for `webhook` (http or https URL).
    pub fn start(webhook: &str, policy: DeliveryPolicy) -> Result<Alerter> {
        let (webhook, _delivery) = Webhook::start(webhook, "alerts.webhook", "alert", policy)?;
        Ok(Alerter { webhook: Some(webhook) })
    }

    /// Queues `alert` (never waits). It is logged in every case.
    pub fn send(&self, alert: Alert) {
        match alert.event {
            AlertEvent::Failure | AlertEvent::FreshnessBreach => tracing::warn!("alert: {}", alert.text),
            _ => tracing::info!("alert: {}", alert.text),
        }
        if let Some(webhook) = &self.webhook {
            match serde_json::to_string(&alert) {
                Ok(body) => webhook.send(body),
                Err(err) => tracing::warn!("alert not sent: cannot encode it ({err})"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::mpsc;

    fn alert(text: &str) -> Alert {
        Alert {
            text: text.to_string(),
            event: AlertEvent::Failure,
            pipeline: "nightly".into(),
            stage: Some("ingest".into()),
            error: Some("cannot connect to PostgreSQL".into()),
            run_id: Some("r1".into()),
            table: None,
            lake: "file:///tmp/lake".into(),
            at: Utc::now(),
        }
    }

    /// A receiver that answers 500 to the first `failures` requests, then
    /// 200, and hands every body it got to the test.
    async fn receiver(failures: usize) -> (String, mpsc::Receiver<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook/secret-token", listener.local_addr().unwrap());
        let (sender, bodies) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut served = 0;
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                // Read the head, then as many body bytes as it announces.
                let body = loop {
                    let n = socket.read(&mut buffer).await.unwrap();
                    if n == 0 {
                        break None;
                    }
                    request.extend_from_slice(&buffer[..n]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length: usize = text[..end]
                            .lines()
                            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break Some(text[end + 4..end + 4 + length].to_string());
                        }
                    }
                };
                let status = if served < failures { "500 Internal Server Error" } else { "200 OK" };
                served += 1;
                let _ = socket.write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes()).await;
                if let Some(body) = body {
                    if status.starts_with("200") {
                        let _ = sender.send(body).await;
                    }
                }
            }
        });
        (url, bodies)
    }

    #[tokio::test]
    async fn an_alert_is_posted_as_json_with_a_text_field_and_retried() {
        let (url, mut bodies) = receiver(2).await;
        let policy = DeliveryPolicy { attempts: 3, first_pause: Duration::from_millis(20), timeout: Duration::from_secs(5) };
        let alerter = Alerter::start(&url, policy).unwrap();
        alerter.send(alert("nightly failed"));
        let body = tokio::time::timeout(Duration::from_secs(10), bodies.recv()).await.unwrap().unwrap();
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["text"], "nightly failed");
        assert_eq!(json["event"], "failure");
        assert_eq!(json["pipeline"], "nightly");
        assert_eq!(json["error"], "cannot connect to PostgreSQL");
    }

    #[tokio::test]
    async fn a_receiver_that_keeps_failing_does_not_block_the_sender() {
        let (url, mut bodies) = receiver(usize::MAX).await;
        let policy = DeliveryPolicy { attempts: 2, first_pause: Duration::from_millis(10), timeout: Duration::from_secs(5) };
        let alerter = Alerter::start(&url, policy).unwrap();
        let started = std::time::Instant::now();
        for n in 0..10 {
            alerter.send(alert(&format!("failure {n}")));
        }
        assert!(started.elapsed() < Duration::from_secs(2), "send waited for delivery");
        assert!(tokio::time::timeout(Duration::from_millis(300), bodies.recv()).await.is_err());
    }

    #[test]
    fn a_bad_webhook_is_one_clear_line_without_the_url() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let err = rt.block_on(async { Alerter::start("ftp://hooks.example/T0KEN", DeliveryPolicy::default()).err().unwrap() });
        let text = err.to_string();
        assert!(text.contains("alerts.webhook") && !text.contains("T0KEN"), "{text}");
    }
}
