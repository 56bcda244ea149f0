//! medallion-s3: the S3-compatible server the test suite runs against.
//!
//! It serves a folder (one sub-folder per bucket) with the store of the
//! `s3s-fs` crate, signed requests only. One thing is added: s3s-fs checks a
//! conditional write (`If-None-Match: *`, `If-Match: <etag>`) and then
//! writes, as two steps, so two writers racing for the same Delta log entry
//! could both be told they won. Real S3 and MinIO decide such a write
//! atomically; here every conditional request is served under one lock, so
//! the check and the write of one can never interleave with another's.
//!
//! Usage (the command line of s3s-fs, which scripts/s3.sh used before):
//!   medallion-s3 --host H --port P --access-key K --secret-key S <root>

use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnectionBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

struct Options {
    host: String,
    port: u16,
    access_key: String,
    secret_key: String,
    root: String,
}

fn options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let (mut host, mut port, mut access_key, mut secret_key, mut root) = (None, None, None, None, None);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--host" => host = Some(value("--host")?),
            "--port" => port = Some(value("--port")?.parse::<u16>().map_err(|e| format!("--port: {e}"))?),
            "--access-key" => access_key = Some(value("--access-key")?),
            "--secret-key" => secret_key = Some(value("--secret-key")?),
            other if !other.starts_with("--") && root.is_none() => root = Some(other.to_string()),
            other => return Err(format!("unexpected argument {other}")),
        }
    }
    Ok(Options {
        host: host.unwrap_or_else(|| "127.0.0.1".into()),
        port: port.unwrap_or(8014),
        access_key: access_key.ok_or("--access-key is required")?,
        secret_key: secret_key.ok_or("--secret-key is required")?,
        root: root.ok_or("the folder to serve is required")?,
    })
}

#[tokio::main]
async fn main() {
    // Request logs on stderr at the level of RUST_LOG (scripts/bench-s3.sh
    // counts the S3 operations from them).
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_writer(std::io::stderr).init();
    let options = match options() {
        Ok(options) => options,
        Err(problem) => {
            eprintln!("medallion-s3: {problem}\nusage: medallion-s3 --host H --port P --access-key K --secret-key S <folder>");
            std::process::exit(2);
        }
    };
    if let Err(problem) = serve(options).await {
        eprintln!("medallion-s3: {problem}");
        std::process::exit(1);
    }
}

async fn serve(options: Options) -> Result<(), String> {
    let store = s3s_fs::FileSystem::new(&options.root).map_err(|e| format!("cannot serve {}: {e:?}", options.root))?;
    let mut builder = S3ServiceBuilder::new(store);
    builder.set_auth(SimpleAuth::from_single(options.access_key, options.secret_key));
    let s3 = builder.build();
    let conditional_writes = Arc::new(tokio::sync::Mutex::new(()));
    let listener = tokio::net::TcpListener::bind((options.host.as_str(), options.port))
        .await
        .map_err(|e| format!("cannot listen on {}:{}: {e}", options.host, options.port))?;
    let connections = ConnectionBuilder::new(TokioExecutor::new());
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(_) => continue,
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let (s3, conditional_writes) = (s3.clone(), conditional_writes.clone());
        let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let (s3, conditional_writes) = (s3.clone(), conditional_writes.clone());
            async move {
                let headers = request.headers();
                let conditional = headers.contains_key("if-none-match") || headers.contains_key("if-match");
                // Held until the response is ready: the whole check-and-write.
                let _turn = if conditional { Some(conditional_writes.lock_owned().await) } else { None };
                s3.call(request.map(s3s::Body::from)).await
            }
        });
        let connection = connections.serve_connection(TokioIo::new(socket), service).into_owned();
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}
