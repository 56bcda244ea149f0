//! `medallion cluster scheduler`: Ballista's scheduler, embedded, with what
//! medallion's plans need (the `codec::LakeCodec` that decodes lake tables),
//! and the cluster's status as JSON at `status::STATUS_PATH` on the same
//! port as its gRPC service.
//!
//! It keeps its state in memory: a restarted scheduler starts empty, the
//! executors register again at their next heartbeat, and jobs that were
//! running fail on their clients (which leave the lake as it was: writes
//! are committed by the client, after the job).
//!
//! When an executor is lost, Ballista runs its tasks again on the others;
//! Ballista 55 can also leave such a job waiting forever (a stage it rolled
//! back never completes). `guard_stalled_jobs` cancels a job that made no
//! progress for `stall_timeout` after an executor was lost, and the status
//! says why, so its client fails in one line instead of waiting.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::routing::get;
use axum::Json;
use ballista_core::serde::protobuf::job_status;
use ballista_core::serde::protobuf::scheduler_grpc_server::SchedulerGrpcServer;
use ballista_scheduler::cluster::{BallistaCluster, ClusterStateEvent};
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::create_scheduler;
use ballista_scheduler::scheduler_server::SchedulerServer;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use futures::StreamExt;

use super::codec::LakeCodec;
use super::status::{ClusterStatus, ExecutorStatus, JobStatus, STATUS_PATH};
use crate::error::{Error, Result};

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Where it listens (gRPC for clients and executors, and the status).
    pub bind: SocketAddr,
    /// The host executors and clients are told to use for it, when `bind`
    /// is a wildcard address.
    pub external_host: Option<String>,
    /// An executor silent for this long is taken out of the cluster and its
    /// tasks are run again elsewhere.
    pub executor_timeout: Duration,
    /// A job without progress for this long after an executor was lost is
    /// cancelled (see the module documentation).
    pub stall_timeout: Duration,
}

/// Why the guard cancelled a job, by job id.
type Cancellations = Arc<Mutex<HashMap<String, String>>>;

/// What the status handler reads.
struct Shared {
    scheduler: Scheduler,
    bound: SocketAddr,
    cancellations: Cancellations,
}

type Scheduler = SchedulerServer<LogicalPlanNode, PhysicalPlanNode>;

/// Runs the scheduler until `stop` resolves. `started` is called with the
/// bound address once it accepts connections.
pub async fn run(options: SchedulerOptions, stop: impl Future<Output = ()> + Send + 'static, started: impl FnOnce(SocketAddr)) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(options.bind).await.map_err(|e| {
        Error::Config(format!("cannot listen on {} for the scheduler: {e} (choose another --bind)", options.bind))
    })?;
    let bound = listener.local_addr().map_err(|e| Error::other("scheduler address", e))?;
    let mut config = SchedulerConfig::default()
        .with_hostname(options.external_host.clone().unwrap_or_else(|| bound.ip().to_string()))
        .with_port(bound.port())
        // A job whose last executor was lost fails after this long, unless
        // an executor registers again meanwhile.
        .with_no_executors_grace_period_seconds(options.executor_timeout.as_secs().max(1));
    config.bind_host = bound.ip().to_string();
    config.executor_timeout_seconds = options.executor_timeout.as_secs().max(1);
    config.expire_dead_executor_interval_seconds = (options.executor_timeout.as_secs() / 3).max(1);
    config.override_logical_codec = Some(Arc::new(LakeCodec::default()));
    let config = Arc::new(config);
    let cluster = BallistaCluster::new_from_config(&config).await.map_err(|e| Error::other("Ballista scheduler", e))?;
    let scheduler: Scheduler =
        create_scheduler(cluster, config.clone()).await.map_err(|e| Error::other("Ballista scheduler", e))?;

    let grpc = SchedulerGrpcServer::new(scheduler.clone())
        .max_decoding_message_size(config.grpc_server_max_decoding_message_size as usize)
        .max_encoding_message_size(config.grpc_server_max_encoding_message_size as usize);
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(grpc);
    let cancellations = Cancellations::default();
    tokio::spawn(guard_stalled_jobs(scheduler.clone(), options.stall_timeout, cancellations.clone()));
    let shared = Arc::new(Shared { scheduler, bound, cancellations });
    let status = axum::Router::new().route(STATUS_PATH, get(status_handler)).with_state(shared);
    let app = routes.routes().into_axum_router().merge(status);
    started(bound);
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(stop)
        .await
        .map_err(|e| Error::other("Ballista scheduler", e))
}

async fn status_handler(State(shared): State<Arc<Shared>>) -> Json<ClusterStatus> {
    let mut status = cluster_status(&shared.scheduler, shared.bound).await;
    let cancellations = shared.cancellations.lock().expect("lock").clone();
    for job in &mut status.jobs {
        job.reason = cancellations.get(&job.id).cloned();
    }
    Json(status)
}

