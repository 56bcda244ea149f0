//! `[[auth.tokens]]`: the serving layer's access tokens, each with a name and
//! a role, and how a presented token is recognised.
//!
//! ```toml
//! [[auth.tokens]]
//! name = "bi"
//! role = "reader"          # reader | analyst | admin
//! hash = "sha256:<64 hex>" # printed by `medallion token create`
//! ```
//!
//! Only the SHA-256 of a token is configured, never the token. That is
//! enough (no salt, no slow hash) because a token is not a password a person
//! chose: it is 32 random bytes (256 bits) from the operating system, which
//! no dictionary or brute force can reach from its hash. Hashes are compared
//! in constant time, against every entry (no early exit).
//!
//! The single `token` / `MEDALLION_TOKEN` of earlier versions keeps working as
//! an admin token named `admin`. With no token at all the server stays open
//! and every caller is an admin named `anonymous`.

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// What a token may see (PII columns: masked, pseudonymised or clear).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Reader,
    Analyst,
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Reader, Role::Analyst, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
        }
    }

    /// Parses `reader`, `analyst` or `admin`.
    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == text.trim().to_ascii_lowercase())
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is calling: the token's name and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub role: Role,
}

impl Identity {
    /// The caller of an open server (no token configured).
    pub fn anonymous() -> Identity {
        Identity { name: "anonymous".into(), role: Role::Admin }
    }
}

/// `[auth]` as written in medallion.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuthFile {
    #[serde(default)]
    tokens: Vec<TokenFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    name: String,
    role: String,
    hash: String,
}

/// One configured token: its name, role and SHA-256.
#[derive(Clone)]
struct Entry {
    name: String,
    role: Role,
    hash: [u8; 32],
}

/// The configured tokens (`[[auth.tokens]]`).
#[derive(Clone, Default)]
pub struct AuthConfig {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.entries.iter().map(|e| format!("{} ({})", e.name, e.role)).collect();
        write!(f, "AuthConfig[{}]", names.join(", "))
    }
}

impl AuthConfig {
    /// Checks every entry of `[[auth.tokens]]` in `file_name`.
    pub(super) fn resolve(file: AuthFile, file_name: &str) -> Result<AuthConfig> {
        let mut entries: Vec<Entry> = Vec::new();
        for (i, token) in file.tokens.into_iter().enumerate() {
            let at = format!("[[auth.tokens]] entry {} (name = \"{}\") in {file_name}", i + 1, token.name);
            if token.name.trim().is_empty() {
                return Err(Error::Config(format!("{at} has an empty name: give each token a name such as \"bi\"")));
            }
            if entries.iter().any(|e| e.name == token.name) {
                return Err(Error::Config(format!("{at}: the name is used twice; each token needs its own name")));
            }
            let role = Role::parse(&token.role).ok_or_else(|| {
                Error::Config(format!("{at} has role '{}': use reader, analyst or admin", token.role))
            })?;
            let hash = parse_hash(&token.hash).ok_or_else(|| {
                Error::Config(format!(
                    "{at} has an invalid hash: expected \"sha256:\" and 64 hex digits, as `medallion token create` prints"
                ))
            })?;
            entries.push(Entry { name: token.name, role, hash });
        }
        Ok(AuthConfig { entries })
    }

    /// These tokens and one more, as an `[[auth.tokens]]` entry would add it
    /// (for library callers and tests).
    pub fn with_token(mut self, name: &str, role: Role, hash: &str) -> Result<AuthConfig> {
        let hash = parse_hash(hash)
            .ok_or_else(|| Error::Config(format!("token '{name}': the hash must be \"sha256:\" and 64 hex digits")))?;
        self.entries.push(Entry { name: name.to_string(), role, hash });
        Ok(self)
    }

    /// The tokens a server accepts: these, plus the single `legacy` token
    /// (`token` / `MEDALLION_TOKEN`) as an admin named `admin`.
    pub fn tokens(&self, legacy: Option<&str>) -> Tokens {
        let mut entries = self.entries.clone();
        if let Some(token) = legacy {
            entries.push(Entry { name: "admin".into(), role: Role::Admin, hash: sha256(token) });
        }
        Tokens { entries }
    }
}

/// The tokens a server accepts, by hash.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<Entry>,
}

impl Tokens {
    /// No token configured: the server is open.
    pub fn is_open(&self) -> bool {
        self.entries.is_empty()
    }

