//! The serving layer: a web dashboard, a JSON/CSV/Arrow HTTP API with
//! read-only SQL, and a read-only PostgreSQL wire endpoint for psql and BI
//! tools — all over one shared DataFusion session that sees every Delta table
//! of the lake, the live tables of the stream and the combined views.
//!
//! * `state`     — the shared session (built by `lake::session`), kept
//!   current with the lake; caches
//! * `readonly`  — which statements are allowed (SELECT / WITH / EXPLAIN …)
//! * `http`      — axum routes, bearer-token auth, SSE
//! * `response`  — `ApiError` and `text_response`, shared by the handlers
//! * `sql`       — `POST /api/sql`: limit, timeout, JSON / CSV / Arrow IPC
//! * `cluster`   — `GET /api/cluster`: the engine, and a cluster's scheduler,
//!   executors and jobs
//! * `metrics`   — Prometheus text
//! * `pg`        — the PostgreSQL wire endpoint (datafusion-postgres)
//! * `pg_comments` — the glossary as PostgreSQL comments (`obj_description`, `col_description`)
//! * `bench`     — the load generator behind `scripts/bench-serve.sh`
//! * `tls`       — the HTTPS listener (`[tls]`; the PostgreSQL endpoint
//!   negotiates TLS itself, see `pg`)
//!
//! `run` serves until Ctrl-C; `start` binds and returns a `Server` with the
//! bound addresses (tests bind port 0). The stream calls either with the
//! `LiveHandle` it publishes to and `follow_lake_live: false`; `medallion
//! serve` alone follows `gold.live_sales_by_country` instead.

pub mod bench;
mod cluster;
mod governance;
mod http;
mod metrics;
mod pg;
mod pg_comments;
mod readonly;
mod response;
mod sql;
mod state;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::{Config, Engine};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::live::LiveHandle;

pub use readonly::check_read_only;
pub use state::{AppState, ServiceReport};

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// HTTP address (dashboard + API). Port 0 picks a free port.
    pub http_addr: SocketAddr,
    /// PostgreSQL wire address; `None` disables the endpoint.
    pub pg_addr: Option<SocketAddr>,
    /// Refresh the live state from `gold.live_sales_by_country` (true when no
    /// stream runs in this process).
    pub follow_lake_live: bool,
    /// How often the session looks for new Delta versions.
    pub refresh_interval: Duration,
    /// Most rows `POST /api/sql` returns.
    pub sql_row_limit: usize,
    /// Longest a `POST /api/sql` query may run.
    pub sql_timeout: Duration,
    /// Longest a PostgreSQL-wire statement may run (a client's own `SET
    /// statement_timeout` can only lower it): past it the query is cancelled
    /// with SQLSTATE 57014.
    pub pg_statement_timeout: Duration,
    /// Queries `/api/sql` and the PostgreSQL wire each run at once; past it a
    /// query waits for a slot up to its timeout, then is refused.
    pub max_concurrent_queries: usize,
    /// Where `/api/sql` runs the queries of the identities that see the lake
    /// in clear (`medallion serve --engine`): a Ballista cluster, checked to
    /// answer when the server starts, or this process. Everything else (the
    /// dashboard API, the PostgreSQL wire, time travel, masked roles) stays
    /// local.
    pub engine: Engine,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            pg_addr: Some(SocketAddr::from(([127, 0, 0, 1], 15432))),
            follow_lake_live: true,
            refresh_interval: Duration::from_secs(1),
            sql_row_limit: 10_000,
            sql_timeout: Duration::from_secs(30),
            pg_statement_timeout: Duration::from_secs(30),
            max_concurrent_queries: 2 * std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            engine: Engine::Local,
        }
    }
}

/// A running server.
pub struct Server {
    http_addr: SocketAddr,
    pg_addr: Option<SocketAddr>,
    state: Arc<AppState>,
    tasks: Vec<JoinHandle<()>>,
}