/// Cancels every running job that `StallWatch` finds stalled; records why.
async fn guard_stalled_jobs(scheduler: Scheduler, stall_timeout: Duration, cancellations: Cancellations) {
    let mut watch = StallWatch::new(stall_timeout);
    // Losses as Ballista reports them: an executor can register and be lost
    // between two looks at the executors (the kill test lost one 40 ms
    // after its job started), which the looks alone would never see.
    let (lost_sender, mut lost) = tokio::sync::mpsc::unbounded_channel();
    match scheduler.state.executor_manager.cluster_state_events().await {
        Ok(mut events) => {
            tokio::spawn(async move {
                while let Some(event) = events.next().await {
                    if let ClusterStateEvent::RemovedExecutor { executor_id } = event {
                        if lost_sender.send((executor_id, Instant::now())).is_err() {
                            break;
                        }
                    }
                }
            });
        }
        Err(err) => tracing::warn!("executor losses are seen once a second only: {err}"),
    }
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        while let Ok((executor, at)) = lost.try_recv() {
            watch.executor_lost(executor, at);
        }
        let present: HashSet<String> = match scheduler.state.executor_manager.get_executors_state().await {
            Ok(state) => state.into_iter().map(|(metadata, _, _)| metadata.id).collect(),
            Err(_) => continue,
        };
        // (All jobs, filtered: the running-jobs listing fails as a whole
        // when one job has no execution graph.)
        let Ok(jobs) = scheduler.state.task_manager.get_all_jobs().await else { continue };
        let (now, wall_clock) = (Instant::now(), SystemTime::now());
        let running: Vec<(String, usize, Instant)> = jobs
            .into_iter()
            .filter(|job| matches!(job.status.status, Some(job_status::Status::Running(_))))
            .map(|job| {
                // Ballista's start time is wall-clock milliseconds.
                let started = UNIX_EPOCH + Duration::from_millis(job.start_time);
                let age = if job.start_time == 0 { Duration::ZERO } else { wall_clock.duration_since(started).unwrap_or_default() };
                (job.job_id.to_string(), job.completed_stages, now.checked_sub(age).unwrap_or(now))
            })
            .collect();
        tracing::debug!("guard: {} executor(s), {} running job(s)", present.len(), running.len());
        for (id, executor) in watch.observe(now, present, &running) {
            let reason = format!(
                "cancelled: no new stage completed for {} s after executor {executor} was lost",
                stall_timeout.as_secs()
            );
            tracing::warn!("job {id} {reason}");
            cancellations.lock().expect("lock").insert(id.clone(), reason);
            if let Err(err) = scheduler.cancel_job(id.clone().into()).await {
                tracing::warn!("job {id} could not be cancelled: {err}");
            }
        }
    }
}

/// Which running jobs are stalled: a job that lost an executor while it
/// ran, and then completed no stage beyond the most it had ever completed
/// for `stall_timeout` (Ballista 55 can roll a stage back after a loss and
/// then lose track of it, leaving the job running forever). A stage rolled
/// back and run again is not progress; a single stage that legitimately
/// runs longer than `stall_timeout` after a loss is cancelled too, which
/// is why the default timeout is generous.
struct StallWatch {
    stall_timeout: Duration,
    executors: HashSet<String>,
    /// Executors seen leaving, and when (the most recent ones).
    losses: Vec<(String, Instant)>,
    /// Per running job: when it started, the most stages it has completed,
    /// and when that number last grew.
    jobs: HashMap<String, (Instant, usize, Instant)>,
}

impl StallWatch {
    fn new(stall_timeout: Duration) -> StallWatch {
        StallWatch { stall_timeout, executors: HashSet::new(), losses: Vec::new(), jobs: HashMap::new() }
    }

    /// Records an executor Ballista reported lost at `at`.
    fn executor_lost(&mut self, executor: String, at: Instant) {
        if !self.losses.iter().any(|(known, _)| *known == executor) {
            self.losses.push((executor, at));
        }
        if self.losses.len() > 64 {
            self.losses.drain(..self.losses.len() - 64);
        }
    }

    /// Takes in the executors present and the running jobs (id, completed
    /// stages, start) at `now`; returns the jobs to cancel, each with the
    /// executor whose loss it did not recover from. A returned job is
    /// forgotten. An executor present before and missing now counts as lost
    /// now unless a loss was already recorded (`executor_lost`).
    fn observe(&mut self, now: Instant, present: HashSet<String>, running: &[(String, usize, Instant)]) -> Vec<(String, String)> {
        let gone: Vec<String> = self.executors.difference(&present).cloned().collect();
        for executor in gone {
            self.executor_lost(executor, now);
        }
        self.executors = present;
        self.jobs.retain(|id, _| running.iter().any(|(running_id, _, _)| running_id == id));
        let mut stalled = Vec::new();
        for (id, completed, started) in running {
            let entry = self.jobs.entry(id.clone()).or_insert((*started, *completed, now));
            if *completed > entry.1 {
                entry.1 = *completed;
                entry.2 = now;
            }
            let (first_seen, _, progressed_at) = *entry;
            if now.duration_since(progressed_at) < self.stall_timeout {
                continue;
            }
            let lost = self
                .losses
                .iter()
                .rev()
                .find(|(_, lost_at)| *lost_at >= first_seen && now.duration_since(*lost_at) >= self.stall_timeout);
            if let Some((executor, _)) = lost {
                stalled.push((id.clone(), executor.clone()));
            }
        }
        for (id, _) in &stalled {
            self.jobs.remove(id);
        }
        stalled
    }
}

