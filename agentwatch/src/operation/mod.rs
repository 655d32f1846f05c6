//! What a call does: reading a request (`http`) or a command line (`command`) and judging it
//! against the policy's operation catalog (each provider's GraphQL fields, REST rules and AWS
//! actions; each tool's subcommands) as `reads`, `changes` or `destructive` — or `unknown`
//! when what it does cannot be seen.
//!
//! ```text
//! let catalog = Catalog::new(&policy);
//! let request = parse_request(plaintext_head)?;           // from the SSL_write probe
//! let op = catalog.classify_request("railway", &request); // provider from the connection
//! let op = catalog.classify_command(&argv);               // at an exec hold
//! println!("{op}");  // "GraphQL mutation volumeDelete on Railway"
//! ```

mod command;
mod graphql;
mod http;
pub mod pattern;
#[cfg(test)]
mod tests;

use std::ffi::OsStr;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use agentwatch_common::names::{OperationClass, OperationKind};
pub use command::HttpClient;
#[cfg(test)]
pub use http::frame;
pub use http::{
    HTTP2_PREFACE, Http2Connection, ParseError, Request, parse_pipelined, parse_request,
};

use crate::policy::{CommandTool, Policy, Provider};
use pattern::best;

/// A judged call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub kind: OperationKind,
    /// `volumeDelete`, `DELETE /v9/projects/x`, `TerminateInstances`, `terraform destroy`.
    pub name: String,
    pub class: OperationClass,
    /// The provider whose infrastructure it is, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<ProviderRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderRef {
    pub id: String,
    /// For people: "Railway".
    pub name: String,
}

impl From<&Provider> for ProviderRef {
    fn from(provider: &Provider) -> Self {
        Self {
            id: provider.id.clone(),
            name: provider.name.clone(),
        }
    }
}

impl Operation {
    /// The phrase with its class, as alerts, requests and the agent's
    /// explanation show it: `GraphQL mutation volumeDelete on Railway (destructive)`.
    pub fn with_class(&self) -> String {
        format!("{self} ({})", self.class)
    }
}

/// The phrase alerts and the agent's explanation use, e.g. `GraphQL mutation volumeDelete on
/// Railway`, `HTTP DELETE /v9/projects/x on Vercel`, `command terraform destroy`.
impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            OperationKind::GraphqlMutation => "GraphQL mutation",
            OperationKind::GraphqlQuery => "GraphQL query",
            OperationKind::Http => "HTTP",
            OperationKind::AwsAction => "AWS action",
            OperationKind::Command => "command",
        };
        write!(f, "{what} {}", self.name)?;
        if let Some(provider) = &self.provider {
            write!(f, " on {}", provider.name)?;
        }
        if self.class == OperationClass::Unknown {
            f.write_str(" (what it does cannot be seen)")?;
        }
        Ok(())
    }
}

/// The policy's operation catalog, borrowed for classifying.
#[derive(Clone, Copy)]
pub struct Catalog<'p> {
    policy: &'p Policy,
}

/// Command names longer than this many words are cut in an operation's name.
const NAME_WORDS: usize = 6;

impl<'p> Catalog<'p> {
    pub fn new(policy: &'p Policy) -> Self {
        Self { policy }
    }

