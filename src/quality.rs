//! Expectations: row-level rules declared next to a model, in
//! `<model>.expectations.toml`, each with what to do when a row fails it.
//!
//! ```toml
//! [[expectation]]
//! name = "quantity_positive"
//! check = "quantity > 0"      # SQL over the model's columns; NULL counts as a failure
//! on_fail = "quarantine"      # or "fail": stop the run, write nothing
//! ```
//!
//! A row failing any rule goes to `<model>_quarantine` with `failed_rule` (the
//! first failed rule in declaration order) and `failed_rules` (all of them);
//! it is never silently dropped. Each rule's failures are counted on their own.

use serde::Deserialize;

use crate::error::{Error, Result};

/// What to do with a row that fails a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFail {
    Quarantine,
    Fail,
}

/// One rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    pub name: String,
    pub check: String,
    #[serde(default = "default_on_fail")]
    pub on_fail: OnFail,
}

fn default_on_fail() -> OnFail {
    OnFail::Quarantine
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectationFile {
    #[serde(default)]
    expectation: Vec<Expectation>,
}

/// Parses an expectations file.
pub fn parse_expectations(model: &str, text: &str) -> Result<Vec<Expectation>> {
    let file: ExpectationFile = toml::from_str(text)
        .map_err(|e| Error::model(model, format!("invalid expectations file: {}", crate::error::one_line(&e.to_string()))))?;
    for rule in &file.expectation {
        if rule.name.is_empty() || !rule.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Error::model(model, format!("expectation name '{}' must be letters, digits and _", rule.name)));
        }
    }
    Ok(file.expectation)
}

/// `check` as a boolean that is false (not NULL) when the row fails.
pub fn passes(rule: &Expectation) -> String {
    format!("COALESCE(({}), false)", rule.check)
}

/// Column of `count_failures_sql` holding the number of rows passing every rule.
pub const PASSING_ROWS: &str = "__passing_rows";

/// SQL counting, over `relation`, the rows passing every rule (column
/// `PASSING_ROWS`) and the failures of each rule (one column per rule, named
/// after it). One row.
pub fn count_failures_sql(rules: &[Expectation], relation: &str) -> String {
    let mut columns: Vec<String> = rules
        .iter()
        .map(|r| format!("CAST(SUM(CASE WHEN {} THEN 0 ELSE 1 END) AS BIGINT) AS \"{}\"", passes(r), r.name))
        .collect();
    columns.push(format!(
        "CAST(SUM(CASE WHEN {} THEN 1 ELSE 0 END) AS BIGINT) AS \"{PASSING_ROWS}\"",
        all_pass_predicate(rules)
    ));
    format!("SELECT {} FROM {relation}", columns.join(", "))
}

/// Predicate true for rows that pass every rule.
pub fn all_pass_predicate(rules: &[Expectation]) -> String {
    if rules.is_empty() {
        return "true".to_string();
    }
    rules.iter().map(passes).collect::<Vec<_>>().join(" AND ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rules_with_default_action() {
        let rules = parse_expectations(
            "m",
            "[[expectation]]\nname = \"q\"\ncheck = \"quantity > 0\"\n\n[[expectation]]\nname = \"d\"\ncheck = \"x\"\non_fail = \"fail\"\n",
        )
        .unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].on_fail, OnFail::Quarantine);
        assert_eq!(rules[1].on_fail, OnFail::Fail);
    }

    #[test]
    fn rejects_bad_names_and_unknown_actions() {
        assert!(parse_expectations("m", "[[expectation]]\nname = \"a b\"\ncheck = \"x\"\n").is_err());
        assert!(parse_expectations("m", "[[expectation]]\nname = \"a\"\ncheck = \"x\"\non_fail = \"drop\"\n").is_err());
    }

    #[test]
    fn null_checks_count_as_failures() {
        let rules = parse_expectations("m", "[[expectation]]\nname = \"q\"\ncheck = \"quantity > 0\"\n").unwrap();
        assert_eq!(all_pass_predicate(&rules), "COALESCE((quantity > 0), false)");
    }
}
