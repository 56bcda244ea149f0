//! `[profile]`: whether `run`, `refine` and `aggregate` profile the tables
//! they wrote into `gold.table_profiles` (see `profiles`).

use serde::Deserialize;

use super::{text, FileValue, Setting, Sources, BOOLEAN};
use crate::error::Result;

const PROFILE_AFTER_RUN: Setting =
    Setting { key: "profile.after_run", flag: None, env: &["MEDALLION_PROFILE_AFTER_RUN"] };

/// `[profile]` as written in medallion.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ProfileFile {
    after_run: Option<FileValue>,
}

/// The resolved `[profile]`.
#[derive(Debug, Clone)]
pub struct ProfileConfig {
    /// Profile the tables a batch command wrote, after it (default true).
    pub after_run: bool,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        ProfileConfig { after_run: true }
    }
}

impl ProfileConfig {
    pub(super) fn resolve(file: ProfileFile, sources: &Sources) -> Result<ProfileConfig> {
        Ok(ProfileConfig {
            after_run: sources.parsed(&PROFILE_AFTER_RUN, None, text(file.after_run), BOOLEAN)?.unwrap_or(true),
        })
    }
}
