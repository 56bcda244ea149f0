//! PII encrypted at rest (`[pii] encrypt_at_rest = true`): the stored form of
//! the protected columns.
//!
//! When it is on, every partition write (`Lake::replace_partition`: bronze
//! ingest and every model) stores each protected column (`pii::covers`) as
//! text `enc:v1:` + hex of a random 96-bit nonce, the AES-256-GCM ciphertext
//! and its tag. The AES key is SHA-256 of a fixed label and
//! `MEDALLION_PII_KEY`, so the same secret gives the same key on every run
//! and on every machine. A protected column of another type (a birth date)
//! is stored as its text, encrypted; it reads back as text.
//!
//! Reading goes through `pii::Protection`: a session over an encrypted lake
//! decrypts the protected columns for every role, then shows them as the
//! role may see them (clear for an admin and for the pipeline's models,
//! pseudonyms for analysts, masks for readers). Outside medallion (Spark,
//! a Parquet viewer) only ciphertext is visible, and the Delta log's file
//! statistics of those columns hold ciphertext too.
//!
//! A value without the prefix (written before encryption was turned on) is
//! read as it is: rerun those dates to encrypt them.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

use super::pii::covers;
use super::TableName;
use crate::config::PiiConfig;

/// The prefix of an encrypted value (and the version of its format).
pub const PREFIX: &str = "enc:v1:";

/// The key of the protected columns' stored form, and which columns those are.
#[derive(Clone)]
pub struct AtRest {
    columns: Vec<(String, String)>,
    key: Arc<[u8; 32]>,
}

/// Never shows the key.
impl std::fmt::Debug for AtRest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AtRest({} columns)", self.columns.len())
    }
}

impl AtRest {
    /// `Some` when the policy turns encryption at rest on (the configuration
    /// has checked that the key is set then).
    pub fn from_policy(policy: &PiiConfig) -> Option<AtRest> {
        let secret = policy.key.as_ref().filter(|_| policy.encrypt_at_rest)?;
        Some(AtRest { columns: policy.columns.clone(), key: Arc::new(derive_key(secret)) })
    }

    pub fn columns(&self) -> &[(String, String)] {
        &self.columns
    }

    /// The raw AES key (for the decrypting function of `pii`).
    pub fn key(&self) -> Arc<[u8; 32]> {
        self.key.clone()
    }

    /// Positions of the columns of `schema` that `table` stores encrypted.
    pub fn encrypted_columns(&self, table: &TableName, schema: &Schema) -> Vec<usize> {
        schema.fields().iter().enumerate().filter(|(_, f)| covers(&self.columns, table, f.name())).map(|(i, _)| i).collect()
    }

    /// `streams` of `table` with the protected columns encrypted, and their
    /// schema (those columns become nullable text).
    pub fn encrypt_streams(
        &self,
        table: &TableName,
        schema: SchemaRef,
        streams: Vec<SendableRecordBatchStream>,
    ) -> (SchemaRef, Vec<SendableRecordBatchStream>) {
        let columns = self.encrypted_columns(table, &schema);
        if columns.is_empty() {
            return (schema, streams);
        }
        let stored = stored_schema(&schema, &columns);
        let streams = streams
            .into_iter()
            .map(|stream| {
                let (key, columns, stored_for_batches) = (self.key.clone(), columns.clone(), stored.clone());
                let encrypted = stream.map(move |batch| {
                    let batch = batch?;
                    Ok::<_, datafusion::error::DataFusionError>(encrypt_batch(&key, &batch, &columns, &stored_for_batches)?)
                });
                Box::pin(RecordBatchStreamAdapter::new(stored.clone(), encrypted)) as SendableRecordBatchStream
            })
            .collect();
        (stored, streams)
    }
}

/// AES-256 key from the secret: SHA-256 of a label and the secret (a
/// different use of the secret than the analysts' HMAC pseudonyms).
fn derive_key(secret: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"medallion pii at rest v1\0");
    hasher.update(secret.as_bytes());
    let digest = hasher.finalize();
    let mut key = [0u8; 32];
    key.copy_from_slice(&digest[..]);
    key
}

