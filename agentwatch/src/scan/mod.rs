//! Content scanning for credentials, for files an agent opens that are not in
//! any credential catalog, and for `agentwatch scan PATH...`.
//!
//! Two passes over the content:
//! - format rules (`patterns.toml`): provider-specific token shapes, matched
//!   over the whole buffer so multi-line secrets (private keys, service-account
//!   JSON) are found;
//! - assignments, line by line: `NAME = value` where NAME is a policy
//!   credential variable (`env-credential`) or merely secret-named
//!   (`generic-assignment`), gated by entropy and placeholder checks.
//!
//! A guard that fires on ordinary files gets turned off, so every heuristic
//! leans towards precision.

mod assignment;
pub mod baseline;
pub mod report;
mod rules;
mod text;
pub mod workspace;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::Path;

use base64::Engine as _;
use regex::bytes::{Regex, RegexBuilder, RegexSet};

use assignment::ASSIGNMENT;
use rules::Rule;
use text::{contains_ci, entropy, redact};
/// One credential found in content.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// 1-based line of the secret's first byte.
    pub line: usize,
    /// Rule id: a `patterns.toml` id, "env-credential", "generic-assignment",
    /// or [`CATALOG_FILE_RULE`].
    pub rule: String,
    /// Policy provider id; `None` when provenance is unknown.
    pub provider: Option<String>,
    /// First 4 chars + "…" + last 2 (or "****" below 12): never the secret.
    pub redacted: String,
}

/// The rule of a file the catalog names by its path, found by a scan of a
/// read before an expansion had put it in the kernel's maps: a credential
/// whatever it holds (line 0, nothing redacted).
pub const CATALOG_FILE_RULE: &str = "catalog-file";
/// Files are scanned in windows of this size...
const WINDOW_BYTES: usize = 1 << 20;
/// ...each overlapping the last by this much, so a secret across a
/// window's end is whole in the next (the largest private keys are ~3 KiB).
const WINDOW_OVERLAP: usize = 64 << 10;

/// A NUL byte this early means a binary file (same heuristic as git/grep).
const BINARY_SNIFF_BYTES: usize = 8 << 10;
/// Assignments are looked for in at most this much of each line, so minified
/// bundles and data blobs cost a bounded amount.
const MAX_LINE_BYTES: usize = 4096;
/// A YAML or JSON value that is all base64: kubeconfig `*-key-data`, a
/// Kubernetes Secret's `data:`, Docker's `auth`. Decoded, it is matched
/// against the format rules (PEM blocks, prefixed tokens).
const ENCODED_VALUE: &str = r#"(?m)(?:^[ \t-]*[A-Za-z0-9_.\-]+|"[A-Za-z0-9_.\-]+")[ \t]*:[ \t]*"?([A-Za-z0-9+/]{20,}={0,2})(?:["',}\s]|$)"#;

/// A secret located in the content, before deduplication.
struct Hit<'a> {
    start: usize,
    end: usize,
    line: usize,
    rule: &'a str,
    provider: Option<&'a str>,
}
/// Compiled rules; build once and share (matching is `&self`).
pub struct Scanner {
    rules: Vec<Rule>,
    keywords: RegexSet,
    assignment: Regex,
    encoded: Regex,
    /// Upper-cased variable name → provider id.
    credential_env: HashMap<String, String>,
}
fn build_regex(pattern: &str) -> Result<Regex, regex::Error> {
    // ASCII classes: content is arbitrary bytes, and Unicode tables would only
    // slow matching down without finding more tokens.
    RegexBuilder::new(pattern).unicode(false).build()
}
impl Scanner {
    /// `credential_env`: (ENV_VAR_NAME, provider id) pairs from the policy, so that
    /// `RAILWAY_TOKEN=abc…` in any file counts for railway (rule "env-credential").
    pub fn new(credential_env: &[(String, String)]) -> Scanner {
        let (rules, keywords) = rules::load();
        Scanner {
            rules,
            keywords,
            assignment: build_regex(ASSIGNMENT).expect("assignment pattern is valid"),
            encoded: build_regex(ENCODED_VALUE).expect("encoded-value pattern is valid"),
            credential_env: credential_env
                .iter()
                .map(|(name, provider)| (name.to_ascii_uppercase(), provider.clone()))
                .collect(),
        }
    }

    /// Findings in `content` (any bytes), in order of appearance.
    #[cfg(test)]
    pub fn scan_bytes(&self, content: &[u8]) -> Vec<Finding> {
        self.scan_window(content)
            .into_iter()
            .map(|(_, f)| f)
            .collect()
    }

