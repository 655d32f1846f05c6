//! The patterns of the operation catalog (GraphQL field and AWS action names, REST method and
//! path, command words and flags), how the policy reads them, and how the most specific rule
//! is found: an exact name beats a glob, a longer pattern beats a shorter one, and between
//! equals the more severe class wins.

use glob::{MatchOptions, Pattern};

use super::OperationClass;

/// `*` in a REST path or a command word stays within one segment; `**` spans several.
pub const SEGMENTS: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// How specific a match was; compared as a number, greater wins.
type Specificity = usize;

fn glob(raw: &str) -> Result<Pattern, String> {
    Pattern::new(raw).map_err(|e| format!("invalid pattern {raw:?}: {e}"))
}

fn is_glob(raw: &str) -> bool {
    raw.contains(['*', '?', '['])
}

/// Characters that are not wildcards: the more a pattern has, the more specific it is.
fn literal_len(raw: &str) -> usize {
    raw.chars().filter(|c| !matches!(c, '*' | '?')).count()
}

/// A GraphQL field name or an AWS action, exact (`volumeDelete`) or a glob (`*Delete`,
/// `Describe*`).
#[derive(Debug, Clone)]
pub struct NamePattern {
    raw: String,
    glob: Option<Pattern>,
}

impl NamePattern {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '*' | '?');
        if raw.is_empty() || !raw.chars().all(valid) {
            return Err(format!(
                "invalid operation name {raw:?}: use letters, digits, '_' and the wildcards \
                 '*' and '?'"
            ));
        }
        let glob = is_glob(raw).then(|| glob(raw)).transpose()?;
        Ok(Self {
            raw: raw.to_string(),
            glob,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    fn matches(&self, name: &str) -> Option<Specificity> {
        match &self.glob {
            None => (self.raw == name).then_some(usize::MAX),
            Some(glob) => glob.matches(name).then(|| literal_len(&self.raw)),
        }
    }
}

/// `METHOD /path`: the method (or `*`, any) and a glob over the path without its query.
#[derive(Debug, Clone)]
pub struct RestPattern {
    raw: String,
    method: Option<String>,
    path: Pattern,
}

impl RestPattern {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let (method, path) = raw
            .split_once(' ')
            .ok_or_else(|| format!("invalid REST pattern {raw:?}: expected \"METHOD /path\""))?;
        let method = match method {
            "*" => None,
            m if !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()) => Some(m.to_string()),
            m => {
                return Err(format!(
                    "invalid REST pattern {raw:?}: the method {m:?} must be upper case \
                     (GET, DELETE, ...) or '*'"
                ));
            }
        };
        if !path.starts_with('/') || path.contains([' ', '?']) {
            return Err(format!(
                "invalid REST pattern {raw:?}: the path must start with '/' and hold no \
                 spaces or query"
            ));
        }
        Ok(Self {
            raw: raw.to_string(),
            method,
            path: glob(path)?,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    fn matches(&self, (method, path): (&str, &str)) -> Option<Specificity> {
        let method_ok = self.method.as_deref().is_none_or(|m| m == method);
        (method_ok && self.path.matches_with(path, SEGMENTS)).then(|| {
            // A named method is more specific than `*` whatever the paths.
            literal_len(self.path.as_str()) * 2 + usize::from(self.method.is_some())
        })
    }
}

/// One word of a command pattern.
#[derive(Debug, Clone)]
enum Word {
    /// `**`: any number of words, none included.
    Any,
    Glob(Pattern),
}

/// Space-separated words matched against the leading subcommand words (`volume delete`,
/// `** delete`, `* terminate-*`), and flags (`-destroy`, `--recursive`) that must also be
/// present anywhere in argv, as `-flag` or `-flag=value`.
#[derive(Debug, Clone)]
pub struct CommandPattern {
    raw: String,
    words: Vec<Word>,
    flags: Vec<String>,
}

impl CommandPattern {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let (mut words, mut flags) = (Vec::new(), Vec::new());
        for token in raw.split_whitespace() {
            if token.starts_with('-') {
                if token.trim_start_matches('-').is_empty() {
                    return Err(format!("invalid command pattern {raw:?}: empty flag"));
                }
                flags.push(token.to_string());
            } else if token == "**" {
                words.push(Word::Any);
            } else {
                words.push(Word::Glob(glob(token)?));
            }
        }
        if words.is_empty() && flags.is_empty() {
            return Err("empty command pattern".into());
        }
        Ok(Self {
            raw: raw.to_string(),
            words,
            flags,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    fn matches(&self, (words, args): (&[&str], &[&str])) -> Option<Specificity> {
        let flag_present = |flag: &String| {
            args.iter().any(|arg| {
                arg.strip_prefix(flag.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('='))
            })
        };
        if !self.flags.iter().all(flag_present) || !prefix_matches(&self.words, words) {
            return None;
        }
        let literal: usize = self
            .words
            .iter()
            .map(|w| match w {
                Word::Any => 0,
                Word::Glob(g) => literal_len(g.as_str()),
            })
            .sum();
        // Tokens first (`s3 rm --recursive` over `s3 rm`), then literal characters.
        Some((self.words.len() + self.flags.len()) * 10_000 + literal)
    }
}

/// Whether `pattern` matches the first words of `words` (`**` taking any number of them).
fn prefix_matches(pattern: &[Word], words: &[&str]) -> bool {
    match pattern.split_first() {
        None => true,
        Some((Word::Any, rest)) => {
            (0..=words.len()).any(|skip| prefix_matches(rest, &words[skip..]))
        }
        Some((Word::Glob(glob), rest)) => words.split_first().is_some_and(|(word, tail)| {
            glob.matches_with(word, SEGMENTS) && prefix_matches(rest, tail)
        }),
    }
}

/// A catalog entry: a pattern and what a call it matches does.
#[derive(Debug, Clone)]
pub struct Rule<P> {
    pub pattern: P,
    pub class: OperationClass,
}

/// How a pattern kind is looked up: by its source text (for merging) and against a call.
pub trait Matcher {
    type Subject<'s>: Copy;
    fn key(&self) -> &str;
    fn specificity(&self, subject: Self::Subject<'_>) -> Option<Specificity>;
}

macro_rules! matcher {
    ($ty:ty, $subject:ty) => {
        impl Matcher for $ty {
            type Subject<'s> = $subject;
            fn key(&self) -> &str {
                self.as_str()
            }
            fn specificity(&self, subject: Self::Subject<'_>) -> Option<Specificity> {
                self.matches(subject)
            }
        }
    };
}
matcher!(NamePattern, &'s str);
matcher!(RestPattern, (&'s str, &'s str));
matcher!(CommandPattern, (&'s [&'s str], &'s [&'s str]));

/// The class of the most specific rule matching `subject`, with its pattern.
pub fn best<'r, P: Matcher>(rules: &'r [Rule<P>], subject: P::Subject<'_>) -> Option<&'r Rule<P>> {
    rules
        .iter()
        .filter_map(|rule| Some((rule.pattern.specificity(subject)?, rule.class, rule)))
        .max_by_key(|&(specificity, class, _)| (specificity, class))
        .map(|(_, _, rule)| rule)
}

/// A catalog entry's class: `unknown` is what the classifier says when it cannot see an
/// operation, never what an entry may say.
pub fn catalog_class(raw: &str) -> Result<OperationClass, String> {
    match raw.parse() {
        Ok(OperationClass::Unknown) | Err(_) => Err(format!(
            "unknown operation class {raw:?} (expected one of: reads, changes, destructive)"
        )),
        Ok(class) => Ok(class),
    }
}