/// `schema` with `columns` as nullable text.
fn stored_schema(schema: &Schema, columns: &[usize]) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| if columns.contains(&i) { Field::new(f.name(), DataType::Utf8, true) } else { f.as_ref().clone() })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batch` with `columns` replaced by their encrypted text.
fn encrypt_batch(key: &[u8; 32], batch: &RecordBatch, columns: &[usize], stored: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let sealing = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, key).map_err(|_| ArrowError::ComputeError("AES-256-GCM key".into()))?,
    );
    let random = SystemRandom::new();
    let mut arrays: Vec<ArrayRef> = batch.columns().to_vec();
    for &index in columns {
        let text = cast(&arrays[index], &DataType::Utf8)?;
        let text = text.as_any().downcast_ref::<StringArray>().expect("cast to Utf8 gives a StringArray");
        let mut nonces = vec![0u8; NONCE_LEN * text.len()];
        random.fill(&mut nonces).map_err(|_| ArrowError::ComputeError("no random bytes for AES-GCM nonces".into()))?;
        let mut sealed = Vec::with_capacity(text.len());
        for (row, value) in text.iter().enumerate() {
            let Some(value) = value else {
                sealed.push(None);
                continue;
            };
            let nonce_bytes: [u8; NONCE_LEN] =
                nonces[row * NONCE_LEN..(row + 1) * NONCE_LEN].try_into().expect("a nonce's length");
            let mut in_out = value.as_bytes().to_vec();
            sealing
                .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce_bytes), Aad::empty(), &mut in_out)
                .map_err(|_| ArrowError::ComputeError("AES-GCM encryption failed".into()))?;
            let mut stored_text = String::with_capacity(PREFIX.len() + 2 * (NONCE_LEN + in_out.len()));
            stored_text.push_str(PREFIX);
            push_hex(&mut stored_text, &nonce_bytes);
            push_hex(&mut stored_text, &in_out);
            sealed.push(Some(stored_text));
        }
        arrays[index] = Arc::new(StringArray::from(sealed));
    }
    RecordBatch::try_new(stored.clone(), arrays)
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        out.push(DIGITS[(byte >> 4) as usize] as char);
        out.push(DIGITS[(byte & 0xf) as usize] as char);
    }
}

fn parse_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// The clear text of a stored value: decrypted when it carries the prefix
/// and opens under `key`; as it is otherwise (written before encryption);
/// `None` when it carries the prefix but does not open (another key, or
/// altered), so a wrong key never shows ciphertext as if it were data.
pub fn decrypt(key: &[u8; 32], stored: &str) -> Option<String> {
    let Some(sealed) = stored.strip_prefix(PREFIX) else {
        return Some(stored.to_string());
    };
    let bytes = parse_hex(sealed)?;
    if bytes.len() < NONCE_LEN {
        return None;
    }
    let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
    let opening = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).ok()?);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut in_out = ciphertext.to_vec();
    let clear = opening.open_in_place(nonce, Aad::empty(), &mut in_out).ok()?;
    String::from_utf8(clear.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::Layer;
    use datafusion::arrow::array::{Date32Array, Int64Array};

    fn policy(key: &str) -> PiiConfig {
        PiiConfig {
            columns: vec![("customers".into(), "contact_name".into()), ("employees".into(), "birth_date".into())],
            key: Some(key.into()),
            encrypt_at_rest: true,
        }
    }

    #[test]
    fn values_round_trip_and_never_show_the_clear_text() {
        let at_rest = AtRest::from_policy(&policy("secret-1")).unwrap();
        let table = TableName::owned(Layer::Bronze, "customers");
        let schema = Arc::new(Schema::new(vec![
            Field::new("customer_id", DataType::Int64, false),
            Field::new("contact_name", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec![Some("Maria Anders"), None, Some("Maria Anders")])),
            ],
        )
        .unwrap();
        let columns = at_rest.encrypted_columns(&table, &schema);
        assert_eq!(columns, vec![1]);
        let stored = stored_schema(&schema, &columns);
        let sealed = encrypt_batch(&at_rest.key(), &batch, &columns, &stored).unwrap();
        let names = sealed.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        assert!(names.is_null(1));
        let (first, third) = (names.value(0), names.value(2));
        assert!(first.starts_with(PREFIX) && !first.contains("Maria"), "{first}");
        // A fresh nonce per value: equal clear values are stored differently.
        assert_ne!(first, third);
        assert_eq!(decrypt(&at_rest.key(), first).as_deref(), Some("Maria Anders"));
        assert_eq!(decrypt(&at_rest.key(), third).as_deref(), Some("Maria Anders"));
        // Another key does not open it; a clear value passes as it is.
        let other = AtRest::from_policy(&policy("secret-2")).unwrap();
        assert_eq!(decrypt(&other.key(), first), None);
        assert_eq!(decrypt(&at_rest.key(), "Ana Trujillo").as_deref(), Some("Ana Trujillo"));
        // An altered ciphertext does not open.
        let mut altered = first.to_string();
        let last = altered.pop().unwrap();
        altered.push(if last == '0' { '1' } else { '0' });
        assert_eq!(decrypt(&at_rest.key(), &altered), None);
    }

    #[test]
    fn non_text_columns_are_stored_as_encrypted_text() {
        let at_rest = AtRest::from_policy(&policy("k")).unwrap();
        let table = TableName::owned(Layer::Bronze, "employees");
        let schema = Arc::new(Schema::new(vec![Field::new("birth_date", DataType::Date32, true)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Date32Array::from(vec![Some(0)]))]).unwrap();
        let columns = at_rest.encrypted_columns(&table, &schema);
        let stored = stored_schema(&schema, &columns);
        assert_eq!(stored.field(0).data_type(), &DataType::Utf8);
        let sealed = encrypt_batch(&at_rest.key(), &batch, &columns, &stored).unwrap();
        let value = sealed.column(0).as_any().downcast_ref::<StringArray>().unwrap().value(0).to_string();
        assert_eq!(decrypt(&at_rest.key(), &value).as_deref(), Some("1970-01-01"));
        // Only the policy's tables: bronze.customers has no birth_date to protect.
        assert!(at_rest.encrypted_columns(&TableName::owned(Layer::Bronze, "customers"), &schema).is_empty());
    }

    #[test]
    fn off_without_the_switch() {
        let mut off = policy("k");
        off.encrypt_at_rest = false;
        assert!(AtRest::from_policy(&off).is_none());
    }
}
