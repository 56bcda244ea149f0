//! The PostgreSQL wire endpoint: psql, Metabase, Superset, Grafana, DBeaver
//! connect to the lake as to a (read-only) PostgreSQL database.
//!
//! Built on datafusion-postgres over the shared session (one service per
//! role: a reader's or analyst's connection queries its role's session, PII
//! hidden; see `serve::state`), with its pg_catalog
//! emulation so tools can list schemas, tables and columns. Three things are
//! ours: a hook that runs first and refuses every statement that is neither
//! a read-only query nor a harmless session statement (see `readonly`); the
//! startup, which asks for a token as the password when any is configured
//! (any user name) and keeps the token's name and role in the connection's
//! metadata (`identity_of`); the limits (`Limited`: a statement timeout and a cap on
//! the queries running at once); and the accept loop, so the endpoint binds
//! where we say (port 0 in tests) and stops on shutdown. With `[tls]` the
//! endpoint accepts SSLRequest (`sslmode=require`) and direct TLS; with
//! `require_tls` the startup of an unencrypted connection is refused with a
//! FATAL error. Every statement is recorded in the audit log (`crate::audit`,
//! endpoint `pg`) once its last row is sent, and so is every failed login; a
//! reader's or analyst's statement that names the audit log is refused
//! (SQLSTATE 42501) by a hook of their services.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::auth::cleartext::CleartextPasswordAuthStartupHandler;
use datafusion_postgres::pgwire::api::auth::noop::NoopStartupHandler;
use datafusion_postgres::pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use datafusion_postgres::pgwire::api::cancel::DefaultCancelHandler;
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::results::Response;
use datafusion_postgres::pgwire::api::{ClientInfo, ConnectionManager, ErrorHandler, PgWireServerHandlers};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::startup::PasswordMessageFamily;
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use datafusion_postgres::{DfSessionService, QueryHook};
use datafusion_postgres::pgwire::api::portal::{Format, Portal};
use datafusion_postgres::pgwire::api::results::FieldInfo;
use datafusion_postgres::pgwire::api::stmt::QueryParser;
use datafusion_postgres::pgwire::api::Type;
use datafusion_postgres::pgwire::api::results::SendableRowStream;
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::api::ClientPortalStore;
use datafusion_postgres::Parser;
use datafusion_postgres::pgwire::tokio::TlsAcceptor;
use futures::{Sink, StreamExt};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::pg_comments::Comments;
use super::readonly::{is_read_only_query, is_session_statement, keyword, refusal};
use super::state::AppState;
use crate::audit::{self, AuditLog, Endpoint, Outcome};
use crate::config::{Identity, Role, Tokens};
use crate::error::{Error, Result};
use crate::glossary::Glossary;

/// Everything a connection needs.
pub struct PgHandlers {
    service: Arc<Limited>,
    startup: Arc<SecureStartup>,
    cancel: Arc<DefaultCancelHandler>,
}

/// Builds the handlers over the shared session (adds `pg_catalog` to it);
/// `require_tls` refuses unencrypted clients.
pub async fn handlers(state: &Arc<AppState>, require_tls: bool) -> Result<Arc<PgHandlers>> {
    let mut described = Vec::new();
    let mut service = |ctx: &Arc<SessionContext>, role: Role| -> Result<Arc<DfSessionService>> {
        setup_pg_catalog(ctx, "datafusion", EmptyContextProvider).map_err(|e| Error::other("PostgreSQL catalog emulation", e))?;
        // Each session's catalog numbers its tables itself: comments per session.
        let comments = Arc::new(Comments::default());
        comments.register(ctx);
        described.push((ctx.clone(), comments));
        let mut hooks: Vec<Arc<dyn QueryHook>> = vec![Arc::new(ReadOnlyHook)];
        hooks.push(Arc::new(AuditHook { role, state: Arc::downgrade(state) }));
        hooks.push(Arc::new(CursorStatementHook));
        hooks.push(Arc::new(SetShowHook));
        hooks.push(Arc::new(TransactionStatementHook));
        Ok(Arc::new(DfSessionService::new_with_hooks(ctx.clone(), hooks)))
    };
    let admin = service(&state.ctx, Role::Admin)?;
    let mut roles = Vec::new();
    for (role, ctx) in &state.role_sessions {
        roles.push((*role, service(ctx, *role)?));
    }
    // The first comments before the first client, then kept current.
    let glossary = Glossary::load(state.models_dir.as_deref())?;
    for (ctx, comments) in &described {
        comments.refresh(ctx, &glossary).await;
    }
    tokio::spawn(keep_comments_current(described, glossary, state.shutdown.subscribe()));
    let parser = Arc::new(RoleParser {
        admin: admin.query_parser(),
        roles: roles.iter().map(|(role, service)| (*role, service.query_parser())).collect(),
        audit: state.audit.clone(),
    });
    let service = Arc::new(Limited {
        admin,
        roles,
        parser,
        audit: state.audit.clone(),
        timeout: state.options.pg_statement_timeout,
        slots: Arc::new(Semaphore::new(state.options.max_concurrent_queries.max(1))),
        max: state.options.max_concurrent_queries.max(1),
    });
    let connections = Arc::new(ConnectionManager::new());
    let startup = if state.tokens.is_open() {
        Startup::Open(OpenStartup { connections: connections.clone() })
    } else {
        Startup::Token(TokenStartup {
            tokens: state.tokens.clone(),
            audit: state.audit.clone(),
            inner: CleartextPasswordAuthStartupHandler::new(PresentedSource, DefaultServerParameterProvider::default())
                .with_connection_manager(connections.clone()),
        })
    };
    let startup = SecureStartup { inner: startup, require_tls };
    Ok(Arc::new(PgHandlers {
        service,
        startup: Arc::new(startup),
        cancel: Arc::new(DefaultCancelHandler::new(connections)),
    }))
}

