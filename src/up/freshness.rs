//! Freshness of tables: how long since a table's last Delta commit, against
//! the limits of `[freshness]` in medallion.toml
//! (`"gold.kpi_revenue" = { warn_after = "26h", error_after = "50h" }`).
//!
//! A table is `fresh` (green) under its warning limit, `warn` (amber) past
//! it, `error` (red) past its error limit, and `unknown` (grey) while it has
//! no commit at all. `FreshnessWatch` remembers the last level of each table
//! so that a breach is alerted once, when it starts, and once more when the
//! table is fresh again, however often it is checked in between.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// The limits of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreshnessRule {
    /// `layer.table`.
    pub table: String,
    pub warn_after: Option<Duration>,
    pub error_after: Option<Duration>,
}

/// How fresh a table is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FreshnessLevel {
    Fresh,
    Warn,
    Error,
    /// No commit yet (the table does not exist).
    Unknown,
}

impl FreshnessLevel {
    /// The dashboard's colour.
    pub fn colour(self) -> &'static str {
        match self {
            FreshnessLevel::Fresh => "green",
            FreshnessLevel::Warn => "amber",
            FreshnessLevel::Error => "red",
            FreshnessLevel::Unknown => "grey",
        }
    }

    /// Whether the table is past one of its limits.
    pub fn is_breach(self) -> bool {
        matches!(self, FreshnessLevel::Warn | FreshnessLevel::Error)
    }
}

/// One table's freshness at one moment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Freshness {
    pub table: String,
    pub level: FreshnessLevel,
    pub colour: &'static str,
    pub last_commit: Option<DateTime<Utc>>,
    /// Seconds since the last commit.
    pub age_seconds: Option<i64>,
    pub warn_after_seconds: Option<u64>,
    pub error_after_seconds: Option<u64>,
}

impl FreshnessRule {
    /// The level of the table whose last commit was at `last_commit`.
    pub fn evaluate(&self, last_commit: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Freshness {
        let age = last_commit.map(|at| (now - at).num_seconds().max(0));
        let past = |limit: Option<Duration>| match (age, limit) {
            (Some(age), Some(limit)) => age as u64 > limit.as_secs(),
            _ => false,
        };
        let level = match age {
            None => FreshnessLevel::Unknown,
            Some(_) if past(self.error_after) => FreshnessLevel::Error,
            Some(_) if past(self.warn_after) => FreshnessLevel::Warn,
            Some(_) => FreshnessLevel::Fresh,
        };
        Freshness {
            table: self.table.clone(),
            level,
            colour: level.colour(),
            last_commit,
            age_seconds: age,
            warn_after_seconds: self.warn_after.map(|d| d.as_secs()),
            error_after_seconds: self.error_after.map(|d| d.as_secs()),
        }
    }
}

/// An age for people: `42s`, `1m 30s`, `2h 5m`, `3d 4h`.
pub fn age_text(seconds: i64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, s / 60 % 60),
        s => format!("{}d {}h", s / 86_400, s / 3600 % 24),
    }
}

/// A change worth an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreshnessChange {
    /// The table went past a limit (it was fresh or unknown before).
    Breach { table: String, level: FreshnessLevel, age_seconds: i64 },
    /// A table in breach is fresh again.
    Recovered { table: String },
}

/// The last level seen of each table.
#[derive(Debug, Default)]
pub struct FreshnessWatch {
    last: BTreeMap<String, FreshnessLevel>,
}

impl FreshnessWatch {
    /// Records `states` and returns the changes to alert on: one when a
    /// breach starts, one when it ends; a breach that goes from warn to
    /// error is the same breach.
    pub fn observe(&mut self, states: &[Freshness]) -> Vec<FreshnessChange> {
        let mut changes = Vec::new();
        for state in states {
            let before = self.last.insert(state.table.clone(), state.level);
            let was_breach = before.is_some_and(FreshnessLevel::is_breach);
            if state.level.is_breach() && !was_breach {
                changes.push(FreshnessChange::Breach {
                    table: state.table.clone(),
                    level: state.level,
                    age_seconds: state.age_seconds.unwrap_or(0),
                });
            } else if state.level == FreshnessLevel::Fresh && was_breach {
                changes.push(FreshnessChange::Recovered { table: state.table.clone() });
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> FreshnessRule {
        FreshnessRule {
            table: "gold.kpi_revenue".into(),
            warn_after: Some(Duration::from_secs(26 * 3600)),
            error_after: Some(Duration::from_secs(50 * 3600)),
        }
    }

    fn at(hours_ago: i64, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        Some(now - chrono::Duration::hours(hours_ago))
    }

    #[test]
    fn levels_follow_the_limits() {
        let now = Utc::now();
        assert_eq!(rule().evaluate(at(1, now), now).level, FreshnessLevel::Fresh);
        assert_eq!(rule().evaluate(at(27, now), now).level, FreshnessLevel::Warn);
        assert_eq!(rule().evaluate(at(51, now), now).colour, "red");
        assert_eq!(rule().evaluate(None, now).level, FreshnessLevel::Unknown);
        let only_error = FreshnessRule { warn_after: None, ..rule() };
        assert_eq!(only_error.evaluate(at(27, now), now).level, FreshnessLevel::Fresh);
    }

    #[test]
    fn a_breach_is_reported_once_and_its_end_once() {
        let now = Utc::now();
        let mut watch = FreshnessWatch::default();
        assert!(watch.observe(&[rule().evaluate(at(1, now), now)]).is_empty());
        let breach = watch.observe(&[rule().evaluate(at(27, now), now)]);
        assert!(matches!(&breach[..], [FreshnessChange::Breach { level: FreshnessLevel::Warn, .. }]));
        // Still stale, then worse: the same breach.
        assert!(watch.observe(&[rule().evaluate(at(28, now), now)]).is_empty());
        assert!(watch.observe(&[rule().evaluate(at(51, now), now)]).is_empty());
        let back = watch.observe(&[rule().evaluate(at(0, now), now)]);
        assert_eq!(back, vec![FreshnessChange::Recovered { table: "gold.kpi_revenue".into() }]);
    }
}
