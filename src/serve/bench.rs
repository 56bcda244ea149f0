//! A small load generator for the serving layer (`medallion bench-serve`,
//! run by `scripts/bench-serve.sh`): N concurrent clients, each on its own
//! keep-alive connection, repeat one request for a fixed time; the report
//! gives requests/s and latency percentiles. Not a test: figures, printed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::error::{Error, Result};

/// What one load run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub name: String,
    pub clients: usize,
    pub requests: usize,
    pub errors: usize,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl LoadReport {
    pub fn requests_per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn from_latencies(name: &str, clients: usize, mut latencies: Vec<Duration>, errors: usize, elapsed: Duration) -> LoadReport {
        latencies.sort();
        let at = |q: f64| {
            if latencies.is_empty() {
                Duration::ZERO
            } else {
                latencies[((latencies.len() - 1) as f64 * q).round() as usize]
            }
        };
        LoadReport {
            name: name.to_string(),
            clients,
            requests: latencies.len(),
            errors,
            elapsed,
            p50: at(0.50),
            p99: at(0.99),
            max: latencies.last().copied().unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<28} {:>3} clients {:>9.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms   ({} requests, {} errors)",
            self.name,
            self.clients,
            self.requests_per_second(),
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
            self.max.as_secs_f64() * 1e3,
            self.requests,
            self.errors
        )
    }
}

/// `clients` connections repeating `GET path` for `duration`.
pub async fn http_get(addr: SocketAddr, path: &str, token: Option<&str>, clients: usize, duration: Duration) -> Result<LoadReport> {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}\r\n").into_bytes();
    http_load(addr, request, &format!("HTTP GET {path}"), clients, duration).await
}

/// `clients` connections repeating `POST /api/sql` of `sql` for `duration`.
pub async fn http_sql(addr: SocketAddr, sql: &str, token: Option<&str>, clients: usize, duration: Duration) -> Result<LoadReport> {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let body = serde_json::json!({ "sql": sql }).to_string();
    let request = format!(
        "POST /api/sql HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes();
    http_load(addr, request, &format!("HTTP /api/sql {}", sql.chars().take(30).collect::<String>()), clients, duration).await
}

/// `clients` keep-alive connections sending `request` for `duration`; a
/// 200 answer counts.
async fn http_load(addr: SocketAddr, request: Vec<u8>, name: &str, clients: usize, duration: Duration) -> Result<LoadReport> {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..clients {
        let request = request.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            let mut connection: Option<BufReader<TcpStream>> = None;
            while Instant::now() < deadline {
                if connection.is_none() {
                    match TcpStream::connect(addr).await {
                        Ok(stream) => {
                            let _ = stream.set_nodelay(true);
                            connection = Some(BufReader::new(stream));
                        }
                        Err(_) => {
                            errors += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
                let stream = connection.as_mut().expect("connected");
                let sent = Instant::now();
                match http_round_trip(stream, &request).await {
                    Ok(200) => latencies.push(sent.elapsed()),
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        connection = None;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    collect(name, clients, workers, started).await
}

/// One request on a keep-alive connection; returns the status.
async fn http_round_trip(stream: &mut BufReader<TcpStream>, request: &[u8]) -> std::io::Result<u16> {
    stream.get_mut().write_all(request).await?;
    let mut line = String::new();
    let mut status = 0u16;
    let mut length = 0usize;
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if status == 0 {
            status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        } else if line == "\r\n" {
            break;
        } else if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    Ok(status)
}

/// `clients` PostgreSQL connections repeating `sql` (simple protocol).
pub async fn pg_query(addr: SocketAddr, sql: &str, token: Option<&str>, clients: usize, duration: Duration) -> Result<LoadReport> {
    let mut url = format!("host={} port={} user=bench dbname=lake", addr.ip(), addr.port());
    if let Some(token) = token {
        url.push_str(&format!(" password={token}"));
    }
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..clients {
        let url = url.clone();
        let sql = sql.to_string();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            let Ok((client, connection)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await else {
                return (latencies, 1);
            };
            tokio::spawn(connection);
            while Instant::now() < deadline {
                let sent = Instant::now();
                match client.simple_query(&sql).await {
                    Ok(_) => latencies.push(sent.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    collect(&format!("PG wire {}", sql.chars().take(40).collect::<String>()), clients, workers, started).await
}

async fn collect(
    name: &str,
    clients: usize,
    workers: Vec<tokio::task::JoinHandle<(Vec<Duration>, usize)>>,
    started: Instant,
) -> Result<LoadReport> {
    let mut latencies = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let (mut lat, err) = worker.await.map_err(|e| Error::other("load client", e))?;
        latencies.append(&mut lat);
        errors += err;
    }
    Ok(LoadReport::from_latencies(name, clients, latencies, errors, started.elapsed()))
}
