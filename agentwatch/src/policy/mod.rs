//! The policy: which credentials taint an agent session, which hosts can change or destroy
//! a provider's infrastructure, which processes are agents, and what to do when a tainted
//! session connects to such a host.
//!
//! The built-in catalog (`default.toml`, compiled in) is always the base layer; a user file
//! extends it field by field (see [`Policy::load`]). The TOML is walked by hand over
//! toml's spanned document tree rather than through serde so that every problem in a file
//! is reported at once, each with its line and column, instead of stopping at the first.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

mod merge;
mod read;
mod validate;

use crate::operation::pattern::{CommandPattern, NamePattern, RestPattern, Rule};
use crate::operation::{HttpClient, OperationClass};
use merge::build;
pub use read::PolicyError;
use validate::{covers, normalize_lookup};

/// The catalog every policy starts from.
const BUILTIN: &str = include_str!("default.toml");
/// Where diagnostics about the catalog point (it is tested to have none).
const BUILTIN_PATH: &str = "<builtin>/default.toml";
/// The daemon's policy file when it is given none.
pub const DEFAULT_PATH: &str = "/etc/agentwatch/policy.toml";
/// The directory of drop-ins beside the policy file.
const DROPIN_DIR: &str = "policy.d";
/// Classes are bits of a session's 64-bit taint mask; one bit is left for other uses.
pub const MAX_CLASSES: usize = 63;
/// One day: an unanswered question must not hold a connection longer.
const MAX_ASK_TIMEOUT_SECS: i64 = 86_400;

/// What happens when a tainted session connects to an infrastructure host.
pub use agentwatch_common::names::Action;

/// A host in an allow rule: lowercased, without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// The name itself and every name below it.
    Suffix(String),
}

