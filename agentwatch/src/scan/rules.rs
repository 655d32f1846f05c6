//! Format rules from `patterns.toml`: provider-specific token shapes,
//! each gated by keywords so that a buffer without them costs one pass.

use regex::bytes::{Regex, RegexSet, RegexSetBuilder};

use super::build_regex;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleFile {
    pub(super) rule: Vec<RuleSpec>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleSpec {
    pub(super) id: String,
    pub(super) provider: Option<String>,
    pub(super) regex: String,
    #[serde(default)]
    pub(super) secret_group: usize,
    #[serde(default)]
    pub(super) min_entropy: f64,
    #[serde(default)]
    pub(super) keywords: Vec<String>,
    /// The secret is free text (a password): it must also pass the
    /// assignment checks (no placeholder, reference or phrase).
    #[serde(default)]
    pub(super) free_text: bool,
}

pub(super) struct Rule {
    pub(super) id: String,
    pub(super) provider: Option<String>,
    pub(super) regex: Regex,
    pub(super) secret_group: usize,
    pub(super) min_entropy: f64,
    pub(super) free_text: bool,
    /// Index into `Scanner::keywords`; `None` runs the rule unconditionally.
    pub(super) gate: Option<usize>,
}

/// The rules in file order, and the keyword set their gates index.
pub(super) fn load() -> (Vec<Rule>, RegexSet) {
    // The rules ship inside the binary and are exercised by the tests, so a
    // failure here is a build defect, not a runtime condition.
    let file: RuleFile =
        toml::from_str(include_str!("patterns.toml")).expect("patterns.toml is valid");
    let mut gates = Vec::new();
    let rules = file
        .rule
        .into_iter()
        .map(|spec| {
            let regex = build_regex(&spec.regex)
                .unwrap_or_else(|e| panic!("patterns.toml rule {}: {e}", spec.id));
            let gate = (!spec.keywords.is_empty()).then(|| {
                let alternatives: Vec<String> =
                    spec.keywords.iter().map(|k| regex::escape(k)).collect();
                gates.push(format!("(?i:{})", alternatives.join("|")));
                gates.len() - 1
            });
            Rule {
                id: spec.id,
                provider: spec.provider,
                regex,
                secret_group: spec.secret_group,
                min_entropy: spec.min_entropy,
                free_text: spec.free_text,
                gate,
            }
        })
        .collect();
    let keywords = RegexSetBuilder::new(gates)
        .unicode(false)
        .build()
        .expect("keywords are escaped literals");
    (rules, keywords)
}