/// The executors and jobs the scheduler knows now.
async fn cluster_status(scheduler: &Scheduler, bound: SocketAddr) -> ClusterStatus {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let executors = scheduler
        .state
        .executor_manager
        .get_executors_state()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|(metadata, heartbeat, _)| ExecutorStatus {
            address: format!("{}:{}", metadata.host, metadata.port),
            slots: metadata.specification.vcores,
            last_seen_seconds: heartbeat.map(|at| now.saturating_sub(at).as_secs()),
            id: metadata.id,
        })
        .collect();
    let mut jobs: Vec<JobStatus> = scheduler
        .state
        .task_manager
        .get_all_jobs()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|job| {
            let state = match job.status.status {
                Some(job_status::Status::Queued(_)) => "queued",
                Some(job_status::Status::Running(_)) => "running",
                Some(job_status::Status::Failed(_)) => "failed",
                Some(job_status::Status::Successful(_)) => "successful",
                None => "unknown",
            };
            let end = if job.end_time == 0 { now.as_millis() as u64 } else { job.end_time };
            JobStatus {
                id: job.job_id.to_string(),
                name: job.job_name,
                state: state.to_string(),
                stages: job.num_stages,
                completed_stages: job.completed_stages,
                seconds: end.saturating_sub(job.start_time) as f64 / 1000.0,
                reason: None,
            }
        })
        .collect();
    jobs.sort_by(|a, b| (a.state != "running").cmp(&(b.state != "running")).then(b.seconds.total_cmp(&a.seconds)));
    ClusterStatus { scheduler: bound.to_string(), version: ballista_core::BALLISTA_VERSION.to_string(), executors, jobs }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn executors(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|id| id.to_string()).collect()
    }

    #[test]
    fn a_job_whose_stage_rolled_back_after_a_loss_is_stalled_once_the_timeout_passes() {
        let timeout = Duration::from_secs(15);
        let mut watch = StallWatch::new(timeout);
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let job = |stages: usize| vec![("j".to_string(), stages, at(0))];
        assert!(watch.observe(at(0), executors(&["a", "b"]), &job(0)).is_empty());
        // Executor a is lost; the job then completes a stage, which Ballista
        // rolls back: the most stages it ever completed stays 1.
        assert!(watch.observe(at(5), executors(&["b"]), &job(0)).is_empty());
        assert!(watch.observe(at(8), executors(&["b"]), &job(1)).is_empty());
        assert!(watch.observe(at(10), executors(&["b"]), &job(0)).is_empty());
        assert!(watch.observe(at(22), executors(&["b"]), &job(1)).is_empty(), "15 s since its last new stage have not passed");
        assert_eq!(watch.observe(at(23), executors(&["b"]), &job(1)), [("j".to_string(), "a".to_string())]);
        assert!(watch.observe(at(24), executors(&["b"]), &job(1)).is_empty(), "a cancelled job is reported once");
    }

    #[test]
    fn jobs_without_a_loss_during_their_life_or_still_progressing_are_left_alone() {
        let timeout = Duration::from_secs(15);
        let mut watch = StallWatch::new(timeout);
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        watch.observe(at(0), executors(&["a", "b"]), &[]);
        watch.observe(at(1), executors(&["b"]), &[]);
        // Started after the loss: a long stage is not a stall.
        assert!(watch.observe(at(2), executors(&["b"]), &[("late".to_string(), 0, at(2))]).is_empty());
        assert!(watch.observe(at(100), executors(&["b"]), &[("late".to_string(), 0, at(2))]).is_empty());
        // Started before a loss and gaining stages: not stalled.
        let mut stages = 0;
        watch.observe(at(100), executors(&["b", "c"]), &[("busy".to_string(), 0, at(100))]);
        for second in (101..160).step_by(10) {
            let present = if second > 101 { executors(&["b"]) } else { executors(&["b", "c"]) };
            stages += 1;
            assert!(watch.observe(at(second), present, &[("busy".to_string(), stages, at(100))]).is_empty());
        }
    }

    #[test]
    fn a_loss_reported_between_two_looks_counts_from_the_start_of_the_job() {
        // As in a test run: the executor registered, got a task of a job
        // started 0.3 s before the first look, and was lost 40 ms later;
        // no look ever saw it.
        let timeout = Duration::from_secs(15);
        let mut watch = StallWatch::new(timeout);
        let start = Instant::now();
        let at = |millis: u64| start + Duration::from_millis(millis);
        watch.executor_lost("a".to_string(), at(340));
        let job = vec![("j".to_string(), 0, at(300))];
        assert!(watch.observe(at(1000), executors(&["b"]), &job).is_empty());
        assert!(watch.observe(at(15_000), executors(&["b"]), &job).is_empty(), "15 s since the job was first seen have not passed");
        assert_eq!(watch.observe(at(16_000), executors(&["b"]), &job), [("j".to_string(), "a".to_string())]);
    }
}