/// How often the comments follow tables that appeared in the lake.
const COMMENTS_REFRESH: Duration = Duration::from_secs(10);

/// Refreshes each session's comments every `COMMENTS_REFRESH` until shutdown.
async fn keep_comments_current(
    sessions: Vec<(Arc<SessionContext>, Arc<Comments>)>,
    glossary: Glossary,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(COMMENTS_REFRESH) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        for (ctx, comments) in &sessions {
            comments.refresh(ctx, &glossary).await;
        }
    }
}

/// Accepts connections until shutdown; each runs on its own task (TLS
/// negotiation included, when `tls` is given).
pub async fn accept_loop(
    listener: TcpListener,
    handlers: Arc<PgHandlers>,
    tls: Option<TlsAcceptor>,
    shutdown: watch::Receiver<bool>,
) {
    let stop = super::stopped(shutdown);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    let handlers = handlers.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        if let Err(err) = datafusion_postgres::pgwire::tokio::process_socket(socket, tls, handlers).await {
                            tracing::debug!("PostgreSQL connection ended: {err}");
                        }
                    });
                }
                Err(err) => tracing::warn!("PostgreSQL endpoint cannot accept a connection: {err}"),
            },
            _ = &mut stop => break,
        }
    }
}

impl PgWireServerHandlers for PgHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.service.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.service.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(QuietErrors)
    }

    fn cancel_handler(&self) -> Arc<impl datafusion_postgres::pgwire::api::cancel::CancelHandler> {
        self.cancel.clone()
    }
}

/// Client errors are the client's business: logged at debug level only.
struct QuietErrors;

impl ErrorHandler for QuietErrors {
    fn on_error<C>(&self, _client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        tracing::debug!("PostgreSQL client error: {error}");
    }
}

tokio::task_local! {
    /// The password of the startup being checked, once `TokenStartup` has
    /// recognised it as a configured token.
    static RECOGNISED: Vec<u8>;
}

/// Gives pgwire's cleartext handler the password `TokenStartup` recognised,
/// so it accepts it and does the rest (keys, registration for cancel,
/// parameters); anything else never matches.
#[derive(Debug)]
struct PresentedSource;

#[async_trait]
impl AuthSource for PresentedSource {
    async fn get_password(&self, _login: &LoginInfo) -> PgWireResult<Password> {
        let expected = RECOGNISED.try_with(Clone::clone).unwrap_or_default();
        // No recognised token: a password no client can send (it is never empty).
        Ok(Password::new(None, if expected.is_empty() { vec![0xff; 80] } else { expected }))
    }
}

/// A token as the password of any user: recognised among the configured
/// tokens, its name and role go into the connection's metadata.
struct TokenStartup {
    tokens: Tokens,
    audit: AuditLog,
    inner: CleartextPasswordAuthStartupHandler<PresentedSource, DefaultServerParameterProvider>,
}

/// Metadata keys of a connection's identity.
const TOKEN_NAME: &str = "medallion.token_name";
const ROLE: &str = "medallion.role";

fn remember<C: ClientInfo + ?Sized>(client: &mut C, identity: &Identity) {
    client.metadata_mut().insert(TOKEN_NAME.to_string(), identity.name.clone());
    client.metadata_mut().insert(ROLE.to_string(), identity.role.as_str().to_string());
}

