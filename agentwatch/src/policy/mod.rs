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

/// The catalog every policy starts from.
const BUILTIN: &str = include_str!("default.toml");
/// Where diagnostics about the catalog point (it is tested to have none).
const BUILTIN_PATH: &str = "<builtin>/default.toml";
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
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub action: Action,
    /// Every credential counts against every provider.
    pub strict: bool,
    /// How long `ask` waits for an answer; TOML `ask_timeout_secs`.
    pub ask_timeout: Duration,
    pub providers: Vec<Provider>,
    /// At most [`MAX_CLASSES`]; a class's bit is its index.
    pub classes: Vec<CredentialClass>,
    pub allow: Vec<AllowRule>,
    pub agents: Vec<AgentMatcher>,
}

/// One problem in a policy file, with its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
}

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

    /// Same, from text (path only for diagnostics).
    pub fn from_str_with_path(text: &str, path: &Path) -> Result<Policy, PolicyError> {
        build(&[(Path::new(BUILTIN_PATH), BUILTIN), (path, text)])
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

/// `agentwatch policy check FILE`: prints "FILE: ok (N providers, M credential classes, K allow rules, A agents)"
/// to stdout and returns Ok(true), or prints every diagnostic to stderr and returns Ok(false).
pub fn check_command(path: &Path) -> anyhow::Result<bool> {
    match Policy::load(path) {
        Ok(policy) => {
            println!(
                "{}: ok ({} providers, {} credential classes, {} allow rules, {} agents)",
                path.display(),
                policy.providers.len(),
                policy.classes.len(),
                policy.allow.len(),
                policy.agents.len()
            );
            Ok(true)
        }
        Err(PolicyError::Invalid(diagnostics)) => {
            for diagnostic in diagnostics {
                eprintln!("{diagnostic}");
            }
            Ok(false)
        }
        Err(err) => Err(err.into()),
    }
}

// ---------------------------------------------------------------------------------------
// Names and patterns
// ---------------------------------------------------------------------------------------

/// A host as seen on the wire, in the form the policy stores names.
fn normalize_lookup(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// Whether `suffix` is `host` or a parent domain of it.
fn covers(suffix: &str, host: &str) -> bool {
    host.strip_suffix(suffix)
        .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
}

fn hostname(raw: &str) -> Result<String, String> {
    let host = normalize_lookup(raw);
    if host.is_empty() {
        return Err("empty hostname".into());
    }
    if host.len() > 253 {
        return Err(format!("hostname {raw:?} is longer than 253 characters"));
    }
    for label in host.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!(
                "invalid hostname {raw:?}: every label must have 1 to 63 characters"
            ));
        }
        let valid = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_';
        if !label.bytes().all(valid) {
            return Err(format!(
                "invalid hostname {raw:?}: only letters, digits, '-', '_' and '.' are allowed"
            ));
        }
    }
    Ok(host)
}

fn host_pattern(raw: &str) -> Result<HostPattern, String> {
    match raw.strip_prefix("*.").or_else(|| raw.strip_prefix('.')) {
        Some(suffix) => hostname(suffix).map(HostPattern::Suffix),
        None => hostname(raw).map(HostPattern::Exact),
    }
}

fn glob(raw: &str) -> Result<(), String> {
    glob::Pattern::new(raw)
        .map(drop)
        .map_err(|e| format!("invalid glob pattern {raw:?}: {e}"))
}

/// Relative patterns would depend on the watched process's working directory.
fn file_pattern(raw: &str) -> Result<String, String> {
    if raw.is_empty() {
        return Err("empty file pattern".into());
    }
    if !raw.starts_with("~/") && !raw.starts_with('/') {
        return Err(format!(
            "file pattern {raw:?} must start with \"~/\" or \"/\""
        ));
    }
    glob(raw)?;
    Ok(raw.to_string())
}

/// Workspace names are matched against a file's name alone.
fn name_pattern(raw: &str) -> Result<String, String> {
    if raw.is_empty() {
        return Err("empty file name pattern".into());
    }
    if raw.contains('/') {
        return Err(format!(
            "workspace name {raw:?} must be a file name, without '/'"
        ));
    }
    glob(raw)?;
    Ok(raw.to_string())
}

fn env_name(raw: &str) -> Result<String, String> {
    if raw.is_empty() {
        return Err("empty environment variable name".into());
    }
    if raw.contains('=') || raw.contains('\0') {
        return Err(format!(
            "environment variable name {raw:?} must not contain '=' or NUL"
        ));
    }
    Ok(raw.to_string())
}

fn env_marker(raw: &str) -> Result<EnvMarker, String> {
    if raw.is_empty() {
        return Err("empty environment marker".into());
    }
    match raw.split_once('=') {
        Some(("", _)) => Err(format!(
            "environment marker {raw:?} has an empty variable name"
        )),
        Some((name, value)) => Ok(EnvMarker::Equals(name.to_string(), value.to_string())),
        None => Ok(EnvMarker::Present(raw.to_string())),
    }
}

fn executable(raw: &str) -> Result<String, String> {
    if raw.is_empty() || raw.contains('/') {
        return Err(format!(
            "executable {raw:?} must be a non-empty file name, without '/'"
        ));
    }
    Ok(raw.to_string())
}

fn argv_substring(raw: &str) -> Result<String, String> {
    if raw.is_empty() {
        return Err("empty argv substring (it would match every process)".into());
    }
    Ok(raw.to_string())
}

