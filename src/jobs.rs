//! The long-running commands as library calls, each leaving its run record
//! in `gold.pipeline_runs`: `medallion stream`, which `medallion up` also
//! runs. Also what such a process sets up before it starts (allocator
//! settings, Ctrl-C and SIGTERM).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::error::{one_line, Error, Result};
use crate::kafka::Connection;
use crate::lake::Lake;
use crate::live::LiveHandle;
use crate::progress::Progress;
use crate::runs::{self, RunRecord, StreamRun};
use crate::stream::{self, files::FileSource, kafka::KafkaSource, source::StreamSource, StreamReport};

/// The stream source the configuration names: a folder of JSON-lines files
/// (`[stream] source`, `--source`), else Kafka (`brokers`, `topic`, `group`).
pub fn stream_source(config: &Config) -> Result<StreamSource> {
    if let Some(dir) = &config.stream.source {
        return Ok(StreamSource::Files(FileSource::new(dir.clone())?));
    }
    let brokers = config.stream.brokers.as_deref().ok_or_else(|| {
        Error::Config(
            "no Kafka brokers: set KAFKA_BOOTSTRAP_SERVERS or --brokers (or brokers under [stream] in medallion.toml), \
             or read files with --source file:///dir"
                .into(),
        )
    })?;
    let connection = Connection::new(&config.kafka, brokers);
    let membership = config.stream.membership.clone();
    Ok(StreamSource::Kafka(KafkaSource::connect_as(&connection, &config.stream.topic, &config.stream.group, membership)?))
}

/// How often a continuous stream waiting for its source tries again.
const SOURCE_RETRY: Duration = Duration::from_secs(5);

/// The configured stream source, once it answers. A continuous stream
/// (`interval` set, as under `medallion up`) waits for a broker or a topic
/// that is not there yet, with a warning line at each try (every
/// `SOURCE_RETRY`); a stream that consumes what is there and stops fails at
/// once instead. `None` when `stop` is set while waiting. A configuration
/// error (no brokers at all) and a broker's refusal (bad credentials) are
/// returned at once either way: waiting would not change them.
pub async fn wait_for_source(config: &Config, stop: &AtomicBool) -> Result<Option<StreamSource>> {
    let started = Instant::now();
    let mut waited = false;
    loop {
        let source = stream_source(config)?;
        let error = match source.keys().await {
            Ok(_) => {
                if waited {
                    tracing::warn!("stream: {} answers now, after {}s", source.describe(), started.elapsed().as_secs());
                }
                return Ok(Some(source));
            }
            Err(err @ Error::KafkaRefused { .. }) => return Err(err),
            Err(err) if config.stream.interval.is_some() => err,
            Err(err) => return Err(err),
        };
        waited = true;
        tracing::warn!(
            "stream: waiting for its source ({}s so far, trying again every {}s): {}",
            started.elapsed().as_secs(),
            SOURCE_RETRY.as_secs(),
            one_line(&config.secrets().scrub(&error.to_string()))
        );
        let retry_at = Instant::now() + SOURCE_RETRY;
        while Instant::now() < retry_at {
            if stop.load(Ordering::SeqCst) {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Runs the stream with the configuration's options until its trigger says
/// stop or `stop` is set, publishing to `live`. The run is recorded in
/// `gold.pipeline_runs`, failed runs too (with their error line).
pub async fn stream(
    config: &Config,
    lake: &Lake,
    source: StreamSource,
    live: &LiveHandle,
    progress: &Progress,
    stop: Arc<AtomicBool>,
) -> Result<StreamReport> {
    let started_at = Utc::now();
    let result = stream::run(config, lake, source, &config.stream_options(), live, progress, stop).await;
    runs::append_best_effort(lake, &[stream_record(config, started_at, &result)]).await;
    result
}

/// The run record of a stream run that started at `started_at`.
fn stream_record(config: &Config, started_at: DateTime<Utc>, result: &Result<StreamReport>) -> RunRecord {
    let summary = match result {
        Ok(report) => StreamRun {
            batches: report.batches,
            events: report.events,
            rejected: report.rejected,
            events_per_second: (report.events + report.rejected) as f64 / report.duration.as_secs_f64().max(1e-9),
            lag: report.lag.clone(),
        },
        Err(_) => StreamRun::default(),
    };
    let error = result.as_ref().err().map(|err| one_line(&config.secrets().scrub(&err.to_string())));
    runs::stream_record(&runs::new_run_id(), started_at, &summary, error)
}

/// A flag set on Ctrl-C or SIGTERM: a stream given it stops after the
/// batch in flight. Must be called inside the runtime.
pub fn stop_on_ctrl_c() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        stop_signal().await;
        eprintln!("stopping after the batch in flight…");
        flag.store(true, Ordering::SeqCst);
    });
    stop
}

/// Resolves on Ctrl-C or SIGTERM (what a service manager sends).
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// A stream frees and refills tens of MB per micro-batch (payloads, Arrow
/// columns, Parquet buffers). By default glibc hands freed heap memory back
/// to the kernel as soon as 128 KiB of it sit at the top of the heap, then
/// takes it back one page fault at a time: that cost about a third of the
/// stream's system time. Up to 1 GiB freed is now kept for reuse, and
/// blocks up to 32 MiB come from the heap (setting the trim threshold would
/// otherwise freeze the mmap threshold at 128 KiB). Call it once, before a
/// stream starts.
pub fn keep_freed_memory_for_reuse() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; any value is valid.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}