/// The identity of a connection (set at startup).
pub fn identity_of<C: ClientInfo + ?Sized>(client: &C) -> Identity {
    let metadata = client.metadata();
    match (metadata.get(TOKEN_NAME), metadata.get(ROLE).and_then(|r| Role::parse(r))) {
        (Some(name), Some(role)) => Identity { name: name.clone(), role },
        // Never reached: startup sets both before any query (an open server included).
        _ => Identity { name: "unknown".into(), role: Role::Reader },
    }
}

/// No token configured: no password asked.
struct OpenStartup {
    connections: Arc<ConnectionManager>,
}

impl NoopStartupHandler for OpenStartup {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.connections.clone())
    }
}

/// Open or token-protected startup, chosen once at start.
enum Startup {
    Open(OpenStartup),
    Token(TokenStartup),
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self {
            Startup::Open(handler) => {
                remember(client, &Identity::anonymous());
                handler.on_startup(client, message).await
            }
            Startup::Token(handler) => handler.on_startup(client, message).await,
        }
    }
}

impl TokenStartup {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let PgWireFrontendMessage::PasswordMessageFamily(family) = message else {
            return self.inner.on_startup(client, message).await;
        };
        let password = family.into_password()?;
        let Some(identity) = self.tokens.identify(&password.password) else {
            let user = client.metadata().get("user").cloned().unwrap_or_default();
            self.audit.failed_login(
                Endpoint::Pg,
                format!("login failed for user '{user}' from {}: the password matches no configured token", client.socket_addr().ip()),
            );
            return Err(PgWireError::InvalidPassword(user));
        };
        remember(client, &identity);
        let presented = password.password.as_bytes().to_vec();
        let message = PgWireFrontendMessage::PasswordMessageFamily(PasswordMessageFamily::Password(password));
        RECOGNISED.scope(presented, self.inner.on_startup(client, message)).await
    }
}

/// The startup, behind the `require_tls` check: a client that did not
/// negotiate TLS is refused before it is asked for a password.
struct SecureStartup {
    inner: Startup,
    require_tls: bool,
}

#[async_trait]
impl StartupHandler for SecureStartup {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if self.require_tls && !client.is_secure() {
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".to_string(),
                "28000".to_string(), // invalid_authorization_specification, as PostgreSQL's pg_hba refusal
                "this server requires TLS: connect with sslmode=require (or verify-ca / verify-full)".to_string(),
            ))));
        }
        self.inner.on_startup(client, message).await
    }
}

/// Refuses anything that could write, before any other hook or the planner.
struct ReadOnlyHook;

impl ReadOnlyHook {
    fn verdict(statement: &Statement) -> Option<PgWireError> {
        if is_read_only_query(statement) || is_session_statement(statement) {
            return None;
        }
        Some(PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".to_string(),
            "25006".to_string(), // read_only_sql_transaction
            refusal(&keyword(statement)),
        ))))
    }
}

#[async_trait]
impl QueryHook for ReadOnlyHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        Self::verdict(statement).map(Err)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        Self::verdict(statement).map(Err)
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        Self::verdict(statement).map(Err)
    }
}

/// The audit log on the PostgreSQL wire: a reader's or analyst's statement
/// that names it is refused in one line (SQLSTATE 42501) instead of the
/// planner's "table not found"; an admin's is let through after the log is
/// brought up to date (`AppState::follow_audit`).
struct AuditHook {
    role: Role,
    /// Weak: the handlers must not keep the server's state alive.
    state: std::sync::Weak<AppState>,
}

impl AuditHook {
    async fn verdict(&self, statement: &Statement) -> Option<PgWireError> {
        if self.role != Role::Admin {
            return audit::refusal_of_statement(self.role, statement).map(|message| user_error("42501", message)); // insufficient_privilege
        }
        if audit::names_audit_log(statement) {
            if let Some(state) = self.state.upgrade() {
                state.follow_audit().await;
            }
        }
        None
    }
}

#[async_trait]
impl QueryHook for AuditHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.verdict(statement).await.map(Err)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        self.verdict(statement).await.map(Err)
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.verdict(statement).await.map(Err)
    }
}

/// How an audit record names the end of a statement that failed with `error`.
fn outcome_of(error: &PgWireError) -> (Outcome, String) {
    match error {
        PgWireError::UserError(info) => outcome_of_info(info),
        other => (Outcome::Error, other.to_string()),
    }
}

fn outcome_of_info(info: &ErrorInfo) -> (Outcome, String) {
    let outcome = match info.code.as_str() {
        "57014" => Outcome::Timeout,
        // read_only_sql_transaction, insufficient_privilege, insufficient_resources
        "25006" | "42501" | "53000" => Outcome::Refused,
        _ => Outcome::Error,
    };
    (outcome, info.message.clone())
}

