//! Assignments, line by line: `NAME = value` where NAME is a policy
//! credential variable (`env-credential`) or merely secret-named
//! (`generic-assignment`), gated by entropy and placeholder checks.

use std::ops::RangeInclusive;

use super::{
    Hit, MAX_LINE_BYTES, Scanner,
    text::{contains_ci, entropy, find},
};

const GENERIC_RULE: &str = "generic-assignment";
const GENERIC_LEN: RangeInclusive<usize> = 16..=200;
const GENERIC_MIN_ENTROPY: f64 = 3.5;
const ENV_RULE: &str = "env-credential";
/// A policy-named variable is strong evidence on its own: accept shorter,
/// plainer values than for an arbitrary secret-looking name.
const ENV_LEN: RangeInclusive<usize> = 8..=MAX_LINE_BYTES;
const ENV_MIN_ENTROPY: f64 = 3.0;
const PASSWORD_LEN: RangeInclusive<usize> = 8..=200;
const PASSWORD_MIN_ENTROPY: f64 = 2.8;
/// `NAME <op> value` in the syntaxes of shell/.env, YAML, JSON, TOML/INI and
/// common languages (including `name: Type = value` and `:=`/`=>`).
pub(super) const ASSIGNMENT: &str = r#"(?x)
    (?:^|[^A-Za-z0-9_])
    ["']?(?P<name>[A-Za-z_][A-Za-z0-9_.\-]{0,79})["']?
    \s*(?: :\s*[&A-Za-z_][&'A-Za-z0-9_<>\[\]]*(?:\s+[A-Za-z_]+)?\s*= | := | => | = | : )\s*
    (?: [bruBRU]{0,2}"(?P<dq>[^"]*)"
      | [bruBRU]{0,2}'(?P<sq>[^']*)'
      | `(?P<bt>[^`]*)`
      | (?:(?i:bearer|basic|token)\s+)?(?P<bare>[^\s"'`,;=:)\]}][^\s"'`,;]*)
    )"#;

/// Name words that make an assignment secret-named...
const SECRET_WORDS: &[&str] = &[
    "secret",
    "secrets",
    "token",
    "password",
    "passwd",
    "pwd",
    "pass",
    "passphrase",
    "key",
    "apikey",
    "auth",
    "authorization",
    "credential",
    "credentials",
    "creds",
    "bearer",
];
/// ...also as the tail of run-together names (`dbpassword`, `githubtoken`).
const SECRET_SUFFIXES: &[&str] = &[
    "token",
    "secret",
    "password",
    "passwd",
    "apikey",
    "secretkey",
    "accesskey",
    "privatekey",
    "authkey",
];
/// ...unless another word says the value is public, an identifier, a
/// reference or metadata rather than the secret itself.
const NOT_SECRET_WORDS: &[&str] = &[
    "public",
    "publishable",
    "pub",
    "anon",
    "primary",
    "foreign",
    "sort",
    "partition",
    "cache",
    "idempotency",
    "id",
    "ids",
    "url",
    "uri",
    "endpoint",
    "path",
    "file",
    "filename",
    "dir",
    "type",
    "name",
    "count",
    "limit",
    "max",
    "min",
    "len",
    "length",
    "size",
    "expiry",
    "expires",
    "expiration",
    "ttl",
    "header",
    "field",
    "prefix",
    "hash",
    "sha",
    "checksum",
    "fingerprint",
    "signature",
    "hint",
    "format",
    "env",
    "var",
    "label",
    "placeholder",
    "policy",
    "version",
    "index",
    "ref",
    "source",
    "template",
    "schema",
    "pattern",
    "regex",
    "mode",
    "enabled",
    "required",
    "kid",
    "algorithm",
    "algo",
    "alg",
    "scheme",
    "method",
    "provider",
    "backend",
    "handler",
    "class",
    "manager",
    "store",
    "helper",
    "config",
];
/// Values containing these (case-insensitively) are documentation, not secrets.
const PLACEHOLDER_WORDS: &[&str] = &[
    "example",
    "changeme",
    "change_me",
    "change-me",
    "placeholder",
    "your",
    "xxxx",
    "****",
    "....",
    "dummy",
    "sample",
    "redacted",
    "replace",
    "insert",
    "todo",
    "fixme",
    "fake",
    "test",
    "lorem",
    "foobar",
    "secret",
    "password",
    "token",
];
/// Values containing these are expansions or lookups of a secret held elsewhere.
const REFERENCE_MARKERS: &[&str] = &[
    "${",
    "$(",
    "{{",
    "}}",
    "<",
    ">",
    "%(",
    "#{",
    "%s",
    "process.env",
    "environ",
    "getenv",
];

