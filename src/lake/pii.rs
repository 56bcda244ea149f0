//! PII protection by role, enforced where a Delta table enters a session.
//!
//! A session built for a role (`SessionBuilder::for_role`) carries a
//! `Protection` in its configuration; `catalog::register_delta` then wraps
//! each Delta table with protected columns (`config::PiiConfig`) in a
//! `ProtectedTable`, so every query, view and refresh of that session sees:
//!
//! | role | a protected value |
//! |---|---|
//! | reader | masked: `Maria Anders` → `M**** A*****`, `030-0074321` → `***-***4321` |
//! | analyst | a keyed pseudonym: `pii_` + 10 hex of HMAC-SHA256(`MEDALLION_PII_KEY`, value), stable across runs (joins and counts work); masked when no key is set |
//! | admin | clear text (no wrapping at all) |
//!
//! The wrapper projects the masking expression over the inner scan and
//! accepts no filter pushdown on a protected column: a `WHERE contact_name =
//! 'Maria Anders'` is evaluated on the masked value (no row), never by the
//! Delta scan on the clear one. Protected columns of other types (a birth
//! date) are shown as masked text.
//!
//! Over a lake whose PII is encrypted at rest (`at_rest`), every session
//! wraps those tables, an admin's and the pipeline's too: the wrapper first
//! decrypts, then hides as the role requires.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::{Column, DFSchema};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{
    cast, ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TableProviderFilterPushDown,
    Volatility,
};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::ExecutionPlan;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::at_rest::{self, AtRest};
use super::{Layer, TableName};
use crate::config::{PiiConfig, Role};

/// What a role's session does to protected columns; kept in the session's
/// configuration (an extension) for `catalog::register_delta`.
#[derive(Clone)]
pub struct Protection {
    role: Role,
    columns: Vec<(String, String)>,
    key: Option<Arc<Vec<u8>>>,
    /// The key of the stored form, when the lake encrypts PII at rest.
    at_rest_key: Option<Arc<[u8; 32]>>,
}

/// Never shows a key.
impl std::fmt::Debug for Protection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Protection({:?}, {} columns, encrypted at rest: {})", self.role, self.columns.len(), self.at_rest_key.is_some())
    }
}

/// Whether `column` of `table` is protected by `columns` (the policy's
/// `table.column` pairs): `bronze.<t>.<c>` when the policy names `t.c`; in
/// silver and gold, any column named like one of the policy's.
pub fn covers(columns: &[(String, String)], table: &TableName, column: &str) -> bool {
    let column = column.to_ascii_lowercase();
    match table.layer {
        Layer::Bronze => columns.iter().any(|(t, c)| *t == table.table().to_ascii_lowercase() && *c == column),
        Layer::Silver | Layer::Gold => columns.iter().any(|(_, c)| *c == column),
        _ => false,
    }
}

impl Protection {
    /// `None` for an admin (clear text).
    pub fn for_role(role: Role, policy: &PiiConfig) -> Option<Protection> {
        if role == Role::Admin {
            return None;
        }
        let key = policy.key.as_ref().filter(|_| role == Role::Analyst).map(|k| Arc::new(k.as_bytes().to_vec()));
        Some(Protection { role, columns: policy.columns.clone(), key, at_rest_key: None })
    }

    /// `role_view` (a role's protection, `None` for clear text) over a lake
    /// that stores PII as `at_rest` says: when it is encrypted, every
    /// session decrypts (an admin's gets a protection that only decrypts).
    pub fn over_lake(role_view: Option<Protection>, at_rest: Option<&AtRest>) -> Option<Protection> {
        let Some(at_rest) = at_rest else { return role_view };
        let mut protection = role_view.unwrap_or_else(|| Protection {
            role: Role::Admin,
            columns: at_rest.columns().to_vec(),
            key: None,
            at_rest_key: None,
        });
        protection.at_rest_key = Some(at_rest.key());
        Some(protection)
    }

    /// Whether this protection leaves every value as stored: no column to
    /// hide, nothing to decrypt (a reader or analyst under `[pii] columns =
    /// []`). Such a session may run on a cluster.
    pub fn changes_nothing(&self) -> bool {
        self.columns.is_empty() && self.at_rest_key.is_none()
    }

    /// Whether `column` of `table` is protected (see `covers`).
    pub fn covers(&self, table: &TableName, column: &str) -> bool {
        covers(&self.columns, table, column)
    }

    /// `provider` as this role may see it (itself when nothing is protected).
    pub fn wrap(&self, table: &TableName, provider: Arc<dyn TableProvider>) -> Arc<dyn TableProvider> {
        let schema = provider.schema();
        let protected: Vec<usize> =
            schema.fields().iter().enumerate().filter(|(_, f)| self.covers(table, f.name())).map(|(i, _)| i).collect();
        if protected.is_empty() {
            return provider;
        }
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| if protected.contains(&i) { Field::new(f.name(), DataType::Utf8, true) } else { f.as_ref().clone() })
            .collect();
        let (name, shown) = match (self.role, &self.key) {
            (Role::Admin, _) => ("pii_decrypt", Shown::Clear),
            (_, Some(key)) => ("pii_pseudonym", Shown::Pseudonym(key.clone())),
            (_, None) => ("pii_mask", Shown::Masked),
        };
        let udf = ScalarUDF::new_from_impl(Hide { name, shown, at_rest_key: self.at_rest_key.clone(), signature: text() });
        Arc::new(ProtectedTable {
            inner: provider,
            schema: Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())),
            protected,
            udf: Arc::new(udf),
        })
    }

    pub fn role(&self) -> Role {
        self.role
    }
}