/// One statement's audit record, filled in while its rows stream: recorded
/// when the last holder lets go (every row stream sent or dropped), so the
/// duration and the row count cover the whole answer.
struct Pending {
    query: Mutex<Option<audit::Query>>,
    rows: AtomicU64,
    failure: Mutex<Option<(Outcome, String)>>,
}

impl Pending {
    fn new(query: audit::Query) -> Arc<Pending> {
        Arc::new(Pending { query: Mutex::new(Some(query)), rows: AtomicU64::new(0), failure: Mutex::new(None) })
    }

    fn fail(&self, error: &PgWireError) {
        self.note(outcome_of(error));
    }

    /// Keeps the first failure.
    fn note(&self, outcome: (Outcome, String)) {
        let mut failure = self.failure.lock().expect("audit lock");
        if failure.is_none() {
            *failure = Some(outcome);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some(query) = self.query.lock().expect("audit lock").take() else { return };
        match self.failure.lock().expect("audit lock").take() {
            Some((outcome, message)) => query.failed(outcome, message),
            None => query.ok(self.rows.load(Ordering::Relaxed)),
        }
    }
}

/// `rows`, counted into `pending` (and its first error noted).
fn audited(rows: SendableRowStream, pending: Arc<Pending>) -> SendableRowStream {
    Box::pin(rows.map(move |row| {
        match &row {
            Ok(_) => {
                pending.rows.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => pending.fail(error),
        }
        row
    }))
}

/// The query handlers of `DfSessionService` within the endpoint's limits.
///
/// Every statement gets a deadline: the configured `pg_statement_timeout`,
/// or the client's own `SET statement_timeout` when shorter. It first waits
/// for one of `max` slots (refused with SQLSTATE 53000 when none frees up
/// before the deadline), then plans and runs; its rows are streamed to the
/// client through `bounded`, which holds the slot until the last row and
/// cancels the query (its DataFusion stream is dropped) with SQLSTATE 57014
/// when the deadline passes.
pub struct Limited {
    /// The admin's service, over the server's main session.
    admin: Arc<DfSessionService>,
    /// One per restricted role, over that role's session (PII hidden).
    roles: Vec<(Role, Arc<DfSessionService>)>,
    parser: Arc<RoleParser>,
    audit: AuditLog,
    timeout: Duration,
    slots: Arc<Semaphore>,
    max: usize,
}

impl Limited {
    /// The service of the connection's role.
    fn service_for<C: ClientInfo + ?Sized>(&self, client: &C) -> &DfSessionService {
        let role = identity_of(client).role;
        self.roles.iter().find(|(r, _)| *r == role).map(|(_, s)| s.as_ref()).unwrap_or(self.admin.as_ref())
    }

    /// The statement's deadline and its slot.
    async fn admit<C: ClientInfo + ?Sized>(&self, client: &C) -> PgWireResult<(Instant, Duration, Arc<OwnedSemaphorePermit>)> {
        // Where datafusion-postgres's `SET statement_timeout` keeps the value.
        let own = client.metadata().get("statement_timeout_ms").and_then(|ms| ms.parse::<u64>().ok());
        let timeout = match own {
            Some(ms) if ms > 0 => Duration::from_millis(ms).min(self.timeout),
            _ => self.timeout,
        };
        let deadline = Instant::now() + timeout;
        let identity = identity_of(client);
        tracing::debug!(token = %identity.name, role = %identity.role, "PostgreSQL statement");
        match tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok((deadline, timeout, Arc::new(permit))),
            _ => Err(user_error(
                "53000", // insufficient_resources
                format!(
                    "the server is already running its {} queries (max_concurrent_queries) and none finished within {} ms: try again later",
                    self.max,
                    timeout.as_millis()
                ),
            )),
        }
    }

    /// `response` with its rows cut at the deadline and counted for the
    /// audit log; the slot is held until the rows are sent.
    fn bound(
        response: Response,
        deadline: Instant,
        timeout: Duration,
        permit: &Arc<OwnedSemaphorePermit>,
        pending: &Arc<Pending>,
    ) -> Response {
        match response {
            Response::Query(mut query) => {
                let rows = std::mem::replace(&mut query.data_rows, Box::pin(futures::stream::empty()));
                query.data_rows = audited(bounded(rows, deadline, timeout, permit.clone()), pending.clone());
                Response::Query(query)
            }
            Response::Error(info) => {
                pending.note(outcome_of_info(&info));
                Response::Error(info)
            }
            other => other,
        }
    }

    /// Starts the audit record of `statement` for the connection's token.
    fn audit<C: ClientInfo + ?Sized>(&self, client: &C, statement: &str) -> Arc<Pending> {
        Pending::new(self.audit.query(&identity_of(client), Endpoint::Pg, statement))
    }
}

/// The one-line error of a statement past its deadline.
fn timed_out(timeout: Duration) -> PgWireError {
    user_error(
        "57014", // query_canceled
        format!(
            "canceling statement due to statement timeout: it ran longer than {} ms (pg_statement_timeout); add filters or a LIMIT",
            timeout.as_millis()
        ),
    )
}

fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".to_string(), code.to_string(), message)))
}

