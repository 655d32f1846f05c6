//! `agentwatch policy check FILE` and `agentwatch policy classify`.

use std::path::Path;

use anyhow::Context;

use crate::operation::{Catalog, ParseError, parse_request};
use crate::policy::{DEFAULT_PATH, Policy, PolicyError};

/// `agentwatch policy check [FILE]`: checks FILE (default: the daemon's) with its drop-ins, as
/// the daemon would load them; prints "FILE: ok (N providers, M credential classes, K allow
/// rules, A agents, C commands; changes: ACTION, unknown operations: ACTION)" to stdout and
/// returns Ok(true), or prints every diagnostic to stderr and returns Ok(false).
pub fn check_command(path: Option<&Path>) -> anyhow::Result<bool> {
    match Policy::load_config(path) {
        Ok(policy) => {
            println!(
                "{}: ok ({} providers, {} credential classes, {} allow rules, {} agents, {} \
                 commands; changes: {}, unknown operations: {})",
                path.unwrap_or(Path::new(DEFAULT_PATH)).display(),
                policy.providers.len(),
                policy.classes.len(),
                policy.allow.len(),
                policy.agents.len(),
                policy.commands.len(),
                policy.changes,
                policy.unknown_operation,
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

/// `agentwatch policy classify [--policy FILE] [--request FILE [--provider ID]] [-- ARGV...]`:
/// what the catalog says a command line, or a raw request (as the TLS probe sees it), does:
/// prints "CLASS: PHRASE". With neither, lists the commands held at exec. Returns the exit
/// code: 1 when argv is not a cataloged tool.
pub fn classify_command(
    policy: Option<&Path>,
    request: Option<&Path>,
    provider: Option<&str>,
    argv: &[String],
) -> anyhow::Result<i32> {
    let policy = match policy {
        Some(path) => Policy::load(path)?,
        None => Policy::builtin(),
    };
    let catalog = Catalog::new(&policy);
    let operation = if let Some(path) = request {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let request = parse_request(&bytes)
            .map_err(|e: ParseError| anyhow::anyhow!("{}: {e}", path.display()))?;
        let provider = provider
            .map(str::to_string)
            .or_else(|| {
                Some(
                    catalog
                        .provider_of_host(request.host.as_deref()?)?
                        .id
                        .clone(),
                )
            })
            .context("the request's host is no provider's; name one with --provider")?;
        catalog.classify_request(&provider, &request)
    } else if argv.is_empty() {
        println!(
            "commands judged at exec: {}",
            catalog.command_names().join(" ")
        );
        return Ok(0);
    } else {
        let Some(operation) = catalog.classify_command(argv) else {
            println!("{}: not a cataloged command", argv[0]);
            return Ok(1);
        };
        operation
    };
    println!("{}: {operation}", operation.class);
    Ok(0)
}

#[cfg(test)]
mod tests;