    /// Findings with the offset of each secret in `content`.
    fn scan_window(&self, content: &[u8]) -> Vec<(usize, Finding)> {
        let newlines: Vec<usize> = content
            .iter()
            .enumerate()
            .filter_map(|(i, &b)| (b == b'\n').then_some(i))
            .collect();
        let line_of = |offset: usize| newlines.partition_point(|&nl| nl < offset) + 1;

        // Priority order: format rules (in file order), encoded values, then
        // assignments.
        let mut hits: Vec<Hit> = self
            .rule_matches(content)
            .map(|(start, end, rule)| Hit {
                start,
                end,
                line: line_of(start),
                rule: &rule.id,
                provider: rule.provider.as_deref(),
            })
            .collect();
        for caps in self.encoded.captures_iter(content) {
            let value = caps.get(1).expect("the pattern has one group");
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(value.as_bytes())
            else {
                continue;
            };
            if let Some((_, _, rule)) = self.rule_matches(&decoded).next() {
                hits.push(Hit {
                    start: value.start(),
                    end: value.end(),
                    line: line_of(value.start()),
                    rule: &rule.id,
                    provider: rule.provider.as_deref(),
                });
            }
        }
        let mut line_start = 0;
        for (index, line) in content.split(|&b| b == b'\n').enumerate() {
            let window = &line[..line.len().min(MAX_LINE_BYTES)];
            self.scan_assignments(window, line_start, index + 1, &mut hits);
            line_start += line.len() + 1;
        }
        let mut kept: BTreeMap<usize, usize> = BTreeMap::new();
        let mut seen: HashSet<(usize, &[u8])> = HashSet::new();
        let mut findings: Vec<(usize, Finding)> = Vec::new();
        for hit in hits {
            let overlaps = kept
                .range(..hit.end)
                .next_back()
                .is_some_and(|(_, &end)| end > hit.start);
            let secret = &content[hit.start..hit.end];
            if overlaps || !seen.insert((hit.line, secret)) {
                continue;
            }
            kept.insert(hit.start, hit.end);
            findings.push((
                hit.start,
                Finding {
                    line: hit.line,
                    rule: hit.rule.to_string(),
                    provider: hit.provider.map(str::to_string),
                    redacted: redact(secret),
                },
            ));
        }
        findings.sort_by_key(|(start, _)| *start);
        findings
    }

    /// The format rules' secrets in `content`, rule by rule: (start, end, rule).
    fn rule_matches<'s, 'c>(
        &'s self,
        content: &'c [u8],
    ) -> impl Iterator<Item = (usize, usize, &'s Rule)> + use<'s, 'c> {
        let gates = self.keywords.matches(content);
        self.rules
            .iter()
            .filter(move |rule| rule.gate.is_none_or(|g| gates.matched(g)))
            .flat_map(move |rule| {
                rule.regex
                    .captures_iter(content)
                    .filter_map(move |caps| caps.get(rule.secret_group))
                    .filter(move |m| {
                        let secret = m.as_bytes();
                        entropy(secret) >= rule.min_entropy
                            && !contains_ci(secret, "example")
                            && (!rule.free_text || assignment::plausible_password(secret))
                    })
                    .map(move |m| (m.start(), m.end(), rule))
            })
    }

    /// Scans a regular file whole, window by window; UTF-16 with a BOM is
    /// read as text, and a binary file (NUL in the first 8 KiB) has no findings.
    pub fn scan_file(&self, path: &Path) -> std::io::Result<Vec<Finding>> {
        // Opening a FIFO blocks and a device never ends: only regular files.
        if !std::fs::metadata(path)?.is_file() {
            return Ok(Vec::new());
        }
        // Without a BOM the bytes pass through as they are.
        let reader = encoding_rs_io::DecodeReaderBytesBuilder::new()
            .bom_sniffing(true)
            .build(std::fs::File::open(path)?);
        self.scan_reader(reader)
    }

    fn scan_reader(&self, mut reader: impl Read) -> std::io::Result<Vec<Finding>> {
        let mut findings = Vec::new();
        let mut window = Vec::with_capacity(WINDOW_BYTES);
        let (mut first, mut lines_before) = (true, 0);
        loop {
            let wanted = (WINDOW_BYTES - window.len()) as u64;
            (&mut reader).take(wanted).read_to_end(&mut window)?;
            if first && window[..window.len().min(BINARY_SNIFF_BYTES)].contains(&0) {
                return Ok(Vec::new());
            }
            first = false;
            let last = window.len() < WINDOW_BYTES;
            // A secret starting in the overlap is left to the next window,
            // which holds it whole.
            let handed_on = if last {
                window.len()
            } else {
                WINDOW_BYTES - WINDOW_OVERLAP
            };
            findings.extend(
                self.scan_window(&window)
                    .into_iter()
                    .filter(|(start, _)| *start < handed_on)
                    .map(|(_, finding)| Finding {
                        line: finding.line + lines_before,
                        ..finding
                    }),
            );
            if last {
                return Ok(findings);
            }
            lines_before += window[..handed_on].iter().filter(|&&b| b == b'\n').count();
            window.drain(..handed_on);
        }
    }
}

#[cfg(test)]
mod corpus;
#[cfg(test)]
mod tests;