/// `rows` until the deadline, then one timeout error; drops the inner stream
/// (cancelling the query's execution) and the slot as soon as it ends.
fn bounded(rows: SendableRowStream, deadline: Instant, timeout: Duration, permit: Arc<OwnedSemaphorePermit>) -> SendableRowStream {
    let sleep = Box::pin(tokio::time::sleep_until(deadline));
    Box::pin(futures::stream::unfold(Some((rows, sleep, permit)), move |state| async move {
        let (mut rows, mut sleep, permit) = state?;
        tokio::select! {
            biased;
            _ = &mut sleep => Some((Err(timed_out(timeout)), None)),
            row = rows.next() => row.map(|row| (row, Some((rows, sleep, permit)))),
        }
    }))
}

#[async_trait]
impl SimpleQueryHandler for Limited {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let pending = self.audit(client, query);
        let answered = async {
            let (deadline, timeout, permit) = self.admit(client).await?;
            let responses = tokio::time::timeout_at(deadline, SimpleQueryHandler::do_query(self.service_for(client), client, query))
                .await
                .map_err(|_| timed_out(timeout))??;
            Ok::<_, PgWireError>(responses.into_iter().map(|r| Limited::bound(r, deadline, timeout, &permit, &pending)).collect::<Vec<_>>())
        }
        .await;
        if let Err(error) = &answered {
            pending.fail(error);
        }
        answered
    }
}

#[async_trait]
impl ExtendedQueryHandler for Limited {
    type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;
    type QueryParser = RoleParser;

    fn query_parser(&self) -> Arc<RoleParser> {
        self.parser.clone()
    }

    async fn do_query<C>(&self, client: &mut C, portal: &Portal<Self::Statement>, max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let pending = self.audit(client, &portal.statement.statement.0);
        let answered = async {
            let (deadline, timeout, permit) = self.admit(client).await?;
            let response =
                tokio::time::timeout_at(deadline, ExtendedQueryHandler::do_query(self.service_for(client), client, portal, max_rows))
                    .await
                    .map_err(|_| timed_out(timeout))??;
            Ok::<_, PgWireError>(Limited::bound(response, deadline, timeout, &permit, &pending))
        }
        .await;
        if let Err(error) = &answered {
            pending.fail(error);
        }
        answered
    }
}

/// Plans a prepared statement in the session of the connection's role,
/// keeping its text as the client sent it (for the audit log); a statement
/// that fails here (refused, unknown table) never executes, so it is
/// recorded here.
pub struct RoleParser {
    admin: Arc<Parser>,
    roles: Vec<(Role, Arc<Parser>)>,
    audit: AuditLog,
}

impl RoleParser {
    fn parser_for<C: ClientInfo + ?Sized>(&self, client: &C) -> &Parser {
        let role = identity_of(client).role;
        self.roles.iter().find(|(r, _)| *r == role).map(|(_, p)| p.as_ref()).unwrap_or(self.admin.as_ref())
    }
}

#[async_trait]
impl QueryParser for RoleParser {
    type Statement = <Parser as QueryParser>::Statement;

    async fn parse_sql<C>(&self, client: &C, sql: &str, types: &[Option<Type>]) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let audit = self.audit.query(&identity_of(client), Endpoint::Pg, sql);
        match self.parser_for(client).parse_sql(client, sql, types).await {
            Ok(parsed) => Ok(parsed.map(|(_, planned)| (sql.to_string(), planned))),
            Err(error) => {
                let (outcome, message) = outcome_of(&error);
                audit.failed(outcome, message);
                Err(error)
            }
        }
    }

    fn get_parameter_types(&self, statement: &Self::Statement) -> PgWireResult<Vec<Type>> {
        // Reads the statement's plan only, the same in every session.
        self.admin.get_parameter_types(statement)
    }

    fn get_result_schema(&self, statement: &Self::Statement, format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        self.admin.get_result_schema(statement, format)
    }
}