impl Scanner {
    pub(super) fn scan_assignments<'a>(
        &'a self,
        line: &[u8],
        line_start: usize,
        line_no: usize,
        hits: &mut Vec<Hit<'a>>,
    ) {
        for caps in self.assignment.captures_iter(line) {
            let name = &caps["name"];
            let (value, bare) = match ["dq", "sq", "bt"].iter().find_map(|g| caps.name(g)) {
                Some(quoted) => (quoted, false),
                None => (caps.name("bare").expect("one value group matches"), true),
            };
            let (mut start, end) = (value.start(), value.end());
            // "Authorization": "Bearer <token>": the token is the secret.
            for scheme in ["bearer ", "basic ", "token "] {
                if line[start..end].len() > scheme.len()
                    && line[start..start + scheme.len()].eq_ignore_ascii_case(scheme.as_bytes())
                {
                    start += scheme.len();
                }
            }
            let value = &line[start..end];
            let (rule, provider) = match self.env_provider(name) {
                Some(provider) if plausible_value(value, bare, &ENV_LEN, ENV_MIN_ENTROPY) => {
                    (ENV_RULE, Some(provider))
                }
                Some(_) => continue,
                None if secret_named(name) && plausible_generic(value, bare) => {
                    (GENERIC_RULE, None)
                }
                None => continue,
            };
            hits.push(Hit {
                start: line_start + start,
                end: line_start + end,
                line: line_no,
                rule,
                provider,
            });
        }
    }

    /// `process.env.RAILWAY_TOKEN`, `$RAILWAY_TOKEN` and `railway_token` all
    /// name the policy's RAILWAY_TOKEN.
    fn env_provider(&self, name: &[u8]) -> Option<&str> {
        let last = name.rsplit(|&b| b == b'.').next().unwrap_or(name);
        let upper = String::from_utf8_lossy(last).to_ascii_uppercase();
        self.credential_env.get(&upper).map(String::as_str)
    }
}

/// Splits an identifier into lower-case words: `clientSecret`, `CLIENT_SECRET`,
/// `client-secret` and `APIKey` all give ["client", "secret"] / ["api", "key"].
pub(super) fn name_words(name: &[u8]) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    for (i, &b) in name.iter().enumerate() {
        if !b.is_ascii_alphanumeric() {
            words.push(std::mem::take(&mut word));
            continue;
        }
        let prev = i.checked_sub(1).map(|p| name[p]);
        let next = name.get(i + 1).copied();
        let camel_start = b.is_ascii_uppercase()
            && prev.is_some_and(|p| {
                p.is_ascii_lowercase()
                    || p.is_ascii_digit()
                    || (p.is_ascii_uppercase() && next.is_some_and(|n| n.is_ascii_lowercase()))
            });
        if camel_start {
            words.push(std::mem::take(&mut word));
        }
        word.push(b.to_ascii_lowercase() as char);
    }
    words.push(word);
    words.retain(|w| !w.is_empty());
    words
}

pub(super) fn secret_named(name: &[u8]) -> bool {
    // `key_node.tag` assigns a tag; `config.password` a password.
    let last = name.rsplit(|&b| b == b'.').next().unwrap_or(name);
    let words = name_words(last);
    let secretish = words.iter().any(|w| {
        SECRET_WORDS.contains(&w.as_str()) || SECRET_SUFFIXES.iter().any(|s| w.ends_with(s))
    });
    secretish && !words.iter().any(|w| NOT_SECRET_WORDS.contains(&w.as_str()))
}

pub(super) fn plausible_generic(value: &[u8], bare: bool) -> bool {
    // JWTs are long; accept them whole rather than raising the cap for all.
    let jwt = value.starts_with(b"eyJ") && value.iter().filter(|&&b| b == b'.').count() == 2;
    let len = if jwt {
        *GENERIC_LEN.start()..=MAX_LINE_BYTES
    } else {
        GENERIC_LEN
    };
    // Random strings this long nearly always mix character classes; prose,
    // identifiers and enum-like values often don't.
    let classes = char_classes(value);
    // An unquoted digitless word is an identifier in code (`xmlSecKeysMngrGetKey`).
    let identifier = bare && value.iter().all(|&b| b.is_ascii_alphabetic() || b == b'_');
    classes >= 2 && !identifier && plausible_value(value, bare, &len, GENERIC_MIN_ENTROPY)
}

