//! What `agentwatch scan` found, and the reports it writes: text for people,
//! JSON for scripts, SARIF 2.1.0 for code scanning (GitHub's, among others).
//! No report holds a secret: only its redacted form.

use std::{collections::BTreeSet, io::Write};

use serde::Serialize;
use serde_json::{Value, json};

use super::{Finding, baseline::Baseline};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `path:line: rule (provider) redacted`, then a summary line.
    Text,
    /// One object: the findings, files scanned, and whether the scan is complete.
    Json,
    /// SARIF 2.1.0, as GitHub code scanning takes it.
    Sarif,
}

/// A finding and the file it is in.
#[derive(Debug, Serialize)]
pub struct Located {
    /// As reached from the argument (`src/.env` for `scan src`).
    pub path: String,
    #[serde(flatten)]
    pub finding: Finding,
    /// What a baseline lists to accept it.
    pub fingerprint: String,
}

#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Located>,
    pub files_scanned: usize,
    /// Findings left out because the baseline lists them.
    pub suppressed: usize,
    /// Why the scan is not complete; empty when it is.
    pub incomplete: Vec<String>,
}

impl Report {
    pub(super) fn add(&mut self, path: &str, findings: Vec<Finding>) {
        self.findings
            .extend(findings.into_iter().map(|finding| Located {
                path: path.to_string(),
                fingerprint: super::baseline::fingerprint(path, &finding),
                finding,
            }));
    }

    pub fn complete(&self) -> bool {
        self.incomplete.is_empty()
    }

    /// Leaves out the findings `baseline` accepts.
    pub fn suppress(&mut self, baseline: &Baseline) {
        let before = self.findings.len();
        self.findings
            .retain(|found| !baseline.accepts(&found.fingerprint));
        self.suppressed += before - self.findings.len();
    }

    /// "N credentials in M files", or "no credentials found in K files scanned".
    pub fn summary(&self) -> String {
        let files: BTreeSet<&str> = self.findings.iter().map(|f| f.path.as_str()).collect();
        let mut summary = if self.findings.is_empty() {
            format!(
                "no credentials found in {} files scanned",
                self.files_scanned
            )
        } else {
            format!(
                "{} credentials in {} files",
                self.findings.len(),
                files.len()
            )
        };
        if self.suppressed > 0 {
            summary += &format!(" ({} more in the baseline)", self.suppressed);
        }
        summary
    }

    pub fn write(&self, format: Format, out: &mut impl Write) -> std::io::Result<()> {
        match format {
            Format::Text => {
                for found in &self.findings {
                    let finding = &found.finding;
                    writeln!(
                        out,
                        "{}:{}: {} ({}) {}",
                        found.path,
                        finding.line,
                        finding.rule,
                        finding.provider.as_deref().unwrap_or("unknown provider"),
                        finding.redacted
                    )?;
                }
                writeln!(out, "{}", self.summary())
            }
            Format::Json => {
                let report = json!({
                    "complete": self.complete(),
                    "incomplete": self.incomplete,
                    "files_scanned": self.files_scanned,
                    "suppressed": self.suppressed,
                    "findings": self.findings,
                });
                writeln!(out, "{}", serde_json::to_string_pretty(&report)?)
            }
            Format::Sarif => writeln!(out, "{}", serde_json::to_string_pretty(&self.sarif())?),
        }
    }

    fn sarif(&self) -> Value {
        // The rules the results name, in order of first use.
        let mut rules: Vec<&Finding> = Vec::new();
        for found in &self.findings {
            if !rules.iter().any(|rule| rule.rule == found.finding.rule) {
                rules.push(&found.finding);
            }
        }
        let rules_json: Vec<Value> = rules
            .iter()
            .map(|finding| {
                json!({
                    "id": finding.rule,
                    "name": finding.rule,
                    "shortDescription": { "text": credential_of(finding) },
                    "defaultConfiguration": { "level": "error" },
                    "properties": { "tags": ["security", "secret"] },
                })
            })
            .collect();
        let results: Vec<Value> = self
            .findings
            .iter()
            .map(|found| {
                let finding = &found.finding;
                let mut artifact = json!({ "uri": artifact_uri(&found.path) });
                if !found.path.starts_with('/') {
                    artifact["uriBaseId"] = json!("%SRCROOT%");
                }
                json!({
                    "ruleId": finding.rule,
                    "ruleIndex": rules.iter().position(|rule| rule.rule == finding.rule),
                    "level": "error",
                    "message": {
                        "text": format!("{}: {}", credential_of(finding), finding.redacted),
                    },
                    "locations": [{
                        "physicalLocation": {
                            "artifactLocation": artifact,
                            "region": { "startLine": finding.line },
                        },
                    }],
                })
            })
            .collect();
        let notifications: Vec<Value> = self
            .incomplete
            .iter()
            .map(|reason| json!({ "level": "error", "message": { "text": reason } }))
            .collect();
        json!({
            "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
            "version": "2.1.0",
            "runs": [{
                "tool": {
                    "driver": {
                        "name": "agentwatch",
                        "version": env!("CARGO_PKG_VERSION"),
                        "rules": rules_json,
                    },
                },
                "invocations": [{
                    "executionSuccessful": self.complete(),
                    "toolExecutionNotifications": notifications,
                }],
                "results": results,
            }],
        })
    }
}

/// "Credential for github (github-pat)".
fn credential_of(finding: &Finding) -> String {
    match &finding.provider {
        Some(provider) => format!("Credential for {provider} ({})", finding.rule),
        None => format!("Credential for an unknown provider ({})", finding.rule),
    }
}

/// A path as a URI reference: relative ones stay relative (to the
/// checkout, `%SRCROOT%`), absolute ones become `file://`; every byte
/// but unreserved characters and `/` is percent-encoded.
fn artifact_uri(path: &str) -> String {
    let mut uri = String::from(if path.starts_with('/') { "file://" } else { "" });
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            uri.push(byte as char);
        } else {
            uri += &format!("%{byte:02X}");
        }
    }
    uri
}
