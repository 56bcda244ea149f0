//! Scale out: the same models and queries on an Apache DataFusion Ballista
//! cluster (`--engine ballista://HOST:PORT`), with one binary as the whole
//! cluster (`medallion cluster scheduler | executor | status`).
//!
//! ```text
//!  client (medallion run / refine / aggregate / sql)
//!    SessionBuilder .on(&Engine::Ballista) ─ the lake's tables as lake::snapshot_files::SnapshotFiles
//!    (the files of the Delta version it resolved), logical plan ─codec::LakeCodec─▶
//!                                                 scheduler (scheduler::run)
//!                                                   plans stages, hands tasks to ──▶ executors (executor::run)
//!                                                                 read Parquet with their own credentials
//!                                                                 (stores::LakeStores), shuffle between stages
//!    ◀── result rows (Arrow Flight) ───────────────────────────────────────────────┘
//!    writes them as one Delta commit per table (lake::partition_write), as locally
//! ```
//!
//! Reads are distributed, writes are committed by the client: a job that
//! fails (an executor lost for good, the scheduler gone) fails the command
//! before anything is committed, so no table is ever half-written.
//! `status` is what a scheduler reports about its executors and jobs.

pub mod codec;
pub mod executor;
pub mod scheduler;
pub mod status;
mod stores;

use std::sync::Arc;
use std::time::Duration;

use ballista_core::extension::{SessionConfigExt, SessionStateExt};
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};

/// The version of Ballista embedded.
pub use ballista_core::BALLISTA_VERSION;

/// How long a client waits for a scheduler's status before it gives up.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// Kept in the configuration of a session whose queries run on a cluster:
/// `lake::catalog::register_delta` then registers Delta tables as
/// `lake::snapshot_files::SnapshotFiles`.
#[derive(Debug, Clone)]
pub struct OnCluster {
    /// `host:port` of the scheduler.
    pub scheduler: String,
}

/// Turns a local session into one whose queries run on the scheduler at
/// `host:port`, once it answered with at least one executor (otherwise one
/// line says what to start).
pub async fn connect(ctx: SessionContext, host: &str, port: u16) -> Result<SessionContext> {
    let scheduler = format!("{host}:{port}");
    let cluster = status::fetch(host, port, STATUS_TIMEOUT).await?;
    if cluster.executors.is_empty() {
        return Err(Error::Cluster {
            scheduler: scheduler.clone(),
            reason: format!("no executor has registered: start one with `medallion cluster executor --scheduler {scheduler}`"),
        });
    }
    let state = ctx.state();
    // As many partitions per stage as the cluster has slots.
    let partitions = state.config().target_partitions().max(cluster.slots() as usize);
    let config = state
        .config()
        .clone()
        .with_target_partitions(partitions)
        // The session's catalog already holds the layers' schemas: a new
        // default catalog would replace it when the state is rebuilt.
        .with_create_default_catalog_and_schema(false)
        .with_ballista_logical_extension_codec(Arc::new(codec::LakeCodec::default()))
        .with_extension(Arc::new(OnCluster { scheduler: scheduler.clone() }));
    let state = SessionStateBuilder::new_from_existing(state).with_config(config).build();
    let state = state
        .upgrade_for_ballista(format!("http://{host}:{port}"))
        .map_err(|e| Error::Cluster { scheduler: scheduler.clone(), reason: crate::error::one_line(&e.to_string()) })?;
    Ok(SessionContext::new_with_state(state))
}

/// Whether the queries of a session with this state run on a cluster.
pub fn on_cluster(state: &datafusion::execution::context::SessionState) -> bool {
    state.config().get_extension::<OnCluster>().is_some()
}
