//! Baselines: findings accepted once (`--write-baseline`), so that a CI gate
//! fails only on new ones (`--baseline`). A finding's fingerprint is
//! `path:rule:line`, as gitleaks writes them: no part of the secret, so the
//! file can be committed; a finding whose line moves is new again.

use std::{collections::HashSet, path::Path};

use anyhow::Context as _;

use super::{Finding, report::Report};

pub fn fingerprint(path: &str, finding: &Finding) -> String {
    format!("{path}:{}:{}", finding.rule, finding.line)
}

/// The fingerprints a baseline file lists, one a line (`#` starts a comment).
pub struct Baseline(HashSet<String>);

impl Baseline {
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the baseline {}", path.display()))?;
        Ok(Self(
            text.lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .map(str::to_string)
                .collect(),
        ))
    }

    pub fn accepts(&self, fingerprint: &str) -> bool {
        self.0.contains(fingerprint)
    }
}

/// Writes every finding of `report` as accepted; returns how many.
pub fn write(path: &Path, report: &Report) -> anyhow::Result<usize> {
    let fingerprints: std::collections::BTreeSet<&str> = report
        .findings
        .iter()
        .map(|found| found.fingerprint.as_str())
        .collect();
    let mut text = String::from(
        "# Findings of `agentwatch scan` accepted as known (path:rule:line); see --baseline.\n",
    );
    for fingerprint in &fingerprints {
        text += fingerprint;
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(fingerprints.len())
}