/// Text of any of Arrow's string types (other types are cast to text first).
fn text() -> Signature {
    Signature::uniform(1, TEXT_TYPES.to_vec(), Volatility::Immutable)
}

const TEXT_TYPES: [DataType; 3] = [DataType::Utf8, DataType::Utf8View, DataType::LargeUtf8];

/// `value` masked: in text with digits (phones, postal codes) every letter
/// and digit but the last four (a third of short values) becomes `*`; other text keeps the first
/// letter of each word. Punctuation and spaces stay.
pub fn mask(value: &str) -> String {
    let mut masked = String::with_capacity(value.len());
    mask_into(value, &mut masked);
    masked
}

/// `mask`, appended to `masked` (a buffer reused from value to value).
fn mask_into(value: &str, masked: &mut String) {
    if value.bytes().any(|b| b.is_ascii_digit()) {
        // Short values (postal codes) keep less: a third of their characters.
        let alnum = value.chars().filter(|c| c.is_alphanumeric()).count();
        let keep = if alnum >= 8 { 4 } else { alnum / 3 };
        let keep_from = alnum - keep;
        let mut seen = 0;
        masked.extend(value.chars().map(|c| {
            if c.is_alphanumeric() {
                seen += 1;
                if seen > keep_from { c } else { '*' }
            } else {
                c
            }
        }));
        return;
    }
    let mut at_word_start = true;
    masked.extend(value.chars().map(|c| {
        let shown = if c.is_alphanumeric() && !at_word_start { '*' } else { c };
        at_word_start = !c.is_alphanumeric();
        shown
    }));
}

/// `pii_` and the first 10 hex digits of HMAC-SHA256(`key`, `value`).
pub fn pseudonym(key: &[u8], value: &str) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(value.as_bytes());
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    format!("pii_{hex}")
}

/// What a role is shown of a protected value.
#[derive(PartialEq, Eq, Hash)]
enum Shown {
    Clear,
    Masked,
    /// Keyed by the pseudonym key.
    Pseudonym(Arc<Vec<u8>>),
}

/// The masking or pseudonym function over text, after decryption when the
/// lake stores PII encrypted (NULL stays NULL).
#[derive(PartialEq, Eq, Hash)]
struct Hide {
    name: &'static str,
    shown: Shown,
    at_rest_key: Option<Arc<[u8; 32]>>,
    signature: Signature,
}

/// Never shows a key.
impl std::fmt::Debug for Hide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl ScalarUDFImpl for Hide {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let values = &arrays[0];
        let mut hidden = StringBuilder::with_capacity(values.len(), 16 * values.len());
        let mut buffer = String::new();
        // Text is read as it is stored (no copy into another string type first).
        match values.data_type() {
            DataType::Utf8View => values.as_string_view().iter().for_each(|v| self.append(v, &mut hidden, &mut buffer)),
            DataType::Utf8 => values.as_string::<i32>().iter().for_each(|v| self.append(v, &mut hidden, &mut buffer)),
            DataType::LargeUtf8 => values.as_string::<i64>().iter().for_each(|v| self.append(v, &mut hidden, &mut buffer)),
            other => {
                return Err(datafusion::error::DataFusionError::Internal(format!("{} takes text, not {other}", self.name)))
            }
        }
        Ok(ColumnarValue::Array(Arc::new(hidden.finish()) as ArrayRef))
    }
}

impl Hide {
    /// Appends what the role is shown of one stored value to `hidden`
    /// (`buffer`: scratch space for a mask, reused across values).
    fn append(&self, stored: Option<&str>, hidden: &mut StringBuilder, buffer: &mut String) {
        let Some(stored) = stored else { return hidden.append_null() };
        let decrypted;
        let clear = match &self.at_rest_key {
            // A value that does not open under the key shows as NULL,
            // never as its ciphertext.
            Some(key) => match at_rest::decrypt(key, stored) {
                Some(value) => {
                    decrypted = value;
                    decrypted.as_str()
                }
                None => return hidden.append_null(),
            },
            None => stored,
        };
        match &self.shown {
            Shown::Clear => hidden.append_value(clear),
            Shown::Masked => {
                buffer.clear();
                mask_into(clear, buffer);
                hidden.append_value(buffer.as_str());
            }
            Shown::Pseudonym(key) => hidden.append_value(pseudonym(key, clear)),
        }
    }
}

/// A table whose protected columns are hidden (see the module documentation).
#[derive(Debug)]
struct ProtectedTable {
    inner: Arc<dyn TableProvider>,
    schema: SchemaRef,
    protected: Vec<usize>,
    udf: Arc<ScalarUDF>,
}

