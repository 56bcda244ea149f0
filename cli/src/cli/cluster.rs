//! `medallion cluster scheduler | executor | status`: one binary is the
//! whole Ballista cluster. Parsing and printing only; the cluster itself is
//! `medallion::cluster`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use medallion::cluster::{executor, scheduler, status};
use medallion::config::{parse_duration, Config};

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Run the scheduler: it plans the stages of each query and hands their tasks to the executors
    #[command(after_help = "Examples:\n  \
        medallion cluster scheduler                         # 127.0.0.1:50050\n  \
        medallion cluster scheduler --bind 0.0.0.0:50050 --external-host sched.internal\n\n\
        Then start executors (`medallion cluster executor --scheduler HOST:50050`) and run models on the cluster:\n  \
        medallion run --engine ballista://HOST:50050\n\n\
        The scheduler keeps its state in memory: restarted, it forgets running jobs (their commands fail, \
        the lake stays as it was) and executors register again.")]
    Scheduler(SchedulerArgs),
    /// Run an executor: it runs tasks of the scheduler's jobs, reading the lake with its own credentials
    #[command(after_help = "Examples:\n  \
        medallion cluster executor --scheduler 127.0.0.1:50050 --slots 2\n  \
        medallion cluster executor --scheduler sched.internal:50050 --bind-host 0.0.0.0 --external-host worker3.internal\n\n\
        An S3 lake is read with this machine's settings: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, \
        AWS_REGION, AWS_ALLOW_HTTP (or [s3] in medallion.toml). Nothing secret travels in a plan.\n\
        Two executors on one machine need their own --port and --grpc-port.")]
    Executor(ExecutorArgs),
    /// Show a cluster: its executors with their slots and last heartbeat, and its jobs
    #[command(after_help = "Example:\n  medallion cluster status --scheduler 127.0.0.1:50050")]
    Status(StatusArgs),
}

#[derive(Args)]
pub struct SchedulerArgs {
    /// Address the scheduler listens on (gRPC for clients and executors, and its status)
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:50050")]
    bind: String,
    /// Host name executors and clients reach it at, when --bind is 0.0.0.0 [default: the --bind address]
    #[arg(long, value_name = "HOST")]
    external_host: Option<String>,
    /// An executor without a heartbeat for this long is taken out and its tasks run elsewhere
    #[arg(long, value_name = "DURATION", default_value = "15s")]
    executor_timeout: String,
    /// A job without progress for this long after an executor was lost is cancelled (its command fails, the lake is unchanged)
    #[arg(long, value_name = "DURATION", default_value = "120s")]
    stall_timeout: String,
}

#[derive(Args)]
pub struct ExecutorArgs {
    /// The scheduler to register with
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:50050")]
    scheduler: String,
    /// Tasks run at once [default: the machine's cores]
    #[arg(long, value_name = "N")]
    slots: Option<usize>,
    /// Address the executor's services listen on
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    bind_host: String,
    /// Host name the scheduler and other executors reach it at [default: the --bind-host address]
    #[arg(long, value_name = "HOST")]
    external_host: Option<String>,
    /// Port of its data service (shuffle reads, results)
    #[arg(long, value_name = "PORT", default_value_t = 50051)]
    port: u16,
    /// Port of its task service
    #[arg(long, value_name = "PORT", default_value_t = 50052)]
    grpc_port: u16,
    /// Folder for shuffle files and spills [default: a temporary folder]
    #[arg(long, value_name = "DIR")]
    work_dir: Option<String>,
    /// How long to keep trying to reach the scheduler at start
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    connect_timeout: String,
    /// How often to tell the scheduler it is alive (keep it well under the scheduler's --executor-timeout)
    #[arg(long, value_name = "DURATION", default_value = "3s")]
    heartbeat: String,
    /// Memory all its tasks may hold before sorts and aggregates spill to disk [env: MEDALLION_MEMORY_LIMIT_MB] [default: 1536]
    #[arg(long, value_name = "MB")]
    pub memory_limit_mb: Option<String>,
}

#[derive(Args)]
pub struct StatusArgs {
    /// The scheduler to ask
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:50050")]
    scheduler: String,
    /// Print the status as JSON
    #[arg(long)]
    json: bool,
}

/// The memory flag of `cluster executor`, for the configuration.
pub fn memory_limit_flag(command: &ClusterCommand) -> Option<String> {
    match command {
        ClusterCommand::Executor(args) => args.memory_limit_mb.clone(),
        _ => None,
    }
}

