//! The PostgreSQL wire endpoint: psql, Metabase, Superset, Grafana, DBeaver
//! connect to the lake as to a (read-only) PostgreSQL database.
//!
//! Built on datafusion-postgres over the shared session, with its pg_catalog
//! emulation so tools can list schemas, tables and columns. Three things are
//! ours: a hook that runs first and refuses every statement that is neither
//! a read-only query nor a harmless session statement (see `readonly`); the
//! startup, which asks for the token as the password when one is configured
//! (any user name); and the accept loop, so the endpoint binds where we say
//! (port 0 in tests) and stops on shutdown. With `[tls]` the endpoint
//! accepts SSLRequest (`sslmode=require`) and direct TLS; with `require_tls`
//! the startup of an unencrypted connection is refused with a FATAL error.

use std::fmt::Debug;
use std::sync::Arc;

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
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use datafusion_postgres::{DfSessionService, QueryHook};
use datafusion_postgres::pgwire::tokio::TlsAcceptor;
use futures::Sink;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::readonly::{is_read_only_query, is_session_statement, keyword, refusal};
use super::state::AppState;
use crate::error::{Error, Result};

/// Everything a connection needs.
pub struct PgHandlers {
    service: Arc<DfSessionService>,
    startup: Arc<SecureStartup>,
    cancel: Arc<DefaultCancelHandler>,
}

/// Builds the handlers over the shared session (adds `pg_catalog` to it);
/// `require_tls` refuses unencrypted clients.
pub fn handlers(state: &Arc<AppState>, require_tls: bool) -> Result<Arc<PgHandlers>> {
    setup_pg_catalog(&state.ctx, "datafusion", EmptyContextProvider)
        .map_err(|e| Error::other("PostgreSQL catalog emulation", e))?;
    let hooks: Vec<Arc<dyn QueryHook>> = vec![
        Arc::new(ReadOnlyHook),
        Arc::new(CursorStatementHook),
        Arc::new(SetShowHook),
        Arc::new(TransactionStatementHook),
    ];
    let service = Arc::new(DfSessionService::new_with_hooks(state.ctx.clone(), hooks));
    let connections = Arc::new(ConnectionManager::new());
    let startup = match &state.token {
        Some(token) => Startup::Token(
            CleartextPasswordAuthStartupHandler::new(
                TokenSource { token: token.clone() },
                DefaultServerParameterProvider::default(),
            )
            .with_connection_manager(connections.clone()),
        ),
        None => Startup::Open(OpenStartup { connections: connections.clone() }),
    };
    let startup = SecureStartup { inner: startup, require_tls };
    Ok(Arc::new(PgHandlers {
        service,
        startup: Arc::new(startup),
        cancel: Arc::new(DefaultCancelHandler::new(connections)),
    }))
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

/// The token as the password of every user.
#[derive(Debug)]
struct TokenSource {
    token: String,
}

#[async_trait]
impl AuthSource for TokenSource {
    async fn get_password(&self, _login: &LoginInfo) -> PgWireResult<Password> {
        Ok(Password::new(None, self.token.as_bytes().to_vec()))
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
    Token(CleartextPasswordAuthStartupHandler<TokenSource, DefaultServerParameterProvider>),
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
            Startup::Open(handler) => handler.on_startup(client, message).await,
            Startup::Token(handler) => handler.on_startup(client, message).await,
        }
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