impl ProtectedTable {
    fn mentions_protected(&self, filter: &Expr) -> bool {
        let inner = self.inner.schema();
        filter.column_refs().iter().any(|c| {
            inner.index_of(c.name()).map(|i| self.protected.contains(&i)).unwrap_or(true)
        })
    }
}

#[async_trait]
impl TableProvider for ProtectedTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        let mut answers = Vec::with_capacity(filters.len());
        for filter in filters {
            if self.mentions_protected(filter) {
                answers.push(TableProviderFilterPushDown::Unsupported);
            } else {
                answers.extend(self.inner.supports_filters_pushdown(&[filter])?);
            }
        }
        Ok(answers)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // Only filters without a protected column reach here (see above);
        // checked again so that no caller can push one down.
        let filters: Vec<Expr> = filters.iter().filter(|f| !self.mentions_protected(f)).cloned().collect();
        let plan = self.inner.scan(state, projection, &filters, limit).await?;
        let indices: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.inner.schema().fields().len()).collect(),
        };
        let input = plan.schema();
        let df_schema = DFSchema::try_from(input.as_ref().clone())?;
        let mut exprs = Vec::with_capacity(indices.len());
        for (position, index) in indices.iter().enumerate() {
            let name = input.field(position).name().clone();
            let column = Expr::Column(Column::new_unqualified(name.clone()));
            let expr = if self.protected.contains(index) {
                let text = if TEXT_TYPES.contains(input.field(position).data_type()) { column } else { cast(column, DataType::Utf8) };
                self.udf.call(vec![text])
            } else {
                column
            };
            exprs.push((state.create_physical_expr(expr, &df_schema)?, name));
        }
        Ok(Arc::new(ProjectionExec::try_new(exprs, plan)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_initials_or_the_last_four_characters() {
        assert_eq!(mask("Maria Anders"), "M**** A*****");
        assert_eq!(mask("030-0074321"), "***-***4321");
        assert_eq!(mask("(5) 555-4729"), "(*) ***-4729");
        assert_eq!(mask("Obere Str. 57"), "***** *tr. 57");
        assert_eq!(mask("12209"), "****9");
        assert_eq!(mask(""), "");
    }

    #[tokio::test]
    async fn a_wrapped_table_masks_text_of_every_string_type_and_other_types_as_text() {
        use datafusion::arrow::array::{Int32Array, StringArray, StringViewArray};
        use datafusion::datasource::MemTable;
        use datafusion::prelude::SessionContext;

        let schema = Arc::new(Schema::new(vec![
            Field::new("customer_id", DataType::Utf8, false),
            Field::new("contact_name", DataType::Utf8View, true),
            Field::new("phone", DataType::Utf8, true),
            Field::new("postal_code", DataType::Int32, true),
        ]));
        let batch = datafusion::arrow::array::RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["ALFKI", "ANATR"])),
                Arc::new(StringViewArray::from(vec![Some("Maria Anders"), None])),
                Arc::new(StringArray::from(vec![Some("030-0074321"), Some("(5) 555-4729")])),
                Arc::new(Int32Array::from(vec![Some(12209), None])),
            ],
        )
        .unwrap();
        let table = Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap());
        let policy = PiiConfig {
            columns: ["contact_name", "phone", "postal_code"].iter().map(|c| ("customers".to_string(), c.to_string())).collect(),
            key: None,
            encrypt_at_rest: false,
        };
        let reader = Protection::for_role(Role::Reader, &policy).unwrap();
        let name = TableName::owned(Layer::Bronze, "customers");
        let ctx = SessionContext::new();
        ctx.register_table("customers", reader.wrap(&name, table)).unwrap();
        let batches = ctx.sql("SELECT * FROM customers ORDER BY customer_id").await.unwrap().collect().await.unwrap();
        let shown: Vec<Vec<Option<String>>> = (0..4)
            .map(|column| {
                let values = datafusion::arrow::compute::cast(batches[0].column(column), &DataType::Utf8).unwrap();
                values.as_string::<i32>().iter().map(|v| v.map(str::to_string)).collect()
            })
            .collect();
        let text = |v: &[Option<&str>]| v.iter().map(|s| s.map(str::to_string)).collect::<Vec<_>>();
        assert_eq!(shown[0], text(&[Some("ALFKI"), Some("ANATR")]), "unprotected columns stay clear");
        assert_eq!(shown[1], text(&[Some("M**** A*****"), None]), "a string view is masked, NULL stays NULL");
        assert_eq!(shown[2], text(&[Some("***-***4321"), Some("(*) ***-4729")]));
        assert_eq!(shown[3], text(&[Some("****9"), None]), "a number is masked as text");
    }

    #[test]
    fn pseudonyms_are_stable_keyed_and_distinct() {
        let a = pseudonym(b"key-1", "Maria Anders");
        assert_eq!(a, pseudonym(b"key-1", "Maria Anders"));
        assert!(a.starts_with("pii_") && a.len() == 14, "{a}");
        assert_ne!(a, pseudonym(b"key-2", "Maria Anders"));
        assert_ne!(a, pseudonym(b"key-1", "Ana Trujillo"));
    }
}
