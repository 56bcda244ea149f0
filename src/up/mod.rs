//! `medallion up`: the whole lakehouse as one long-running service.
//!
//! * `supervisor` — every part runs as a task, restarted with backoff when it
//!   fails, stopped together on Ctrl-C / SIGTERM
//! * `cron`       — five-field cron expressions in a time zone
//! * `scheduler`  — `[[up.schedule]]` loops: catch-up, skip-if-running,
//!   retries with exponential pauses, failure and recovery alerts
//! * `alerts`     — JSON webhook POSTs, queued and retried off the pipeline's path
//! * `freshness`  — age of each table's last commit against `[freshness]` limits
//! * `service`    — `run`: the parts above, the stream and the server, together

pub mod alerts;
pub mod cron;
pub mod freshness;
pub mod scheduler;
pub mod service;
pub mod supervisor;
