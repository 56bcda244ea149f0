//! `medallion cluster executor`: Ballista's executor, embedded. It runs the
//! tasks its scheduler hands it, reading the lake's Parquet files through
//! `stores::LakeStores` (its own S3 credentials), with a memory pool shared
//! by its slots past which sorts and aggregates spill to its work folder.

use std::sync::Arc;
use std::time::Duration;

use ballista_core::RuntimeProducer;
use ballista_executor::executor_process::{start_executor_process, ExecutorProcessConfig};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;

use super::codec::LakeCodec;
use super::stores::LakeStores;
use crate::config::S3Config;
use crate::error::{Error, Result};

/// How an executor runs.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    pub scheduler_host: String,
    pub scheduler_port: u16,
    /// The address its services listen on.
    pub bind_host: String,
    /// The host the scheduler and other executors reach it at (its bind
    /// host unless given).
    pub external_host: Option<String>,
    /// Port of its data service (Arrow Flight: shuffle reads and results).
    pub port: u16,
    /// Port of its gRPC service (tasks pushed by the scheduler).
    pub grpc_port: u16,
    /// Tasks it runs at once.
    pub slots: usize,
    /// Bytes all its tasks may hold before spilling.
    pub memory_limit: Option<usize>,
    /// Where shuffle files and spills go (a temporary folder unless given).
    pub work_dir: Option<String>,
    /// How long it keeps trying to reach the scheduler at start.
    pub connect_timeout: Duration,
    /// How often it tells the scheduler it is alive.
    pub heartbeat: Duration,
    /// The S3 settings it reads the lake with (its own environment's).
    pub s3: S3Config,
}

/// Runs the executor until SIGTERM / Ctrl-C or until the scheduler stops it.
pub async fn run(options: ExecutorOptions) -> Result<()> {
    let s3 = options.s3.clone();
    let runtime: RuntimeProducer = Arc::new(move |_config| {
        let stores = Arc::new(LakeStores::new(s3.clone()));
        Ok(RuntimeEnvBuilder::new().with_object_store_registry(stores).build_arc()?)
    });
    let config = ExecutorProcessConfig {
        bind_host: options.bind_host.clone(),
        external_host: options.external_host.clone(),
        port: options.port,
        grpc_port: options.grpc_port,
        scheduler_host: options.scheduler_host.clone(),
        scheduler_port: options.scheduler_port,
        scheduler_connect_timeout_seconds: options.connect_timeout.as_secs().clamp(1, u16::MAX as u64) as u16,
        vcores: options.slots.max(1),
        work_dir: options.work_dir.clone(),
        executor_heartbeat_interval_seconds: options.heartbeat.as_secs().max(1),
        memory_pool_size: options.memory_limit.map(|bytes| bytes as u64),
        override_runtime_producer: Some(runtime),
        override_logical_codec: Some(Arc::new(LakeCodec::default())),
        ..ExecutorProcessConfig::default()
    };
    let scheduler = format!("{}:{}", options.scheduler_host, options.scheduler_port);
    start_executor_process(Arc::new(config)).await.map_err(|e| {
        let reason = crate::error::one_line(&e.to_string());
        if reason.contains("connect") {
            Error::Cluster {
                scheduler: scheduler.clone(),
                reason: format!(
                    "this executor could not register ({reason}): start the scheduler first (`medallion cluster scheduler`), \
                     or check --scheduler"
                ),
            }
        } else {
            Error::Cluster { scheduler: scheduler.clone(), reason: format!("executor stopped: {reason}") }
        }
    })
}
