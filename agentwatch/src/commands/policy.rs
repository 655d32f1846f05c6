//! `agentwatch policy check FILE`.

use std::path::Path;

use crate::policy::{Policy, PolicyError};

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

#[cfg(test)]
mod tests;