/// Passwords in URLs and command lines are shorter and plainer than tokens,
/// but still not placeholders, references or words.
pub(super) fn plausible_password(value: &[u8]) -> bool {
    // Upper, lower and digits together make no phrase, however pronounceable.
    let mixed = char_classes(value) == 3
        && PASSWORD_LEN.contains(&value.len())
        && !placeholder_or_reference(value);
    mixed || plausible_value(value, false, &PASSWORD_LEN, PASSWORD_MIN_ENTROPY)
}

/// How many of lower case, upper case and digits `value` mixes.
fn char_classes(value: &[u8]) -> usize {
    [
        u8::is_ascii_lowercase,
        u8::is_ascii_uppercase,
        u8::is_ascii_digit,
    ]
    .iter()
    .filter(|class| value.iter().any(class))
    .count()
}

fn placeholder_or_reference(value: &[u8]) -> bool {
    PLACEHOLDER_WORDS.iter().any(|w| contains_ci(value, w))
        || REFERENCE_MARKERS.iter().any(|m| contains_ci(value, m))
}

/// Shared checks for assigned values: length, entropy, and not a placeholder,
/// reference, path, plain URL, expression or phrase.
pub(super) fn plausible_value(
    value: &[u8],
    bare: bool,
    len: &RangeInclusive<usize>,
    min_entropy: f64,
) -> bool {
    if !len.contains(&value.len())
        || value.iter().any(|&b| b <= b' ' || b == 0x7f)
        // Tokens never contain backslashes; Windows and registry paths do.
        || value.contains(&b'\\')
        || value.starts_with(b"$")
        || value.starts_with(b"%")
        || placeholder_or_reference(value)
        || url_without_credentials(value)
        || is_phrase(value)
        || (bare && looks_like_code(value))
    {
        return false;
    }
    // A short string cannot reach a fixed bits/char floor (8 distinct chars
    // top out at 3.0), and hex carries 4 bits/char at most: scale the floor.
    let floor = if value.iter().all(u8::is_ascii_hexdigit) {
        3.0
    } else {
        0.85 * (value.len() as f64).log2()
    };
    entropy(value) >= min_entropy.min(floor)
}

pub(super) fn url_without_credentials(value: &[u8]) -> bool {
    let Some(scheme_end) = find(value, b"://") else {
        return false;
    };
    let rest = &value[scheme_end + 3..];
    let authority = rest.split(|&b| b == b'/').next().unwrap_or(rest);
    // user:password@host carries a credential; anything else is an address.
    !authority
        .iter()
        .position(|&b| b == b'@')
        .is_some_and(|at| authority[..at].contains(&b':'))
}

/// `my-api-token`, `/etc/ssl/server.key`, `PBEWithHmacSHA256`, `win32api.RegOpenKeyEx`:
/// at least 2/3 of the letters sit in pronounceable words (3+ letters, 1/5
/// vowels), and digits rarely run into letters. Random tokens break into
/// fragments like `Fj3k`, `Qz`.
pub(super) fn is_phrase(value: &[u8]) -> bool {
    let (mut letters, mut in_words, mut digit_to_letter) = (0, 0, 0);
    for word in name_words(value) {
        let word = word.as_bytes();
        digit_to_letter += word
            .windows(2)
            .filter(|w| w[0].is_ascii_digit() && w[1].is_ascii_alphabetic())
            .count();
        for run in word
            .chunk_by(|a, b| a.is_ascii_digit() == b.is_ascii_digit())
            .filter(|run| !run[0].is_ascii_digit())
        {
            letters += run.len();
            let vowels = run.iter().filter(|b| b"aeiouy".contains(b)).count();
            if run.len() >= 3 && vowels * 5 >= run.len() {
                in_words += run.len();
            }
        }
    }
    digit_to_letter <= 1 && in_words * 3 >= letters * 2
}

/// Unquoted right-hand sides in source code are expressions: calls, indexing,
/// `module::CONSTANT` paths.
pub(super) fn looks_like_code(value: &[u8]) -> bool {
    value.iter().any(|b| b"()[]{}".contains(b)) || find(value, b"::").is_some()
}