impl Server {
    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound PostgreSQL wire address, when enabled.
    pub fn pg_addr(&self) -> Option<SocketAddr> {
        self.pg_addr
    }

    /// The shared state (session, live handle).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Stops accepting, lets open HTTP requests finish, waits for the
    /// tasks, then writes what the audit log still holds.
    pub async fn shutdown(self) {
        let _ = self.state.shutdown.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        self.state.audit.close().await;
    }
}

/// Binds the endpoints, loads the lake into the session and starts serving.
pub async fn start(config: &Config, lake: Lake, live: LiveHandle, options: ServeOptions) -> Result<Server> {
    let http_listener = bind(options.http_addr, "HTTP", "--addr").await?;
    let pg_listener = match options.pg_addr {
        Some(addr) => Some(bind(addr, "PostgreSQL wire", "--pg-addr").await?),
        None => None,
    };
    // The certificate and key are read once, before anything is served.
    let (http_tls, pg_tls) = match &config.tls.identity {
        Some(identity) => (
            Some(crate::tls::server_config(identity, &[b"http/1.1"])?),
            Some(crate::tls::server_config(identity, &[b"postgresql"])?),
        ),
        None => (None, None),
    };
    let audit = crate::audit::AuditLog::start(config, &lake);
    let state = AppState::new(config, lake, live, options.clone(), audit).await?;
    let signal = state.shutdown.subscribe();
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(state::refresh_loop(state.clone(), signal.clone())));

    let http_addr = local_addr(&http_listener)?;
    let router = http::router(state.clone());
    let http_signal = signal.clone();
    tasks.push(tokio::spawn(async move {
        let stop = stopped(http_signal);
        let served = match http_tls {
            Some(tls) => match tls::TlsListener::new(http_listener, tls) {
                Ok(listener) => axum::serve(listener, router).with_graceful_shutdown(stop).await,
                Err(err) => Err(err),
            },
            None => axum::serve(http_listener, router).with_graceful_shutdown(stop).await,
        };
        if let Err(err) = served {
            tracing::error!("HTTP server stopped: {err}");
        }
    }));

    let mut pg_addr = None;
    if let Some(listener) = pg_listener {
        pg_addr = Some(local_addr(&listener)?);
        let handlers = pg::handlers(&state, config.tls.require_tls).await?;
        let tls = pg_tls.map(tokio_rustls::TlsAcceptor::from);
        tasks.push(tokio::spawn(pg::accept_loop(listener, handlers, tls, signal.clone())));
    }
    Ok(Server { http_addr, pg_addr, state, tasks })
}

/// Serves until Ctrl-C (or SIGTERM), printing where to connect.
pub async fn run(config: &Config, lake: Lake, live: LiveHandle, options: ServeOptions) -> Result<()> {
    let server = start(config, lake, live, options).await?;
    let auth = if server.state().tokens.is_open() { "" } else { " (token required)" };
    println!("dashboard   {}://{}/{auth}", config.tls.scheme(), server.http_addr());
    if let Some(pg) = server.pg_addr() {
        println!("PostgreSQL  psql -h {} -p {} -U medallion -d lake{auth}{}", pg.ip(), pg.port(), config.tls.pg_note());
    }
    match &server.state().options.engine {
        Engine::Local => println!("engine      local (this process)"),
        engine => println!("engine      {engine} (/api/sql of the identities that see PII in clear; the rest in this process)"),
    }
    println!("Ctrl-C stops the server.");
    crate::jobs::stop_signal().await;
    server.shutdown().await;
    Ok(())
}

async fn bind(addr: SocketAddr, what: &str, flag: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        Error::Config(format!("cannot listen for {what} on {addr}: {e}; choose another address with {flag}"))
    })
}

/// Resolves once shutdown is requested.
pub(crate) async fn stopped(mut signal: tokio::sync::watch::Receiver<bool>) {
    let _ = signal.wait_for(|stop| *stop).await.is_ok();
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr> {
    listener.local_addr().map_err(|e| Error::other("listening socket", e))
}