pub async fn run(config: &Config, command: &ClusterCommand) -> Result<()> {
    match command {
        ClusterCommand::Scheduler(args) => run_scheduler(args).await,
        ClusterCommand::Executor(args) => run_executor(config, args).await,
        ClusterCommand::Status(args) => show_status(args).await,
    }
}

async fn run_scheduler(args: &SchedulerArgs) -> Result<()> {
    let bind: SocketAddr = args
        .bind
        .parse()
        .with_context(|| format!("invalid --bind '{}': expected IP:PORT such as 127.0.0.1:50050", args.bind))?;
    let executor_timeout = duration("--executor-timeout", &args.executor_timeout)?;
    let stall_timeout = duration("--stall-timeout", &args.stall_timeout)?;
    let options =
        scheduler::SchedulerOptions { bind, external_host: args.external_host.clone(), executor_timeout, stall_timeout };
    scheduler::run(options, medallion::jobs::stop_signal(), |bound| {
        println!("medallion cluster scheduler listening on {bound} (Ballista {})", medallion::cluster::BALLISTA_VERSION);
        println!("  executors: medallion cluster executor --scheduler {bound}");
        println!("  clients:   medallion run --engine ballista://{bound}");
    })
    .await?;
    println!("scheduler stopped");
    Ok(())
}

async fn run_executor(config: &Config, args: &ExecutorArgs) -> Result<()> {
    let (host, port) = host_port("--scheduler", &args.scheduler)?;
    let slots = args.slots.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));
    if slots == 0 {
        anyhow::bail!("--slots must be at least 1");
    }
    let options = executor::ExecutorOptions {
        scheduler_host: host,
        scheduler_port: port,
        bind_host: args.bind_host.clone(),
        external_host: args.external_host.clone(),
        port: args.port,
        grpc_port: args.grpc_port,
        slots,
        memory_limit: config.memory_limit,
        work_dir: args.work_dir.clone(),
        connect_timeout: duration("--connect-timeout", &args.connect_timeout)?,
        heartbeat: duration("--heartbeat", &args.heartbeat)?,
        s3: config.s3.clone(),
    };
    println!(
        "medallion cluster executor: {slots} slot(s), data on {}:{}, tasks on {}:{}, scheduler {}",
        args.bind_host, args.port, args.bind_host, args.grpc_port, args.scheduler
    );
    executor::run(options).await?;
    println!("executor stopped");
    Ok(())
}

async fn show_status(args: &StatusArgs) -> Result<()> {
    let (host, port) = host_port("--scheduler", &args.scheduler)?;
    let cluster = status::fetch(&host, port, Duration::from_secs(5)).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&cluster)?);
        return Ok(());
    }
    println!(
        "scheduler {} (Ballista {}): {} executor(s), {} slot(s), {} job(s) running",
        cluster.scheduler,
        cluster.version,
        cluster.executors.len(),
        cluster.slots(),
        cluster.running_jobs()
    );
    if !cluster.executors.is_empty() {
        println!("\n{:<38} {:<22} {:>5}  last heartbeat", "executor", "address", "slots");
        for executor in &cluster.executors {
            let seen = executor.last_seen_seconds.map(|s| format!("{s} s ago")).unwrap_or_else(|| "none yet".into());
            println!("{:<38} {:<22} {:>5}  {seen}", executor.id, executor.address, executor.slots);
        }
    }
    if !cluster.jobs.is_empty() {
        println!("\n{:<12} {:<11} {:>7} {:>9}  name", "job", "state", "stages", "seconds");
        for job in cluster.jobs.iter().take(20) {
            println!(
                "{:<12} {:<11} {:>3}/{:<3} {:>9.1}  {}{}",
                job.id,
                job.state,
                job.completed_stages,
                job.stages,
                job.seconds,
                job.name,
                job.reason.as_deref().map(|reason| format!(" ({reason})")).unwrap_or_default()
            );
        }
    }
    Ok(())
}

fn duration(flag: &str, text: &str) -> Result<Duration> {
    parse_duration(text).map_err(|_| anyhow::anyhow!("invalid {flag} '{text}': expected a duration such as 500ms, 5s or 2m"))
}

fn host_port(flag: &str, text: &str) -> Result<(String, u16)> {
    let invalid = || anyhow::anyhow!("invalid {flag} '{text}': expected HOST:PORT such as 127.0.0.1:50050");
    let (host, port) = text.rsplit_once(':').ok_or_else(invalid)?;
    let port: u16 = port.parse().map_err(|_| invalid())?;
    if host.is_empty() || port == 0 {
        return Err(invalid());
    }
    Ok((host.to_string(), port))
}