impl HostPattern {
    /// Whether `host` (any case, trailing dot or not) is covered by this pattern.
    pub fn matches(&self, host: &str) -> bool {
        let host = normalize_lookup(host);
        match self {
            HostPattern::Exact(name) => host == *name,
            HostPattern::Suffix(suffix) => covers(suffix, &host),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Provider {
    /// Table key, e.g. "railway".
    pub id: String,
    pub name: String,
    /// Exact hostnames, e.g. backboard.railway.app.
    pub hosts: Vec<String>,
    /// Suffixes: the name itself and every name below it.
    pub domains: Vec<String>,
    /// Suffixes below `domains` that are NOT infrastructure.
    pub exclude_domains: Vec<String>,
    /// Paths (globs) of the provider's GraphQL endpoint, e.g. `/graphql/v2`.
    pub graphql_paths: Vec<glob::Pattern>,
    /// GraphQL field names (of mutations) and what they do; an unlisted mutation `changes`.
    pub graphql: Vec<Rule<NamePattern>>,
    /// REST method and path rules, over the defaults: GET/HEAD/OPTIONS `reads`, DELETE
    /// `destructive`, others `changes`.
    pub rest: Vec<Rule<RestPattern>>,
    /// AWS query (`Action=`) and JSON (`X-Amz-Target`) protocol actions; unlisted `changes`.
    pub actions: Vec<Rule<NamePattern>>,
}

impl Provider {
    /// How specific this provider's claim on `host` is (longer wins); None if it has none.
    fn claim(&self, host: &str) -> Option<usize> {
        if self.hosts.iter().any(|h| h == host) {
            // An exact name is more specific than any suffix, even an excluding one.
            return Some(usize::MAX);
        }
        let domain = self
            .domains
            .iter()
            .filter(|d| covers(d, host))
            .map(String::len)
            .max()?;
        let excluded = self
            .exclude_domains
            .iter()
            .any(|e| e.len() >= domain && covers(e, host));
        (!excluded).then_some(domain)
    }
}

#[derive(Debug, Clone)]
pub struct CredentialClass {
    pub id: String,
    pub name: String,
    /// Providers this credential counts against; None = every provider.
    pub providers: Option<Vec<String>>,
    /// Glob patterns, `~/` = home of the watched user, or absolute.
    pub files: Vec<String>,
    pub exclude_files: Vec<String>,
    /// Environment variable names, e.g. RAILWAY_TOKEN.
    pub env: Vec<String>,
    /// File-name globs matched anywhere in the workspace, e.g. ".env", "*.tfvars".
    pub workspace_names: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct AllowRule {
    pub host: HostPattern,
    /// Class id; None = any credential.
    pub credential: Option<String>,
    pub comment: Option<String>,
}

/// "CLAUDECODE=1" → Equals, "CURSOR_TRACE_ID" → Present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvMarker {
    Present(String),
    Equals(String, String),
}

#[derive(Debug, Clone)]
pub struct AgentMatcher {
    pub id: String,
    pub name: String,
    /// Basenames of the executed file, e.g. "claude", "aider".
    pub executables: Vec<String>,
    /// Substrings matched against any argv element (for node/python-run agents).
    pub argv: Vec<String>,
    pub env: Vec<EnvMarker>,
    /// The executable's two innermost directories, for binaries named by
    /// their version (a native install's `claude/versions/2.1.197`).
    pub directories: Vec<DirectoryPair>,
}

/// `grandparent/parent`: the two directories an executable lies in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryPair {
    pub grandparent: String,
    pub parent: String,
}

impl DirectoryPair {
    /// Whether `executable` (a path) lies directly in these directories.
    pub fn contains(&self, executable: &std::path::Path) -> bool {
        let parent = executable.parent();
        let grandparent = parent.and_then(std::path::Path::parent);
        parent.and_then(std::path::Path::file_name) == Some(self.parent.as_ref())
            && grandparent.and_then(std::path::Path::file_name) == Some(self.grandparent.as_ref())
    }
}

/// A command-line tool whose invocations are judged at exec (`[commands.<id>]`).
#[derive(Debug, Clone)]
pub struct CommandTool {
    /// The provider whose infrastructure it changes, if one (and enabled).
    pub provider: Option<String>,
    /// Basenames of the executed file, e.g. "fly", "flyctl".
    pub executables: Vec<String>,
    /// Global flags that take their value as the next argument (`-n x`, `--region r`).
    pub value_flags: Vec<String>,
    /// The class of an invocation no rule matches.
    pub default: OperationClass,
    /// Its argv is read as the HTTP request it makes (curl, wget) instead of by rules.
    pub http_client: Option<HttpClient>,
    /// Subcommand words and flags, e.g. `volume delete`, `apply -destroy`.
    pub operations: Vec<Rule<CommandPattern>>,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub action: Action,
    /// For a call of a tainted session that `changes` infrastructure (TOML `changes`).
    pub changes: Action,
    /// For a call whose operation cannot be seen (TOML `unknown_operation`).
    pub unknown_operation: Action,
    /// Every credential counts against every provider.
    pub strict: bool,
    /// How long `ask` waits for an answer; TOML `ask_timeout_secs`.
    pub ask_timeout: Duration,
    pub providers: Vec<Provider>,
    /// At most [`MAX_CLASSES`]; a class's bit is its index.
    pub classes: Vec<CredentialClass>,
    pub allow: Vec<AllowRule>,
    pub agents: Vec<AgentMatcher>,
    pub commands: Vec<CommandTool>,
}

/// One problem in a policy file, with its place.
impl Policy {
    /// The built-in catalog (default.toml compiled in via include_str!).
    pub fn builtin() -> Policy {
        build(&[(Path::new(BUILTIN_PATH), BUILTIN)])
            .unwrap_or_else(|e| panic!("the built-in policy is invalid:\n{e}"))
    }

    /// The built-in catalog extended/overridden by the user file at `path`.
    ///
    /// A table whose id is already known overrides only the fields it sets;
    /// `enabled = false` removes the entry; new ids add entries; `[[allow]]` rules add up.
    /// Any problem makes it an error, so that a caller keeps its last good policy.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Policy::from_str_with_path(&text, path)
    }

    /// The daemon's configuration: `path` (or [`DEFAULT_PATH`], which may be absent) over the
    /// built-in catalog, then every `*.toml` in the `policy.d` directory beside it, in name
    /// order, so packages and configuration management can add to the policy without editing
    /// the operator's file. `policy check` and the unit's ExecStartPre/ExecReload read the same.
    pub fn load_config(path: Option<&Path>) -> Result<Policy, PolicyError> {
        let main = path.unwrap_or(Path::new(DEFAULT_PATH));
        let mut paths = Vec::new();
        if path.is_some() || main.exists() {
            paths.push(main.to_path_buf());
        }
        let dropins = main.with_file_name(DROPIN_DIR);
        match std::fs::read_dir(&dropins) {
            Ok(entries) => {
                let mut found: Vec<PathBuf> = entries
                    .filter_map(|entry| Some(entry.ok()?.path()))
                    .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
                    .collect();
                found.sort();
                paths.extend(found);
            }
            Err(source) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(PolicyError::Read {
                    path: dropins,
                    source,
                });
            }
        }
        let texts = paths
            .iter()
            .map(|path| {
                std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
                    path: path.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut files = vec![(Path::new(BUILTIN_PATH), BUILTIN)];
        files.extend(
            paths
                .iter()
                .map(PathBuf::as_path)
                .zip(texts.iter().map(String::as_str)),
        );
        build(&files)
    }

    /// Same, from text (path only for diagnostics).
    pub fn from_str_with_path(text: &str, path: &Path) -> Result<Policy, PolicyError> {
        build(&[(Path::new(BUILTIN_PATH), BUILTIN), (path, text)])
    }

    /// The provider with id `id`, if the policy has it.
    pub fn provider(&self, id: &str) -> Option<&Provider> {
        self.providers.iter().find(|provider| provider.id == id)
    }

    /// The provider whose hosts/domains cover `host` (longest suffix; exclusions => None).
    pub fn provider_of_host(&self, host: &str) -> Option<&Provider> {
        let host = normalize_lookup(host);
        let mut best: Option<(usize, &Provider)> = None;
        for provider in &self.providers {
            if let Some(len) = provider.claim(&host)
                && best.is_none_or(|(best_len, _)| len > best_len)
            {
                best = Some((len, provider));
            }
        }
        best.map(|(_, provider)| provider)
    }

    pub fn class_index(&self, id: &str) -> Option<usize> {
        self.classes.iter().position(|c| c.id == id)
    }

    /// Whether class number `class` counts against provider `provider` (strict → always true).
    pub fn class_counts_against(&self, class: usize, provider: &str) -> bool {
        let Some(class) = self.classes.get(class) else {
            return false;
        };
        self.strict
            || class
                .providers
                .as_ref()
                .is_none_or(|ids| ids.iter().any(|id| id == provider))
    }

    /// The class for a provider-specific "found by content" credential, if the provider has
    /// a class (the one its `credential_*` fields make, which shares its id).
    pub fn class_of_provider(&self, provider: &str) -> Option<usize> {
        self.class_index(provider)
    }
}

#[cfg(test)]
mod tests;
