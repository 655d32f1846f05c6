//! Reading one file into a layer of partial entries, and the diagnostics
//! that report every problem in it at its line and column.

use super::{validate::*, *};
use crate::operation::pattern::{Matcher, catalog_class};

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

/// A place in one of the layered files.
#[derive(Debug, Clone, Copy)]
pub(super) struct Loc {
    pub(super) file: usize,
    pub(super) offset: usize,
}

/// The layered files and the problems found in them.
pub(super) struct Diags<'a> {
    pub(super) files: &'a [(&'a Path, &'a str)],
    pub(super) list: Vec<Diagnostic>,
}

impl Diags<'_> {
    pub(super) fn push(&mut self, loc: Loc, message: impl Into<String>) {
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
pub(super) struct Id {
    pub(super) name: String,
    pub(super) loc: Loc,
}

pub(super) type List = Option<Vec<String>>;

#[derive(Default)]
pub(super) struct ProviderPatch {
    pub(super) enabled: Option<bool>,
    pub(super) name: Option<String>,
    pub(super) hosts: List,
    pub(super) domains: List,
    pub(super) exclude_domains: List,
    pub(super) credential_files: List,
    pub(super) credential_env: List,
    pub(super) graphql_paths: Option<Vec<glob::Pattern>>,
    pub(super) graphql: Rules<NamePattern>,
    pub(super) rest: Rules<RestPattern>,
    pub(super) actions: Rules<NamePattern>,
}

/// A table of operation rules; merged rule by rule (a later layer's class for a pattern
/// replaces the earlier one's).
pub(super) type Rules<P> = Option<Vec<Rule<P>>>;

#[derive(Default)]
pub(super) struct CommandPatch {
    pub(super) enabled: Option<bool>,
    pub(super) provider: Option<(String, Loc)>,
    pub(super) executables: List,
    pub(super) value_flags: List,
    pub(super) default: Option<OperationClass>,
    pub(super) http_client: Option<HttpClient>,
    pub(super) operations: Rules<CommandPattern>,
}

#[derive(Default)]
pub(super) struct ClassPatch {
    pub(super) enabled: Option<bool>,
    pub(super) name: Option<String>,
    /// Some(None) = "*"; the ids keep their places for the cross-check after merging.
    pub(super) providers: Option<Option<Vec<(String, Loc)>>>,
    pub(super) files: List,
    pub(super) exclude_files: List,
    pub(super) env: List,
    pub(super) workspace_names: List,
}

#[derive(Default)]
pub(super) struct AgentPatch {
    pub(super) enabled: Option<bool>,
    pub(super) name: Option<String>,
    pub(super) executables: List,
    pub(super) argv: List,
    pub(super) env: Option<Vec<EnvMarker>>,
    pub(super) directories: Option<Vec<DirectoryPair>>,
}

/// Field-level override: what `other` sets replaces what `self` had.
pub(super) trait Patch: Default {
    fn merge(&mut self, other: Self);
    fn enabled(&self) -> bool;
}

/// Rule tables merge by pattern: `other`'s rules replace those with the same pattern text
/// and add the others.
fn merge_rules<P: Matcher>(mine: &mut Rules<P>, other: Rules<P>) {
    let Some(other) = other else { return };
    let mine = mine.get_or_insert_with(Vec::new);
    for rule in other {
        match mine
            .iter_mut()
            .find(|r| r.pattern.key() == rule.pattern.key())
        {
            Some(known) => *known = rule,
            None => mine.push(rule),
        }
    }
}

macro_rules! patch {
    ($ty:ty: $($field:ident),* $(; rules: $($rules:ident),*)?) => {
        impl Patch for $ty {
            fn merge(&mut self, other: Self) {
                $(if other.$field.is_some() { self.$field = other.$field; })*
                $($(merge_rules(&mut self.$rules, other.$rules);)*)?
            }
            fn enabled(&self) -> bool {
                self.enabled != Some(false)
            }
        }
    };
}
patch!(ProviderPatch: enabled, name, hosts, domains, exclude_domains, credential_files,
    credential_env, graphql_paths; rules: graphql, rest, actions);
patch!(CommandPatch: enabled, provider, executables, value_flags, default, http_client;
    rules: operations);
patch!(ClassPatch: enabled, name, providers, files, exclude_files, env, workspace_names);
patch!(AgentPatch: enabled, name, executables, argv, env, directories);

pub(super) struct RawAllow {
    pub(super) host: HostPattern,
    pub(super) credential: Option<(String, Loc)>,
    pub(super) comment: Option<String>,
}

#[derive(Default)]
pub(super) struct Layer {
    pub(super) action: Option<Action>,
    pub(super) strict: Option<bool>,
    pub(super) ask_timeout: Option<Duration>,
    pub(super) providers: Vec<(Id, ProviderPatch)>,
    pub(super) classes: Vec<(Id, ClassPatch)>,
    pub(super) allow: Vec<RawAllow>,
    pub(super) agents: Vec<(Id, AgentPatch)>,
    pub(super) changes: Option<Action>,
    pub(super) unknown_operation: Option<Action>,
    pub(super) commands: Vec<(Id, CommandPatch)>,
}

pub(super) type Entry<'t, 'i> = (&'t Spanned<Cow<'i, str>>, &'t Spanned<DeValue<'i>>);

/// A table's entries in file order (toml's map is sorted by key), so that class bits
/// follow the order in which classes are written.
pub(super) fn entries<'t, 'i>(table: &'t DeTable<'i>) -> Vec<Entry<'t, 'i>> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

/// Reads one file's document tree, reporting problems as it goes.
pub(super) struct Reader<'d, 'a> {
    pub(super) diags: &'d mut Diags<'a>,
    pub(super) file: usize,
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

    fn action(&mut self, value: &Spanned<DeValue<'_>>, key: &str) -> Option<Action> {
        let name = self.string(value, key)?;
        match name.parse() {
            Ok(action) => Some(action),
            Err(err) => {
                self.error(value.span(), err.to_string());
                None
            }
        }
    }

    /// A string checked (and converted) by `check`.
    fn one<T>(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        key: &str,
        check: fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        let raw = self.string(value, key)?;
        check(&raw)
            .map_err(|message| self.error(value.span(), format!("{key:?}: {message}")))
            .ok()
    }

    /// A `pattern = "class"` table.
    fn rules<P>(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        key: &str,
        parse: fn(&str) -> Result<P, String>,
    ) -> Rules<P> {
        let table = self.table(value, &format!("{key:?}"))?;
        let mut rules = Vec::new();
        for (pattern, class) in entries(table) {
            let pattern_ok = parse(pattern.get_ref())
                .map_err(|message| self.error(pattern.span(), format!("{key:?}: {message}")));
            let class_ok = self.one(class, key, catalog_class);
            if let (Ok(pattern), Some(class)) = (pattern_ok, class_ok) {
                rules.push(Rule { pattern, class });
            }
        }
        Some(rules)
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

    pub(super) fn layer(&mut self, root: &DeTable<'_>) -> Layer {
        const KEYS: &[&str] = &[
            "action",
            "strict",
            "ask_timeout_secs",
            "changes",
            "unknown_operation",
            "providers",
            "credentials",
            "allow",
            "agents",
            "commands",
        ];
        let mut layer = Layer::default();
        for (key, value) in entries(root) {
            match key.get_ref().as_ref() {
                "action" => layer.action = self.action(value, "action"),
                "changes" => layer.changes = self.action(value, "changes"),
                "unknown_operation" => {
                    layer.unknown_operation = self.action(value, "unknown_operation")
                }
                "commands" => {
                    for (id, table) in self.section(value, "commands") {
                        let patch = self.command(table);
                        layer.commands.push((id, patch));
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
            "graphql_paths",
            "graphql",
            "rest",
            "actions",
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
                "graphql_paths" => p.graphql_paths = self.checked(value, k, path_glob),
                "graphql" => p.graphql = self.rules(value, k, NamePattern::parse),
                "rest" => p.rest = self.rules(value, k, RestPattern::parse),
                "actions" => p.actions = self.rules(value, k, NamePattern::parse),
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
        const KEYS: &[&str] = &[
            "enabled",
            "name",
            "executables",
            "argv",
            "env",
            "directories",
        ];
        let mut a = AgentPatch::default();
        for (key, value) in entries(table) {
            let k = key.get_ref().as_ref();
            match k {
                "enabled" => a.enabled = self.boolean(value, k),
                "name" => a.name = self.string(value, k),
                "executables" => a.executables = self.checked(value, k, executable),
                "argv" => a.argv = self.checked(value, k, argv_substring),
                "env" => a.env = self.checked(value, k, env_marker),
                "directories" => a.directories = self.checked(value, k, directory_pair),
                _ => self.unknown_key(key, "an agent", KEYS),
            }
        }
        a
    }

    fn command(&mut self, table: &DeTable<'_>) -> CommandPatch {
        const KEYS: &[&str] = &[
            "enabled",
            "provider",
            "executables",
            "value_flags",
            "default",
            "http_client",
            "operations",
        ];
        let mut c = CommandPatch::default();
        for (key, value) in entries(table) {
            let k = key.get_ref().as_ref();
            match k {
                "enabled" => c.enabled = self.boolean(value, k),
                "provider" => {
                    c.provider = self.string(value, k).map(|p| (p, self.loc(value.span())))
                }
                "executables" => c.executables = self.checked(value, k, executable),
                "value_flags" => c.value_flags = self.checked(value, k, flag),
                "default" => c.default = self.one(value, k, catalog_class),
                "http_client" => c.http_client = self.one(value, k, str::parse),
                "operations" => c.operations = self.rules(value, k, CommandPattern::parse),
                _ => self.unknown_key(key, "a command", KEYS),
            }
        }
        c
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