/// Ids appear in alerts and reports; this also keeps "*" (= every provider) out.
fn id(raw: &str) -> Result<String, String> {
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if raw.is_empty() || !raw.chars().all(valid) {
        return Err(format!(
            "invalid id {raw:?}: use letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(raw.to_string())
}

// ---------------------------------------------------------------------------------------
// Reading one file into a layer of partial entries
// ---------------------------------------------------------------------------------------

/// A place in one of the layered files.
#[derive(Debug, Clone, Copy)]
struct Loc {
    file: usize,
    offset: usize,
}

/// The layered files and the problems found in them.
struct Diags<'a> {
    files: &'a [(&'a Path, &'a str)],
    list: Vec<Diagnostic>,
}

impl Diags<'_> {
    fn push(&mut self, loc: Loc, message: impl Into<String>) {
        let (path, text) = self.files[loc.file];
        let mut offset = loc.offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        self.list.push(Diagnostic {
            path: path.to_path_buf(),
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
            message: message.into(),
        });
    }
}

/// An entry's id and where it was first named.
struct Id {
    name: String,
    loc: Loc,
}

type List = Option<Vec<String>>;

#[derive(Default)]
struct ProviderPatch {
    enabled: Option<bool>,
    name: Option<String>,
    hosts: List,
    domains: List,
    exclude_domains: List,
    credential_files: List,
    credential_env: List,
}

#[derive(Default)]
struct ClassPatch {
    enabled: Option<bool>,
    name: Option<String>,
    /// Some(None) = "*"; the ids keep their places for the cross-check after merging.
    providers: Option<Option<Vec<(String, Loc)>>>,
    files: List,
    exclude_files: List,
    env: List,
    workspace_names: List,
}

#[derive(Default)]
struct AgentPatch {
    enabled: Option<bool>,
    name: Option<String>,
    executables: List,
    argv: List,
    env: Option<Vec<EnvMarker>>,
}

/// Field-level override: what `other` sets replaces what `self` had.
trait Patch: Default {
    fn merge(&mut self, other: Self);
    fn enabled(&self) -> bool;
}

macro_rules! patch {
    ($ty:ty: $($field:ident),*) => {
        impl Patch for $ty {
            fn merge(&mut self, other: Self) {
                $(if other.$field.is_some() { self.$field = other.$field; })*
            }
            fn enabled(&self) -> bool {
                self.enabled != Some(false)
            }
        }
    };
}
patch!(ProviderPatch: enabled, name, hosts, domains, exclude_domains, credential_files, credential_env);
patch!(ClassPatch: enabled, name, providers, files, exclude_files, env, workspace_names);
patch!(AgentPatch: enabled, name, executables, argv, env);

struct RawAllow {
    host: HostPattern,
    credential: Option<(String, Loc)>,
    comment: Option<String>,
}

#[derive(Default)]
struct Layer {
    action: Option<Action>,
    strict: Option<bool>,
    ask_timeout: Option<Duration>,
    providers: Vec<(Id, ProviderPatch)>,
    classes: Vec<(Id, ClassPatch)>,
    allow: Vec<RawAllow>,
    agents: Vec<(Id, AgentPatch)>,
}

type Entry<'t, 'i> = (&'t Spanned<Cow<'i, str>>, &'t Spanned<DeValue<'i>>);

/// A table's entries in file order (toml's map is sorted by key), so that class bits
/// follow the order in which classes are written.
fn entries<'t, 'i>(table: &'t DeTable<'i>) -> Vec<Entry<'t, 'i>> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

/// Reads one file's document tree, reporting problems as it goes.
struct Reader<'d, 'a> {
    diags: &'d mut Diags<'a>,
    file: usize,
}

impl Reader<'_, '_> {
    fn loc(&self, span: Range<usize>) -> Loc {
        Loc {
            file: self.file,
            offset: span.start,
        }
    }

    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        let loc = self.loc(span);
        self.diags.push(loc, message);
    }

    fn unknown_key(&mut self, key: &Spanned<Cow<'_, str>>, section: &str, known: &[&str]) {
        self.error(
            key.span(),
            format!(
                "unknown key {:?} in {section} (expected one of: {})",
                key.get_ref(),
                known.join(", ")
            ),
        );
    }

    fn string(&mut self, value: &Spanned<DeValue<'_>>, key: &str) -> Option<String> {
        match value.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            _ => {
                self.error(value.span(), format!("{key:?} must be a string"));
                None
            }
        }
    }

    fn boolean(&mut self, value: &Spanned<DeValue<'_>>, key: &str) -> Option<bool> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.error(value.span(), format!("{key:?} must be true or false"));
                None
            }
        }
    }

    fn table<'t, 'i>(
        &mut self,
        value: &'t Spanned<DeValue<'i>>,
        what: &str,
    ) -> Option<&'t DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(table) => Some(table),
            _ => {
                self.error(value.span(), format!("{what} must be a table"));
                None
            }
        }
    }

    /// An array of strings, each with its span.
    fn strings(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        key: &str,
    ) -> Option<Vec<(String, Range<usize>)>> {
        let DeValue::Array(array) = value.get_ref() else {
            self.error(value.span(), format!("{key:?} must be an array of strings"));
            return None;
        };
        let mut items = Vec::new();
        for item in array.iter() {
            match item.get_ref() {
                DeValue::String(s) => items.push((s.to_string(), item.span())),
                _ => self.error(item.span(), format!("{key:?} must contain only strings")),
            }
        }
        Some(items)
    }

    /// An array of strings, each checked (and normalized) by `check`.
    fn checked<T>(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        key: &str,
        check: fn(&str) -> Result<T, String>,
    ) -> Option<Vec<T>> {
        let items = self.strings(value, key)?;
        let mut out = Vec::with_capacity(items.len());
        for (item, span) in items {
            match check(&item) {
                Ok(item) => out.push(item),
                Err(message) => self.error(span, message),
            }
        }
        Some(out)
    }

    fn ask_timeout(&mut self, value: &Spanned<DeValue<'_>>) -> Option<Duration> {
        let secs = match value.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok(),
            _ => {
                self.error(value.span(), "\"ask_timeout_secs\" must be an integer");
                return None;
            }
        };
        match secs {
            Some(secs @ 1..=MAX_ASK_TIMEOUT_SECS) => Some(Duration::from_secs(secs.unsigned_abs())),
            _ => {
                self.error(
                    value.span(),
                    format!("\"ask_timeout_secs\" must be between 1 and {MAX_ASK_TIMEOUT_SECS}"),
                );
                None
            }
        }
    }

    fn layer(&mut self, root: &DeTable<'_>) -> Layer {
        const KEYS: &[&str] = &[
            "action",
            "strict",
            "ask_timeout_secs",
            "providers",
            "credentials",
            "allow",
            "agents",
        ];
        let mut layer = Layer::default();
        for (key, value) in entries(root) {
            match key.get_ref().as_ref() {
                "action" => {
                    if let Some(name) = self.string(value, "action") {
                        match name.parse() {
                            Ok(action) => layer.action = Some(action),
                            Err(err) => self.error(value.span(), format!("{err}")),
                        }
                    }
                }
                "strict" => layer.strict = self.boolean(value, "strict"),
                "ask_timeout_secs" => layer.ask_timeout = self.ask_timeout(value),
                "providers" => {
                    for (id, table) in self.section(value, "providers") {
                        let patch = self.provider(table);
                        layer.providers.push((id, patch));
                    }
                }
                "credentials" => {
                    for (id, table) in self.section(value, "credentials") {
                        let patch = self.class(table);
                        layer.classes.push((id, patch));
                    }
                }
                "agents" => {
                    for (id, table) in self.section(value, "agents") {
                        let patch = self.agent(table);
                        layer.agents.push((id, patch));
                    }
                }
                "allow" => layer.allow = self.allow(value),
                _ => self.unknown_key(key, "the policy", KEYS),
            }
        }
        layer
    }

    /// `[section.<id>]` tables, with valid ids, in file order.
    fn section<'t, 'i>(
        &mut self,
        value: &'t Spanned<DeValue<'i>>,
        section: &str,
    ) -> Vec<(Id, &'t DeTable<'i>)> {
        let Some(table) = self.table(value, &format!("{section:?}")) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (key, value) in entries(table) {
            let name = match id(key.get_ref()) {
                Ok(name) => name,
                Err(message) => {
                    self.error(key.span(), message);
                    continue;
                }
            };
            let what = format!("[{section}.{name}]");
            if let Some(table) = self.table(value, &what) {
                let loc = self.loc(key.span());
                out.push((Id { name, loc }, table));
            }
        }
        out
    }

    fn provider(&mut self, table: &DeTable<'_>) -> ProviderPatch {
        const KEYS: &[&str] = &[
            "enabled",
            "name",
            "hosts",
            "domains",
            "exclude_domains",
            "credential_files",
            "credential_env",
        ];
        let mut p = ProviderPatch::default();
        for (key, value) in entries(table) {
            let k = key.get_ref().as_ref();
            match k {
                "enabled" => p.enabled = self.boolean(value, k),
                "name" => p.name = self.string(value, k),
                "hosts" => p.hosts = self.checked(value, k, hostname),
                "domains" => p.domains = self.checked(value, k, hostname),
                "exclude_domains" => p.exclude_domains = self.checked(value, k, hostname),
                "credential_files" => p.credential_files = self.checked(value, k, file_pattern),
                "credential_env" => p.credential_env = self.checked(value, k, env_name),
                _ => self.unknown_key(key, "a provider", KEYS),
            }
        }
        p
    }

    fn class(&mut self, table: &DeTable<'_>) -> ClassPatch {
        const KEYS: &[&str] = &[
            "enabled",
            "name",
            "providers",
            "files",
            "exclude_files",
            "env",
            "workspace_names",
        ];
        let mut c = ClassPatch::default();
        for (key, value) in entries(table) {
            let k = key.get_ref().as_ref();
            match k {
                "enabled" => c.enabled = self.boolean(value, k),
                "name" => c.name = self.string(value, k),
                "providers" => {
                    c.providers = self.strings(value, k).map(|ids| {
                        (!ids.iter().any(|(id, _)| id == "*")).then(|| {
                            ids.into_iter()
                                .map(|(id, span)| (id, self.loc(span)))
                                .collect()
                        })
                    });
                }
                "files" => c.files = self.checked(value, k, file_pattern),
                "exclude_files" => c.exclude_files = self.checked(value, k, file_pattern),
                "env" => c.env = self.checked(value, k, env_name),
                "workspace_names" => c.workspace_names = self.checked(value, k, name_pattern),
                _ => self.unknown_key(key, "a credential class", KEYS),
            }
        }
        c
    }

    fn agent(&mut self, table: &DeTable<'_>) -> AgentPatch {
        const KEYS: &[&str] = &["enabled", "name", "executables", "argv", "env"];
        let mut a = AgentPatch::default();
        for (key, value) in entries(table) {
            let k = key.get_ref().as_ref();
            match k {
                "enabled" => a.enabled = self.boolean(value, k),
                "name" => a.name = self.string(value, k),
                "executables" => a.executables = self.checked(value, k, executable),
                "argv" => a.argv = self.checked(value, k, argv_substring),
                "env" => a.env = self.checked(value, k, env_marker),
                _ => self.unknown_key(key, "an agent", KEYS),
            }
        }
        a
    }

    fn allow(&mut self, value: &Spanned<DeValue<'_>>) -> Vec<RawAllow> {
        const KEYS: &[&str] = &["host", "credential", "comment"];
        let DeValue::Array(rules) = value.get_ref() else {
            self.error(
                value.span(),
                "\"allow\" must be an array of tables ([[allow]])",
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for rule in rules.iter() {
            let Some(table) = self.table(rule, "an [[allow]] rule") else {
                continue;
            };
            let (mut host, mut host_seen, mut credential, mut comment) = (None, false, None, None);
            for (key, value) in entries(table) {
                let k = key.get_ref().as_ref();
                match k {
                    "host" => {
                        host_seen = true;
                        if let Some(raw) = self.string(value, k) {
                            match host_pattern(&raw) {
                                Ok(pattern) => host = Some(pattern),
                                Err(message) => self.error(value.span(), message),
                            }
                        }
                    }
                    "credential" => {
                        credential = self.string(value, k).map(|c| (c, self.loc(value.span())));
                    }
                    "comment" => comment = self.string(value, k),
                    _ => self.unknown_key(key, "an [[allow]] rule", KEYS),
                }
            }
            match host {
                Some(host) => out.push(RawAllow {
                    host,
                    credential,
                    comment,
                }),
                None if !host_seen => self.error(rule.span(), "[[allow]] rule without \"host\""),
                None => {}
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// Merging layers and resolving them into a policy
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Merged {
    action: Action,
    strict: bool,
    ask_timeout: Option<Duration>,
    providers: Vec<(Id, ProviderPatch)>,
    classes: Vec<(Id, ClassPatch)>,
    /// Every class id in order of first mention (provider shorthand or `[credentials]`):
    /// later layers append, so the catalog's bits stay put when a user adds classes.
    class_order: Vec<Id>,
    allow: Vec<RawAllow>,
    agents: Vec<(Id, AgentPatch)>,
}

fn upsert<P: Patch>(list: &mut Vec<(Id, P)>, id: Id, patch: P) {
    match list.iter_mut().find(|(known, _)| known.name == id.name) {
        Some((_, known)) => known.merge(patch),
        None => list.push((id, patch)),
    }
}

fn find<'a, P>(list: &'a [(Id, P)], id: &str) -> Option<&'a P> {
    list.iter()
        .find(|(known, _)| known.name == id)
        .map(|(_, patch)| patch)
}

fn note_class(order: &mut Vec<Id>, id: &Id) {
    if !order.iter().any(|known| known.name == id.name) {
        order.push(Id {
            name: id.name.clone(),
            loc: id.loc,
        });
    }
}

impl Merged {
    fn add(&mut self, layer: Layer) {
        if let Some(action) = layer.action {
            self.action = action;
        }
        if let Some(strict) = layer.strict {
            self.strict = strict;
        }
        if layer.ask_timeout.is_some() {
            self.ask_timeout = layer.ask_timeout;
        }
        for (id, patch) in layer.providers {
            if patch.credential_files.is_some() || patch.credential_env.is_some() {
                note_class(&mut self.class_order, &id);
            }
            upsert(&mut self.providers, id, patch);
        }
        for (id, patch) in layer.classes {
            note_class(&mut self.class_order, &id);
            upsert(&mut self.classes, id, patch);
        }
        self.allow.extend(layer.allow);
        for (id, patch) in layer.agents {
            upsert(&mut self.agents, id, patch);
        }
    }

    fn resolve(self, diags: &mut Diags<'_>) -> Policy {
        let provider_enabled = |id: &str| find(&self.providers, id).is_some_and(Patch::enabled);

        let mut classes = Vec::new();
        for id in &self.class_order {
            let explicit = find(&self.classes, &id.name);
            if explicit.is_some_and(|c| !c.enabled()) {
                continue;
            }
            let shorthand = find(&self.providers, &id.name).filter(|p| p.enabled());
            let short_files = shorthand.and_then(|p| p.credential_files.clone());
            let short_env = shorthand.and_then(|p| p.credential_env.clone());
            let has_shorthand = short_files.as_ref().is_some_and(|f| !f.is_empty())
                || short_env.as_ref().is_some_and(|e| !e.is_empty());
            if explicit.is_none() && !has_shorthand {
                continue;
            }
            let explicit_providers = explicit.and_then(|c| c.providers.as_ref());
            let providers = match explicit_providers {
                Some(None) => None,
                Some(Some(ids)) => {
                    let mut kept = Vec::new();
                    for (provider, loc) in ids {
                        if provider_enabled(provider) {
                            kept.push(provider.clone());
                        } else if find(&self.providers, provider).is_none() {
                            diags.push(*loc, format!("unknown provider {provider:?}"));
                        }
                        // A provider disabled by the user silently leaves the list.
                    }
                    Some(kept)
                }
                // A class named after a provider is that provider's credential.
                None if find(&self.providers, &id.name).is_some() => Some(
                    provider_enabled(&id.name)
                        .then(|| id.name.clone())
                        .into_iter()
                        .collect(),
                ),
                None => None,
            };
            let field = |get: fn(&ClassPatch) -> &List| {
                explicit.and_then(|c| get(c).clone()).unwrap_or_default()
            };
            classes.push(CredentialClass {
                id: id.name.clone(),
                name: explicit
                    .and_then(|c| c.name.clone())
                    .or_else(|| shorthand.and_then(|p| p.name.clone()))
                    .unwrap_or_else(|| id.name.clone()),
                providers,
                files: union(field(|c| &c.files), short_files),
                exclude_files: field(|c| &c.exclude_files),
                env: union(field(|c| &c.env), short_env),
                workspace_names: field(|c| &c.workspace_names),
            });
            if classes.len() == MAX_CLASSES + 1 {
                diags.push(
                    id.loc,
                    format!("too many credential classes: at most {MAX_CLASSES} are allowed"),
                );
            }
        }

        let mut allow = Vec::new();
        for rule in self.allow {
            let credential = match rule.credential {
                None => None,
                Some((class, _)) if classes.iter().any(|c| c.id == class) => Some(class),
                // A class the user disabled takes its rules with it.
                Some((class, _)) if self.class_order.iter().any(|id| id.name == class) => {
                    continue;
                }
                Some((class, loc)) => {
                    diags.push(loc, format!("unknown credential class {class:?}"));
                    continue;
                }
            };
            allow.push(AllowRule {
                host: rule.host,
                credential,
                comment: rule.comment,
            });
        }

        let providers = self
            .providers
            .into_iter()
            .filter(|(_, p)| p.enabled())
            .map(|(id, p)| Provider {
                name: p.name.unwrap_or_else(|| id.name.clone()),
                id: id.name,
                hosts: p.hosts.unwrap_or_default(),
                domains: p.domains.unwrap_or_default(),
                exclude_domains: p.exclude_domains.unwrap_or_default(),
            })
            .collect();
        let agents = self
            .agents
            .into_iter()
            .filter(|(_, a)| a.enabled())
            .map(|(id, a)| AgentMatcher {
                name: a.name.unwrap_or_else(|| id.name.clone()),
                id: id.name,
                executables: a.executables.unwrap_or_default(),
                argv: a.argv.unwrap_or_default(),
                env: a.env.unwrap_or_default(),
            })
            .collect();

        Policy {
            action: self.action,
            strict: self.strict,
            ask_timeout: self.ask_timeout.unwrap_or(Duration::from_secs(120)),
            providers,
            classes,
            allow,
            agents,
        }
    }
}

/// `a` followed by what `b` adds to it.
fn union(mut a: Vec<String>, b: List) -> Vec<String> {
    for item in b.unwrap_or_default() {
        if !a.contains(&item) {
            a.push(item);
        }
    }
    a
}

/// Reads every layer (a later one overriding an earlier one) into a policy.
fn build(files: &[(&Path, &str)]) -> Result<Policy, PolicyError> {
    let mut diags = Diags {
        files,
        list: Vec::new(),
    };
    let mut merged = Merged::default();
    for (file, (_, text)) in files.iter().enumerate() {
        let (document, errors) = DeTable::parse_recoverable(text);
        if !errors.is_empty() {
            // A tree rebuilt around syntax errors would only add confusing problems.
            for err in errors {
                let offset = err.span().map_or(0, |span| span.start);
                diags.push(Loc { file, offset }, err.message().trim().to_string());
            }
            continue;
        }
        let layer = Reader {
            diags: &mut diags,
            file,
        }
        .layer(document.get_ref());
        merged.add(layer);
    }
    let policy = merged.resolve(&mut diags);
    if diags.list.is_empty() {
        Ok(policy)
    } else {
        let mut list = diags.list;
        list.sort_by(|a, b| (&a.path, a.line, a.column).cmp(&(&b.path, b.line, b.column)));
        Err(PolicyError::Invalid(list))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(text: &str) -> Result<Policy, PolicyError> {
        Policy::from_str_with_path(text, Path::new("user.toml"))
    }

    fn ok(text: &str) -> Policy {
        user(text).unwrap_or_else(|e| panic!("unexpected diagnostics:\n{e}"))
    }

    /// (line, column, message) of every diagnostic, all pointing into user.toml.
    fn problems(text: &str) -> Vec<(usize, usize, String)> {
        match user(text) {
            Err(PolicyError::Invalid(list)) => list
                .into_iter()
                .inspect(|d| assert_eq!(d.path, Path::new("user.toml")))
                .map(|d| (d.line, d.column, d.message))
                .collect(),
            other => panic!("expected diagnostics, got {other:?}"),
        }
    }

    fn ids<T>(items: &[T], id: fn(&T) -> &str) -> Vec<String> {
        items.iter().map(|i| id(i).to_string()).collect()
    }

    fn class<'p>(policy: &'p Policy, id: &str) -> &'p CredentialClass {
        &policy.classes[policy.class_index(id).expect(id)]
    }

    #[test]
    fn builtin_parses_and_has_the_catalog_ids() {
        let policy = Policy::builtin();
        assert_eq!(policy.action, Action::Block);
        assert!(!policy.strict);
        assert_eq!(policy.ask_timeout, Duration::from_secs(120));
        let providers = ids(&policy.providers, |p| &p.id);
        for id in [
            "railway",
            "aws",
            "github",
            "gcp",
            "azure",
            "fly",
            "vercel",
            "netlify",
            "heroku",
            "render",
            "digitalocean",
            "cloudflare",
            "supabase",
            "neon",
            "hetzner",
            "linode",
            "vultr",
            "scaleway",
            "terraform",
            "pulumi",
            "planetscale",
            "anthropic",
            "openai",
            "gemini",
        ] {
            assert!(providers.contains(&id.to_string()), "provider {id}");
        }
        let classes = ids(&policy.classes, |c| &c.id);
        for id in [
            "railway",
            "aws",
            "github",
            "gcp",
            "ssh",
            "kube",
            "docker",
            "netrc",
            "git-credentials",
            "workspace",
            "found",
            "npm",
            "pypi",
            "cargo",
            "anthropic",
            "openai",
            "gemini",
        ] {
            assert!(classes.contains(&id.to_string()), "class {id}");
        }
        assert!(
            policy.classes.len() <= 40,
            "{} classes",
            policy.classes.len()
        );
        let agents = ids(&policy.agents, |a| &a.id);
        for id in [
            "claude-code",
            "codex",
            "gemini-cli",
            "cursor",
            "aider",
            "copilot-cli",
        ] {
            assert!(agents.contains(&id.to_string()), "agent {id}");
        }
        let github = &policy.providers[providers.iter().position(|p| p == "github").unwrap()];
        assert_eq!(github.hosts, ["api.github.com", "uploads.github.com"]);
        assert!(github.domains.is_empty());
        let railway = class(&policy, "railway");
        assert!(
            railway
                .files
                .contains(&"~/.railway/config.json".to_string())
        );
        assert_eq!(railway.env, ["RAILWAY_TOKEN", "RAILWAY_API_TOKEN"]);
        assert_eq!(railway.providers, Some(vec!["railway".to_string()]));
        assert_eq!(class(&policy, "kube").providers, None);
        assert_eq!(class(&policy, "workspace").providers, None);
        assert_eq!(class(&policy, "found").providers, None);
        assert!(class(&policy, "found").files.is_empty());
        let netrc = class(&policy, "netrc").providers.clone();
        assert_eq!(netrc, Some(vec!["heroku".into(), "github".into()]));
        let claude = &policy.agents[0];
        assert_eq!(claude.id, "claude-code");
        assert_eq!(
            claude.env[0],
            EnvMarker::Equals("CLAUDECODE".into(), "1".into())
        );
        assert!(policy.allow.is_empty());
    }

    #[test]
    fn builtin_infrastructure_hosts() {
        let policy = Policy::builtin();
        let of = |host| policy.provider_of_host(host).map(|p| p.id.as_str());
        assert_eq!(of("backboard.railway.app"), Some("railway"));
        assert_eq!(of("Backboard.Railway.App."), Some("railway"));
        assert_eq!(of("myapp.up.railway.app"), None);
        assert_eq!(of("railway.app"), None);
        assert_eq!(of("s3.us-east-1.amazonaws.com"), Some("aws"));
        assert_eq!(of("bucket.s3.amazonaws.com"), Some("aws"));
        assert_eq!(of("EC2.EU-WEST-1.AMAZONAWS.COM."), Some("aws"));
        assert_eq!(of("bedrock.us-east-1.amazonaws.com"), Some("aws"));
        assert_eq!(of("bedrock-runtime.us-east-1.amazonaws.com"), None);
        assert_eq!(of("storage.googleapis.com"), Some("gcp"));
        assert_eq!(of("generativelanguage.googleapis.com"), None);
        assert_eq!(of("api.github.com"), Some("github"));
        assert_eq!(of("github.com"), None);
        assert_eq!(of("raw.githubusercontent.com"), None);
        assert_eq!(of("objects.githubusercontent.com"), None);
        assert_eq!(of("api.anthropic.com"), None);
        assert_eq!(of("registry-1.docker.io"), None);
        assert_eq!(of("console.neon.tech"), Some("neon"));
    }

    fn provider(id: &str, hosts: &[&str], domains: &[&str], exclude: &[&str]) -> Provider {
        let own = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        Provider {
            id: id.into(),
            name: id.into(),
            hosts: own(hosts),
            domains: own(domains),
            exclude_domains: own(exclude),
        }
    }

    #[test]
    fn provider_of_host_prefers_longest_suffix_and_honours_exclusions() {
        let mut policy = Policy::builtin();
        policy.providers = vec![
            provider("a", &[], &["example.com"], &["static.example.com"]),
            provider("b", &[], &["api.example.com"], &[]),
            provider("c", &["cdn.static.example.com"], &[], &[]),
        ];
        let of = |host| policy.provider_of_host(host).map(|p| p.id.as_str());
        assert_eq!(of("example.com"), Some("a"));
        assert_eq!(of("WWW.Example.COM."), Some("a"));
        assert_eq!(of("api.example.com"), Some("b"));
        assert_eq!(of("v1.api.example.com"), Some("b"));
        assert_eq!(of("static.example.com"), None);
        assert_eq!(of("img.static.example.com"), None);
        assert_eq!(of("cdn.static.example.com"), Some("c"));
        assert_eq!(of("notexample.com"), None);
        assert_eq!(of(""), None);
    }

    #[test]
    fn class_counts_against_its_providers() {
        let mut policy = Policy::builtin();
        let railway = policy.class_index("railway").unwrap();
        let workspace = policy.class_index("workspace").unwrap();
        let netrc = policy.class_index("netrc").unwrap();
        assert!(policy.class_counts_against(railway, "railway"));
        assert!(!policy.class_counts_against(railway, "aws"));
        assert!(policy.class_counts_against(workspace, "aws"));
        assert!(policy.class_counts_against(workspace, "railway"));
        assert!(policy.class_counts_against(netrc, "heroku"));
        assert!(!policy.class_counts_against(netrc, "aws"));
        assert!(!policy.class_counts_against(policy.classes.len(), "aws"));
        policy.strict = true;
        assert!(policy.class_counts_against(railway, "aws"));
        assert!(policy.class_counts_against(policy.class_index("ssh").unwrap(), "github"));
        assert!(!policy.class_counts_against(policy.classes.len(), "aws"));
    }

    #[test]
    fn ssh_and_registry_tokens_count_against_no_infrastructure() {
        let policy = Policy::builtin();
        for id in ["ssh", "docker", "npm", "pypi", "cargo"] {
            let class = policy.class_index(id).unwrap();
            assert_eq!(policy.classes[class].providers, Some(vec![]), "{id}");
            for provider in &policy.providers {
                assert!(!policy.class_counts_against(class, &provider.id), "{id}");
            }
        }
        let ssh = class(&policy, "ssh");
        assert_eq!(ssh.files, ["~/.ssh/id_*"]);
        assert_eq!(ssh.exclude_files, ["~/.ssh/*.pub"]);
    }

    #[test]
    fn class_of_provider_is_the_providers_own_class() {
        let policy = Policy::builtin();
        assert_eq!(policy.class_of_provider("aws"), policy.class_index("aws"));
        assert!(policy.class_of_provider("aws").is_some());
        assert_eq!(policy.class_of_provider("kubernetes"), None);
        assert_eq!(policy.class_of_provider("nosuch"), None);
    }

    #[test]
    fn user_file_overrides_fields_and_adds_entries() {
        let builtin = Policy::builtin();
        let policy = ok(r#"
action = "ask"
strict = true
ask_timeout_secs = 30

[providers.railway]
hosts = ["Backboard.Example.COM."]

[credentials.railway]
files = ["~/.other/railway.json"]

[credentials.workspace]
workspace_names = [".secrets"]

[providers.acme]
name = "Acme"
domains = ["acme.io"]
credential_files = ["~/.acme/token"]
credential_env = ["ACME_TOKEN"]

[credentials.vault]
files = ["/etc/vault/*.hcl"]
providers = ["acme", "aws"]

[agents.claude-code]
argv = ["claude-wrapper"]

[agents.mybot]
executables = ["mybot"]
env = ["MYBOT"]
"#);
        assert_eq!(policy.action, Action::Ask);
        assert!(policy.strict);
        assert_eq!(policy.ask_timeout, Duration::from_secs(30));

        let railway = &policy.providers[0];
        assert_eq!(railway.id, "railway");
        assert_eq!(railway.name, "Railway");
        assert_eq!(railway.hosts, ["backboard.example.com"]);
        let class_railway = class(&policy, "railway");
        assert_eq!(class_railway.files[0], "~/.other/railway.json");
        assert!(
            class_railway
                .files
                .contains(&"~/.railway/config.json".into())
        );
        assert_eq!(class_railway.providers, Some(vec!["railway".into()]));

        let workspace = class(&policy, "workspace");
        assert_eq!(workspace.workspace_names, [".secrets"]);
        assert_eq!(workspace.name, "Workspace secrets");
        assert!(!workspace.exclude_files.is_empty());

        // The catalog's bits stay put; the user's classes come after them.
        let n = builtin.classes.len();
        assert_eq!(
            ids(&policy.classes[..n], |c| &c.id),
            ids(&builtin.classes, |c| &c.id)
        );
        assert_eq!(policy.class_index("acme"), Some(n));
        assert_eq!(policy.class_index("vault"), Some(n + 1));
        let acme = class(&policy, "acme");
        assert_eq!(acme.name, "Acme");
        assert_eq!(acme.providers, Some(vec!["acme".into()]));
        assert_eq!(acme.files, ["~/.acme/token"]);
        assert_eq!(acme.env, ["ACME_TOKEN"]);
        let vault = class(&policy, "vault");
        assert_eq!(vault.name, "vault");
        assert_eq!(vault.providers, Some(vec!["acme".into(), "aws".into()]));
        assert_eq!(policy.provider_of_host("x.acme.io").unwrap().id, "acme");

        let claude = policy
            .agents
            .iter()
            .find(|a| a.id == "claude-code")
            .unwrap();
        assert_eq!(claude.executables, ["claude"]);
        assert_eq!(claude.argv, ["claude-wrapper"]);
        let mybot = policy.agents.last().unwrap();
        assert_eq!(mybot.id, "mybot");
        assert_eq!(mybot.name, "mybot");
        assert_eq!(mybot.env, [EnvMarker::Present("MYBOT".into())]);
    }

    #[test]
    fn enabled_false_removes_entries() {
        let policy = ok(r#"
[providers.heroku]
enabled = false

[credentials.ssh]
enabled = false

[agents.aider]
enabled = false

[[allow]]
host = "api.github.com"
credential = "ssh"
"#);
        assert!(policy.providers.iter().all(|p| p.id != "heroku"));
        assert_eq!(policy.class_index("heroku"), None);
        assert_eq!(policy.class_index("ssh"), None);
        assert!(policy.agents.iter().all(|a| a.id != "aider"));
        assert_eq!(
            class(&policy, "netrc").providers,
            Some(vec!["github".into()])
        );
        // A rule for a class that no longer exists goes with it.
        assert!(policy.allow.is_empty());
        assert!(policy.class_index("railway").is_some());
    }

    #[test]
    fn allow_rules() {
        let policy = ok(r#"
[[allow]]
host = "api.github.com"
credential = "github"
comment = "gh CLI pushes"

[[allow]]
host = "*.Example.com."

[[allow]]
host = ".corp.internal"
"#);
        let [a, b, c] = &policy.allow[..] else {
            panic!("{:?}", policy.allow)
        };
        assert_eq!(a.host, HostPattern::Exact("api.github.com".into()));
        assert_eq!(a.credential.as_deref(), Some("github"));
        assert_eq!(a.comment.as_deref(), Some("gh CLI pushes"));
        assert_eq!(b.host, HostPattern::Suffix("example.com".into()));
        assert_eq!(b.credential, None);
        assert_eq!(b.comment, None);
        assert_eq!(c.host, HostPattern::Suffix("corp.internal".into()));
        assert!(a.host.matches("API.GitHub.com."));
        assert!(!a.host.matches("uploads.github.com"));
        assert!(b.host.matches("example.com"));
        assert!(b.host.matches("a.b.example.com"));
        assert!(!b.host.matches("badexample.com"));
    }

    #[test]
    fn action_names() {
        for (name, action) in [
            ("observe", Action::Observe),
            ("alert", Action::Alert),
            ("block", Action::Block),
            ("kill", Action::Kill),
            ("ask", Action::Ask),
        ] {
            assert_eq!(name.parse::<Action>(), Ok(action));
            assert_eq!(action.to_string(), name);
        }
        let err = "Block".parse::<Action>().unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown action \"Block\" (expected one of observe, alert, block, kill, ask)"
        );
        assert_eq!(Action::default(), Action::Block);
    }

    #[test]
    fn every_problem_is_reported_at_its_place() {
        let text = r#"action = "explode"
strict = "yes"
ask_timeout_secs = 0
colour = "blue"

[providers.acme]
hosts = ["api.acme.io", "", "bad host.io"]
domains = "acme.io"
credential_files = ["relative/path", "~/.acme/[creds"]
credential_env = [""]
flavour = 1

[credentials.acme-extra]
providers = ["acme", "nosuch"]
workspace_names = ["a/b"]

[[allow]]
host = "*.Example.com"
credential = "nosuch-class"

[agents.bot]
env = ["", "=1", "BOT=1"]
executables = [1]
"#;
        let found = problems(text);
        let places: Vec<_> = found.iter().map(|(l, c, _)| (*l, *c)).collect();
        assert_eq!(
            places,
            [
                (1, 10),
                (2, 10),
                (3, 20),
                (4, 1),
                (7, 25),
                (7, 29),
                (8, 11),
                (9, 21),
                (9, 38),
                (10, 19),
                (11, 1),
                (14, 22),
                (15, 20),
                (19, 14),
                (22, 8),
                (22, 12),
                (23, 16),
            ],
            "{found:#?}"
        );
        let expect = [
            "unknown action \"explode\"",
            "\"strict\" must be true or false",
            "\"ask_timeout_secs\" must be between 1 and 86400",
            "unknown key \"colour\" in the policy",
            "empty hostname",
            "invalid hostname \"bad host.io\"",
            "\"domains\" must be an array of strings",
            "must start with \"~/\" or \"/\"",
            "invalid glob pattern \"~/.acme/[creds\"",
            "empty environment variable name",
            "unknown key \"flavour\" in a provider",
            "unknown provider \"nosuch\"",
            "must be a file name",
            "unknown credential class \"nosuch-class\"",
            "empty environment marker",
            "empty variable name",
            "\"executables\" must contain only strings",
        ];
        for ((_, _, message), want) in found.iter().zip(expect) {
            assert!(message.contains(want), "{message:?} lacks {want:?}");
        }
    }

    #[test]
    fn more_problems_at_their_places() {
        let at = |text: &str| {
            let found = problems(text);
            (found[0].0, found[0].1)
        };
        assert_eq!(at("ask_timeout_secs = 86401\n"), (1, 20));
        assert_eq!(at("ask_timeout_secs = -5\n"), (1, 20));
        assert_eq!(at("\n  action = 3\n"), (2, 12));
        let found = problems("\n\nproviders = 3\n[credentials.x]\nenabled = \"no\"\n");
        let places: Vec<_> = found.iter().map(|(l, c, m)| (*l, *c, m.as_str())).collect();
        assert_eq!(
            places,
            [
                (3, 13, "\"providers\" must be a table"),
                (5, 11, "\"enabled\" must be true or false"),
            ]
        );
        let found = problems("[[allow]]\ncomment = \"no host\"\n[[allow]]\nhost = \"a..b\"\n");
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!((found[0].0, found[0].1), (1, 1), "{found:?}");
        assert!(found[0].2.contains("without \"host\""));
        assert_eq!((found[1].0, found[1].1), (4, 8), "{found:?}");
        let long = format!("[providers.x]\nhosts = [\"{}.com\"]\n", "a".repeat(64));
        assert_eq!(at(&long), (2, 10));
        assert_eq!(at("[credentials.x]\nfiles = [\"~/a\", \"a\"]\n"), (2, 17));
        assert_eq!(
            at("[credentials.x]\nexclude_files = [\"/a/***\"]\n"),
            (2, 18)
        );
        assert_eq!(at("[credentials.x]\nproviders = [\"*\", 3]\n"), (2, 19));
        assert_eq!(at("[providers.\"a b\"]\n"), (1, 12));
        assert_eq!(at("[agents.x]\nargv = [\"\"]\n"), (2, 9));
        assert_eq!(at("[agents.x]\nexecutables = [\"bin/x\"]\n"), (2, 16));
        assert_eq!(at("[[allow]]\nhost = \"*.\"\n"), (2, 8));
        // Syntax errors come from the TOML parser, also with their places.
        let found = problems("strict = true\nhosts = [\n");
        assert_eq!(found[0].0, 2, "{found:?}");
        let found = problems("[providers.railway]\n[providers.railway]\n");
        assert_eq!(found[0].0, 2, "{found:?}");
    }

    #[test]
    fn at_most_63_classes() {
        let builtin = Policy::builtin().classes.len();
        let text: String = (0..MAX_CLASSES)
            .map(|i| format!("[credentials.c{i}]\nfiles = [\"~/c{i}\"]\n"))
            .collect();
        let found = problems(&text);
        // The 64th class overall is the user's (64 - builtin)th.
        let first_over = MAX_CLASSES - builtin;
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].0, found[0].1), (2 * first_over + 1, 14));
        assert!(found[0].2.contains("too many credential classes"));
        // Exactly 63 is fine.
        let text: String = (0..MAX_CLASSES - builtin)
            .map(|i| format!("[credentials.c{i}]\n"))
            .collect();
        assert_eq!(ok(&text).classes.len(), MAX_CLASSES);
    }

    #[test]
    fn env_markers_and_normalized_hosts() {
        let policy = ok(r#"
[providers.x]
hosts = ["API.X.IO."]
exclude_domains = ["Static.X.IO"]
[agents.x]
env = ["A=1", "B", "C=", "D=x=y"]
"#);
        let x = policy.providers.last().unwrap();
        assert_eq!(x.hosts, ["api.x.io"]);
        assert_eq!(x.exclude_domains, ["static.x.io"]);
        let agent = policy.agents.last().unwrap();
        assert_eq!(
            agent.env,
            [
                EnvMarker::Equals("A".into(), "1".into()),
                EnvMarker::Present("B".into()),
                EnvMarker::Equals("C".into(), String::new()),
                EnvMarker::Equals("D".into(), "x=y".into()),
            ]
        );
    }

    #[test]
    fn load_and_check_files() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.toml");
        std::fs::write(&good, "action = \"alert\"\n").unwrap();
        assert_eq!(Policy::load(&good).unwrap().action, Action::Alert);
        assert!(check_command(&good).unwrap());

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "action = \"nope\"\n").unwrap();
        let err = Policy::load(&bad).unwrap_err();
        let PolicyError::Invalid(list) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(list[0].path, bad);
        assert!(
            err.to_string()
                .starts_with(&format!("{}:1:10: unknown action", bad.display())),
            "{err}"
        );
        assert!(!check_command(&bad).unwrap());

        let missing = dir.path().join("missing.toml");
        assert!(matches!(
            Policy::load(&missing),
            Err(PolicyError::Read { .. })
        ));
        assert!(check_command(&missing).is_err());
    }
}
