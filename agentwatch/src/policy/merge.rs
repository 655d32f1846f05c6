//! Merging the layers (the built-in catalog, then the user's file) and
//! resolving them into a policy.

use super::{read::*, *};

#[derive(Default)]
pub(super) struct Merged {
    pub(super) action: Action,
    pub(super) strict: bool,
    pub(super) ask_timeout: Option<Duration>,
    pub(super) providers: Vec<(Id, ProviderPatch)>,
    pub(super) classes: Vec<(Id, ClassPatch)>,
    /// Every class id in order of first mention (provider shorthand or `[credentials]`):
    /// later layers append, so the catalog's bits stay put when a user adds classes.
    pub(super) class_order: Vec<Id>,
    pub(super) allow: Vec<RawAllow>,
    pub(super) agents: Vec<(Id, AgentPatch)>,
    pub(super) changes: Option<Action>,
    pub(super) unknown_operation: Option<Action>,
    pub(super) commands: Vec<(Id, CommandPatch)>,
}

pub(super) fn upsert<P: Patch>(list: &mut Vec<(Id, P)>, id: Id, patch: P) {
    match list.iter_mut().find(|(known, _)| known.name == id.name) {
        Some((_, known)) => known.merge(patch),
        None => list.push((id, patch)),
    }
}

pub(super) fn find<'a, P>(list: &'a [(Id, P)], id: &str) -> Option<&'a P> {
    list.iter()
        .find(|(known, _)| known.name == id)
        .map(|(_, patch)| patch)
}

pub(super) fn note_class(order: &mut Vec<Id>, id: &Id) {
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
        self.changes = layer.changes.or(self.changes);
        self.unknown_operation = layer.unknown_operation.or(self.unknown_operation);
        for (id, patch) in layer.commands {
            upsert(&mut self.commands, id, patch);
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

        let mut commands = Vec::new();
        for (_, c) in self.commands.into_iter().filter(|(_, c)| c.enabled()) {
            let provider = match c.provider {
                Some((provider, _)) if provider_enabled(&provider) => Some(provider),
                Some((provider, loc)) if find(&self.providers, &provider).is_none() => {
                    diags.push(loc, format!("unknown provider {provider:?}"));
                    None
                }
                // A provider disabled by the user: the tool's calls are no provider's.
                _ => None,
            };
            commands.push(CommandTool {
                provider,
                executables: c.executables.unwrap_or_default(),
                value_flags: c.value_flags.unwrap_or_default(),
                default: c.default.unwrap_or(OperationClass::Changes),
                http_client: c.http_client,
                operations: c.operations.unwrap_or_default(),
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
                graphql_paths: p.graphql_paths.unwrap_or_default(),
                graphql: p.graphql.unwrap_or_default(),
                rest: p.rest.unwrap_or_default(),
                actions: p.actions.unwrap_or_default(),
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
                directories: a.directories.unwrap_or_default(),
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
            changes: self.changes.unwrap_or(Action::Alert),
            unknown_operation: self.unknown_operation.unwrap_or(Action::Block),
            commands,
        }
    }
}

/// `a` followed by what `b` adds to it.
pub(super) fn union(mut a: Vec<String>, b: List) -> Vec<String> {
    for item in b.unwrap_or_default() {
        if !a.contains(&item) {
            a.push(item);
        }
    }
    a
}

/// Reads every layer (a later one overriding an earlier one) into a policy.
pub(super) fn build(files: &[(&Path, &str)]) -> Result<Policy, PolicyError> {
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
