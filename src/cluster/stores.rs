//! The object stores of an executor: `file://` as DataFusion has it, and an
//! S3 store per bucket built on first use from the executor's own
//! configuration (`[s3]` of its medallion.toml and the `AWS_*` variables),
//! never from anything in a plan.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use url::Url;

use crate::config::S3Config;

/// `ObjectStoreRegistry` of an executor; see the module documentation.
#[derive(Debug)]
pub struct LakeStores {
    /// DataFusion's registry (`file://`), which also keeps the S3 stores
    /// built here, so a bucket's store is built once.
    known: DefaultObjectStoreRegistry,
    s3: S3Config,
}

impl LakeStores {
    pub fn new(s3: S3Config) -> LakeStores {
        LakeStores { known: DefaultObjectStoreRegistry::new(), s3 }
    }

    /// An S3 store for `bucket` with the executor's settings.
    fn s3_store(&self, bucket: &str) -> DfResult<Arc<dyn ObjectStore>> {
        let mut builder = AmazonS3Builder::new().with_bucket_name(bucket);
        for (key, value) in crate::lake::s3_storage_options(&self.s3) {
            if let Ok(key) = AmazonS3ConfigKey::from_str(&key.to_ascii_lowercase()) {
                builder = builder.with_config(key, value);
            }
        }
        let retry = RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(15), ..Default::default() };
        let client = ClientOptions::new().with_allow_http(self.s3.allow_http).with_connect_timeout(Duration::from_secs(5));
        let store = builder
            .with_retry(retry)
            .with_client_options(client)
            .build()
            .map_err(|e| DataFusionError::Configuration(format!("S3 settings of this executor for bucket '{bucket}': {e}")))?;
        Ok(Arc::new(store))
    }
}

impl ObjectStoreRegistry for LakeStores {
    fn register_store(&self, url: &Url, store: Arc<dyn ObjectStore>) -> Option<Arc<dyn ObjectStore>> {
        self.known.register_store(url, store)
    }

    fn deregister_store(&self, url: &Url) -> DfResult<Arc<dyn ObjectStore>> {
        self.known.deregister_store(url)
    }

    fn get_store(&self, url: &Url) -> DfResult<Arc<dyn ObjectStore>> {
        if let Ok(store) = self.known.get_store(url) {
            return Ok(store);
        }
        match (url.scheme(), url.host_str()) {
            ("s3" | "s3a", Some(bucket)) => {
                let store = self.s3_store(bucket)?;
                let root = Url::parse(&format!("s3://{bucket}")).map_err(|e| DataFusionError::External(Box::new(e)))?;
                self.known.register_store(&root, store.clone());
                Ok(store)
            }
            _ => self.known.get_store(url),
        }
    }
}