    /// The provider whose API `host` is (the policy's hosts and domains).
    pub fn provider_of_host(&self, host: &str) -> Option<&'p Provider> {
        self.policy.provider_of_host(host)
    }

    /// What `request`, sent to provider `provider_id`'s API, does. An unknown provider id
    /// judges by the method alone.
    pub fn classify_request(&self, provider_id: &str, request: &Request) -> Operation {
        let provider = self.policy.provider(provider_id);
        classify(provider, request)
    }

    /// What the command line `argv` does, or None when argv[0] is not a cataloged tool (or is
    /// an HTTP client whose argv names no URL).
    pub fn classify_command<S: AsRef<OsStr>>(&self, argv: &[S]) -> Option<Operation> {
        let (program, args) = argv.split_first()?;
        let base = Path::new(program.as_ref()).file_name()?.to_string_lossy();
        let tool = self
            .policy
            .commands
            .iter()
            .find(|tool| tool.executables.iter().any(|e| *e == base))?;
        let args: Vec<String> = args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match tool.http_client {
            Some(client) => client
                .requests(&args)
                .iter()
                .map(|request| {
                    let provider = request
                        .host
                        .as_deref()
                        .and_then(|h| self.provider_of_host(h));
                    classify(provider, request)
                })
                .max_by_key(|op| op.class),
            None => Some(self.command(tool, &base, &args)),
        }
    }

    fn command(&self, tool: &CommandTool, base: &str, args: &[&str]) -> Operation {
        let words = command::words(args, &tool.value_flags);
        let rule = best(&tool.operations, (&words, args));
        let mut name: Vec<&str> = vec![base];
        name.extend(words.iter().take(NAME_WORDS));
        if let Some(rule) = rule {
            let flags = rule.pattern.as_str().split_whitespace();
            name.extend(flags.filter(|t| t.starts_with('-')));
        }
        let provider = tool
            .provider
            .as_deref()
            .and_then(|id| self.policy.provider(id))
            .map(ProviderRef::from);
        Operation {
            kind: OperationKind::Command,
            name: name.join(" "),
            class: rule.map_or(tool.default, |r| r.class),
            provider,
        }
    }

    /// The executable basenames of every cataloged tool (what to hold at exec), sorted.
    pub fn command_names(&self) -> Vec<&'p str> {
        let mut names: Vec<&str> = self
            .policy
            .commands
            .iter()
            .flat_map(|tool| tool.executables.iter().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

fn classify(provider: Option<&Provider>, request: &Request) -> Operation {
    let operation = |kind, name: String, class| Operation {
        kind,
        name,
        class,
        provider: provider.map(ProviderRef::from),
    };
    let method = request.method.to_ascii_uppercase();
    let path = request.path();
    let rest_name = || format!("{method} {path}");
    if request.target.is_empty() {
        // An HTTP/2 header block cut before `:path`.
        return operation(OperationKind::Http, rest_name(), OperationClass::Unknown);
    }
    let Some(provider) = provider else {
        return operation(OperationKind::Http, rest_name(), method_class(&method));
    };

    if !provider.actions.is_empty()
        && let Some(action) = aws_action(request)
    {
        let class =
            best(&provider.actions, action.as_str()).map_or(OperationClass::Changes, |r| r.class);
        return operation(OperationKind::AwsAction, action, class);
    }
    let form = request.content_type().as_deref() == Some("application/x-www-form-urlencoded");
    if !provider.actions.is_empty() && form && !request.body_complete {
        // An AWS query request whose `Action=` was cut off.
        return operation(OperationKind::Http, rest_name(), OperationClass::Unknown);
    }

    let graphql_type = request.content_type().as_deref() == Some("application/graphql");
    let graphql_path = provider
        .graphql_paths
        .iter()
        .any(|p| p.matches_with(path, pattern::SEGMENTS));
    if (graphql_path || graphql_type) && !matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS") {
        let body = graphql::operations(&request.body, graphql_type, request.body_complete);
        return judge_graphql(provider, &body)
            .map(|(kind, name, class)| operation(kind, name, class))
            .unwrap_or_else(|| {
                operation(OperationKind::Http, rest_name(), OperationClass::Unknown)
            });
    }

    let class =
        best(&provider.rest, (method.as_str(), path)).map_or(method_class(&method), |r| r.class);
    operation(OperationKind::Http, rest_name(), class)
}

/// The REST default: reading methods read, DELETE destroys, anything else changes.
fn method_class(method: &str) -> OperationClass {
    match method {
        "GET" | "HEAD" | "OPTIONS" => OperationClass::Reads,
        "DELETE" => OperationClass::Destructive,
        _ => OperationClass::Changes,
    }
}

/// `X-Amz-Target: DynamoDB_20120810.DeleteTable` (JSON protocol), or `Action=` in the query
/// or a form body (query protocol).
fn aws_action(request: &Request) -> Option<String> {
    if let Some(target) = request.header("x-amz-target") {
        return target.rsplit('.').next().map(str::to_string);
    }
    let action = |text: &[u8]| {
        url::form_urlencoded::parse(text)
            .find(|(k, _)| k == "Action")
            .map(|(_, v)| v.into_owned())
    };
    request
        .query()
        .and_then(|q| action(q.as_bytes()))
        .or_else(|| action(&request.body))
}

/// The most severe operation of a GraphQL body: kind, name and class; None when the body
/// shows no operation at all.
fn judge_graphql(
    provider: &Provider,
    body: &graphql::GraphqlBody,
) -> Option<(OperationKind, String, OperationClass)> {
    let judged = body.operations.iter().map(|op| {
        if !op.mutation {
            let name = op
                .fields
                .first()
                .cloned()
                .unwrap_or_else(|| "(no fields)".into());
            return (OperationKind::GraphqlQuery, name, OperationClass::Reads);
        }
        let fields = op.fields.iter().map(|field| {
            let class = best(&provider.graphql, field.as_str())
                .map_or(OperationClass::Changes, |r| r.class);
            (field, class)
        });
        // The first of the most severe fields names the operation.
        let deciding = fields.rev().max_by_key(|(_, class)| *class);
        let (name, class) = match deciding {
            // More fields may follow the cut: unless one already destroys, it is unknown.
            Some((field, class)) if op.cut && class < OperationClass::Destructive => {
                (format!("{field} …"), OperationClass::Unknown)
            }
            Some((field, class)) => (field.clone(), class),
            None => ("(fields not visible)".into(), OperationClass::Unknown),
        };
        (OperationKind::GraphqlMutation, name, class)
    });
    let (kind, name, class) = judged.rev().max_by_key(|(_, _, class)| *class)?;
    let class = if body.more {
        class.max(OperationClass::Unknown)
    } else {
        class
    };
    Some((kind, name, class))
}