    /// The roles of the configured tokens other than admin (each needs a
    /// session of its own on the server).
    pub fn restricted_roles(&self) -> Vec<Role> {
        let mut roles: Vec<Role> = self.entries.iter().map(|e| e.role).filter(|r| *r != Role::Admin).collect();
        roles.sort();
        roles.dedup();
        roles
    }

    /// Who `presented` belongs to; `None` when it is no configured token.
    /// Every entry is compared, each in constant time.
    pub fn identify(&self, presented: &str) -> Option<Identity> {
        let hash = sha256(presented.trim());
        let mut found = None;
        for entry in &self.entries {
            if constant_time_eq(&entry.hash, &hash) && found.is_none() {
                found = Some(Identity { name: entry.name.clone(), role: entry.role });
            }
        }
        found
    }
}

fn sha256(text: &str) -> [u8; 32] {
    let digest = Sha256::digest(text.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(&digest);
    out
}

/// Compares without an early exit, so timing does not reveal the hash.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= (*a.get(i).unwrap_or(&0) ^ *b.get(i).unwrap_or(&0)) as usize;
    }
    diff == 0
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let hex = text.trim().strip_prefix("sha256:")?;
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The prefix of every token `new_token` makes (recognisable in a leak scan).
pub const TOKEN_PREFIX: &str = "mdn_";

/// A new token: `mdn_` and 32 random bytes from the operating system, in hex.
pub fn new_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Error::other("the operating system's random source", e))?;
    Ok(format!("{TOKEN_PREFIX}{}", to_hex(&bytes)))
}

/// The `hash = "..."` value of a token.
pub fn token_hash(token: &str) -> String {
    format!("sha256:{}", to_hex(&sha256(token.trim())))
}

/// The `[[auth.tokens]]` entry that accepts `token` as `name` with `role`.
pub fn token_entry(name: &str, role: Role, token: &str) -> String {
    format!("[[auth.tokens]]\nname = {}\nrole = \"{role}\"\nhash = \"{}\"\n", toml_string(name), token_hash(token))
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Result<AuthConfig> {
        #[derive(Deserialize)]
        struct Wrapper {
            auth: AuthFile,
        }
        let wrapper: Wrapper = toml::from_str(text).unwrap();
        AuthConfig::resolve(wrapper.auth, "medallion.toml")
    }

    #[test]
    fn a_created_token_is_recognised_by_the_entry_printed_for_it_and_nothing_else() {
        let token = new_token().unwrap();
        assert!(token.starts_with(TOKEN_PREFIX) && token.len() == TOKEN_PREFIX.len() + 64, "{token}");
        assert_ne!(token, new_token().unwrap());
        let entry = token_entry("bi", Role::Reader, &token);
        assert!(!entry.contains(&token[TOKEN_PREFIX.len()..]), "the token itself is never in the entry");
        let auth = file(&format!("{entry}\n[[auth.tokens]]\nname = \"ops\"\nrole = \"admin\"\nhash = \"{}\"\n", token_hash("other")))
            .unwrap();
        let tokens = auth.tokens(Some("legacy-token"));
        assert_eq!(tokens.identify(&token), Some(Identity { name: "bi".into(), role: Role::Reader }));
        assert_eq!(tokens.identify("other").map(|i| i.role), Some(Role::Admin));
        assert_eq!(tokens.identify("legacy-token"), Some(Identity { name: "admin".into(), role: Role::Admin }));
        assert_eq!(tokens.identify(&token[..token.len() - 1]), None);
        assert_eq!(tokens.identify(""), None);
        assert!(!tokens.is_open());
        assert!(AuthConfig::default().tokens(None).is_open());
    }

    #[test]
    fn bad_entries_are_one_line_naming_the_entry() {
        let hash = token_hash("x");
        let err = file(&format!("[[auth.tokens]]\nname = \"bi\"\nrole = \"boss\"\nhash = \"{hash}\"\n")).unwrap_err().to_string();
        assert!(err.contains("name = \"bi\"") && err.contains("reader, analyst or admin"), "{err}");
        let err = file("[[auth.tokens]]\nname = \"bi\"\nrole = \"reader\"\nhash = \"md5:00\"\n").unwrap_err().to_string();
        assert!(err.contains("sha256:") && err.lines().count() == 1, "{err}");
        let twice = format!("[[auth.tokens]]\nname = \"bi\"\nrole = \"reader\"\nhash = \"{hash}\"\n");
        let err = file(&format!("{twice}{twice}")).unwrap_err().to_string();
        assert!(err.contains("used twice"), "{err}");
    }
}
