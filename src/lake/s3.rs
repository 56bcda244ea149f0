//! S3 specifics of the lake: making sure the buckets exist, and turning S3
//! failures into one-line advice.
//!
//! object_store can read and write objects but cannot create a bucket, so the
//! bucket checks are two plain S3 requests on the bucket root (`HEAD` to see
//! whether it exists, `PUT` to create it), signed by object_store's own SigV4
//! signer as presigned URLs and sent with object_store's HTTP client. The same
//! credentials as the lake's are used (explicit keys, or the usual AWS chain).
//!
//! No message built here carries a secret: only the endpoint, the bucket and
//! the HTTP status or S3 error code appear.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::client::{HttpClient, HttpConnector, HttpRequestBody, ReqwestConnector};
use object_store::signer::Signer;
use object_store::ClientOptions;

use crate::error::{Error, Result};

/// What the bucket-root `HEAD` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketState {
    Exists,
    Missing,
}

/// Signs and sends bucket-level requests for one S3 endpoint.
pub struct BucketClient {
    options: HashMap<String, String>,
    http: HttpClient,
    endpoint: String,
}

impl BucketClient {
    /// A client using the lake's storage options (`AWS_*` keys, any case).
    pub fn new(storage_options: &HashMap<String, String>) -> Result<BucketClient> {
        let options: HashMap<String, String> =
            storage_options.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect();
        let allow_http = options.get("aws_allow_http").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let client_options = ClientOptions::new()
            .with_allow_http(allow_http)
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(20));
        let http = ReqwestConnector::default()
            .connect(&client_options)
            .map_err(|e| Error::other("S3 HTTP client", e))?;
        let endpoint = options.get("aws_endpoint_url").cloned().unwrap_or_else(|| "AWS S3".to_string());
        Ok(BucketClient { options, http, endpoint })
    }

    /// The endpoint as shown in messages (a URL without credentials).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Whether `bucket` exists (`HEAD /bucket`).
    pub async fn state(&self, bucket: &str) -> Result<BucketState> {
        let status = self.send(bucket, http::Method::HEAD).await?;
        match status {
            200..=299 => Ok(BucketState::Exists),
            404 => Ok(BucketState::Missing),
            _ => Err(self.status_error(bucket, "checking", status)),
        }
    }

    /// Creates `bucket` (`PUT /bucket`); an already existing bucket is fine.
    pub async fn create(&self, bucket: &str) -> Result<()> {
        let status = self.send(bucket, http::Method::PUT).await?;
        match status {
            200..=299 | 409 => Ok(()),
            _ => Err(self.status_error(bucket, "creating", status)),
        }
    }

    /// Checks every bucket; creates the missing ones when `create` is set,
    /// otherwise fails naming the first missing bucket and the fix.
    pub async fn ensure(&self, buckets: &[String], create: bool) -> Result<()> {
        for bucket in buckets {
            if self.state(bucket).await? == BucketState::Exists {
                continue;
            }
            if !create {
                return Err(Error::Config(format!(
                    "S3 bucket '{bucket}' does not exist at {}: create it, or rerun with --create-buckets \
                     (MEDALLION_CREATE_BUCKETS=true, or create_buckets = true under [s3] in medallion.toml)",
                    self.endpoint
                )));
            }
            self.create(bucket).await?;
            tracing::info!("created S3 bucket {bucket} at {}", self.endpoint);
        }
        Ok(())
    }

    /// Sends one presigned request on the bucket root; returns the status.
    async fn send(&self, bucket: &str, method: http::Method) -> Result<u16> {
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        for (key, value) in &self.options {
            if let Ok(key) = AmazonS3ConfigKey::from_str(key) {
                if !matches!(key, AmazonS3ConfigKey::Bucket) {
                    builder = builder.with_config(key, value.clone());
                }
            }
        }
        let store = builder.build().map_err(|e| Error::Config(format!("S3 settings for bucket '{bucket}': {e}")))?;
        let url = store
            .signed_url(method.clone(), &object_store::path::Path::from(""), Duration::from_secs(300))
            .await
            .map_err(|e| Error::Config(format!("cannot sign a request for S3 bucket '{bucket}': {e}")))?;
        let request = http::Request::builder()
            .method(method)
            .uri(url.as_str())
            .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
            .body(HttpRequestBody::empty())
            .map_err(|e| Error::other(format!("S3 request for bucket '{bucket}'"), e))?;
        let response = self.http.execute(request).await.map_err(|e| {
            // The presigned URL is a short-lived credential: never show it.
            let mut plain = url.clone();
            plain.set_query(None);
            let cause = error_chain(&e).replace(url.as_str(), plain.as_str());
            Error::Storage {
                what: format!("S3 bucket '{bucket}'"),
                reason: format!(
                    "cannot reach the S3 endpoint {} ({}): check that the server runs and AWS_ENDPOINT_URL",
                    self.endpoint,
                    crate::error::one_line(&cause)
                ),
                transient: true,
            }
        })?;
        Ok(response.status().as_u16())
    }

    fn status_error(&self, bucket: &str, doing: &str, status: u16) -> Error {
        let (advice, transient) = match status {
            401 | 403 => ("the S3 server rejected the credentials: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", false),
            301 | 307 | 400 => ("the bucket may be in another region or the addressing style is wrong: check AWS_REGION and AWS_VIRTUAL_HOSTED_STYLE_REQUEST", false),
            500..=599 => ("the S3 server failed: retry later", true),
            _ => ("check the S3 settings (AWS_ENDPOINT_URL, AWS_REGION)", false),
        };
        Error::Storage {
            what: format!("S3 bucket '{bucket}'"),
            reason: format!("{doing} it at {} returned HTTP {status}; {advice}", self.endpoint),
            transient,
        }
    }
}

/// The error and its sources, joined (reqwest hides "connection refused" in
/// the source chain).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let part = inner.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_joins_sources_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let outer = Error::other("send", &io);
        assert_eq!(error_chain(&io), "connection refused");
        assert!(outer.to_string().contains("connection refused"));
    }
}
