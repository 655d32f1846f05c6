//! Reading a command line: a tool's subcommand words past its global flags, and the request
//! an HTTP client's own argv makes (curl, wget).

use std::str::FromStr;

use super::http::{Request, authority_host};

/// The subcommand words of `args` (argv without argv[0]): every argument that is not a flag,
/// nor the value of a flag in `value_flags` written apart (`-n x`, `--region r`). Everything
/// after `--` is an operand.
pub fn words<'a>(args: &[&'a str], value_flags: &[String]) -> Vec<&'a str> {
    let mut words = Vec::new();
    let mut iter = args.iter();
    while let Some(&arg) = iter.next() {
        if arg == "--" {
            words.extend(iter.by_ref().copied());
            break;
        }
        if arg.starts_with('-') && arg.len() > 1 {
            if !arg.contains('=') && value_flags.iter().any(|f| f == arg) {
                iter.next();
            }
            continue;
        }
        words.push(arg);
    }
    words
}

/// The HTTP clients whose argv is read as the request it makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpClient {
    Curl,
    Wget,
}

impl HttpClient {
    pub const NAMES: &[&str] = &["curl", "wget"];

    /// The requests `args` (argv without argv[0]) makes, one per URL.
    pub fn requests(self, args: &[&str]) -> Vec<Request> {
        match self {
            HttpClient::Curl => curl(args),
            HttpClient::Wget => wget(args),
        }
    }
}

impl FromStr for HttpClient {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, String> {
        match raw {
            "curl" => Ok(HttpClient::Curl),
            "wget" => Ok(HttpClient::Wget),
            _ => Err(format!(
                "unknown HTTP client {raw:?} (expected one of: {})",
                Self::NAMES.join(", ")
            )),
        }
    }
}

/// What an HTTP client's options say about the request.
#[derive(Default)]
struct Options {
    method: Option<String>,
    urls: Vec<String>,
    headers: Vec<(String, String)>,
    data: Vec<String>,
    /// Some data comes from a file or stdin (`-d @file`): the body cannot be seen.
    data_hidden: bool,
    /// curl `-G`: the data goes into the query of a GET.
    get: bool,
    head: bool,
    /// curl `--json` sets the content type.
    json: bool,
}

impl Options {
    fn header(&mut self, raw: &str) {
        if let Some((name, value)) = raw.split_once(':') {
            self.headers
                .push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }

    fn data(&mut self, value: &str, literal: bool) {
        if !literal && value.starts_with('@') {
            self.data_hidden = true;
        } else {
            self.data.push(value.to_string());
        }
    }

    fn requests(self) -> Vec<Request> {
        let has_data = !self.data.is_empty() || self.data_hidden;
        let method = self.method.clone().unwrap_or_else(|| {
            match (self.head, self.get, has_data) {
                (true, _, _) => "HEAD",
                (_, true, _) | (_, _, false) => "GET",
                _ => "POST",
            }
            .to_string()
        });
        let body = self.data.join("&");
        let mut headers = self.headers.clone();
        if self.json && !headers.iter().any(|(n, _)| n == "content-type") {
            headers.push(("content-type".into(), "application/json".into()));
        }
        self.urls
            .iter()
            .filter_map(|raw| {
                let absolute = if raw.contains("://") {
                    raw.clone()
                } else {
                    format!("http://{raw}")
                };
                let mut url = url::Url::parse(&absolute).ok()?;
                if self.get && !body.is_empty() {
                    let query = match url.query() {
                        Some(q) => format!("{q}&{body}"),
                        None => body.clone(),
                    };
                    url.set_query(Some(&query));
                }
                let target = match url.query() {
                    Some(q) => format!("{}?{q}", url.path()),
                    None => url.path().to_string(),
                };
                let host = url.host_str().and_then(authority_host);
                let in_body = !self.get;
                Some(Request {
                    method: method.clone(),
                    target,
                    host,
                    headers: headers.clone(),
                    body: if in_body {
                        body.clone().into_bytes()
                    } else {
                        Vec::new()
                    },
                    body_complete: !(in_body && self.data_hidden),
                })
            })
            .collect()
    }
}

/// curl options that take a value (curl(1)); any other option takes none.
const CURL_VALUE: &[&str] = &[
    "-A",
    "-b",
    "-c",
    "-C",
    "-d",
    "-D",
    "-E",
    "-e",
    "-F",
    "-H",
    "-h",
    "-K",
    "-m",
    "-o",
    "-P",
    "-Q",
    "-r",
    "-T",
    "-t",
    "-U",
    "-u",
    "-w",
    "-X",
    "-x",
    "-Y",
    "-y",
    "-z",
    "--abstract-unix-socket",
    "--aws-sigv4",
    "--cacert",
    "--capath",
    "--cert",
    "--cert-type",
    "--ciphers",
    "--config",
    "--connect-timeout",
    "--connect-to",
    "--cookie",
    "--cookie-jar",
    "--data",
    "--data-ascii",
    "--data-binary",
    "--data-raw",
    "--data-urlencode",
    "--dns-servers",
    "--doh-url",
    "--dump-header",
    "--form",
    "--form-string",
    "--header",
    "--interface",
    "--json",
    "--key",
    "--key-type",
    "--limit-rate",
    "--max-filesize",
    "--max-redirs",
    "--max-time",
    "--noproxy",
    "--oauth2-bearer",
    "--output",
    "--output-dir",
    "--pass",
    "--preproxy",
    "--proxy",
    "--proxy-header",
    "--proxy-user",
    "--range",
    "--referer",
    "--request",
    "--resolve",
    "--retry",
    "--retry-delay",
    "--retry-max-time",
    "--unix-socket",
    "--upload-file",
    "--url",
    "--url-query",
    "--user",
    "--user-agent",
    "--variable",
    "--write-out",
];

fn curl(args: &[&str]) -> Vec<Request> {
    let mut options = Options::default();
    let mut iter = args.iter().copied();
    while let Some(arg) = iter.next() {
        let (option, attached) = match arg {
            "--" => {
                options.urls.extend(iter.by_ref().map(str::to_string));
                break;
            }
            long if long.starts_with("--") => (long, None),
            short if short.starts_with('-') && short.len() > 1 => {
                // A cluster (`-sSX`, `-XDELETE`): flags until one that takes a value, whose
                // value is the rest of the cluster or the next argument.
                let mut found = None;
                for (at, c) in short.char_indices().skip(1) {
                    let flag = &short[at..at + c.len_utf8()];
                    let name = format!("-{flag}");
                    if let Some(&known) = CURL_VALUE.iter().find(|f| **f == name) {
                        let rest = &short[at + c.len_utf8()..];
                        found = Some((known, (!rest.is_empty()).then_some(rest)));
                        break;
                    }
                    match c {
                        'G' => options.get = true,
                        'I' => options.head = true,
                        _ => {}
                    }
                }
                match found {
                    Some(found) => found,
                    None => continue,
                }
            }
            url => {
                options.urls.push(url.to_string());
                continue;
            }
        };
        match option {
            "--get" => options.get = true,
            "--head" => options.head = true,
            _ => {}
        }
        if !CURL_VALUE.contains(&option) {
            continue;
        }
        let Some(value) = attached.or_else(|| iter.next()) else {
            break;
        };
        match option {
            "-X" | "--request" => options.method = Some(value.to_string()),
            "-H" | "--header" => options.header(value),
            "--url" => options.urls.push(value.to_string()),
            "-d" | "--data" | "--data-ascii" | "--data-binary" => options.data(value, false),
            "--data-raw" => options.data(value, true),
            "--data-urlencode" => options.data(value, !value.contains('@')),
            "--json" => {
                options.json = true;
                options.data(value, false);
            }
            // Uploads and forms: a body that is not on the command line.
            "-T" | "--upload-file" => {
                options.data_hidden = true;
                options.method.get_or_insert_with(|| "PUT".into());
            }
            "-F" | "--form" => options.data_hidden = true,
            _ => {}
        }
    }
    options.requests()
}

/// wget options that take a value when written apart (wget also takes `--opt=value`).
const WGET_VALUE: &[&str] = &[
    "-O",
    "-o",
    "-a",
    "-e",
    "-i",
    "-B",
    "-t",
    "-T",
    "-w",
    "-Q",
    "-P",
    "-U",
    "-l",
    "-A",
    "-R",
    "-D",
    "-I",
    "-X",
    "--method",
    "--header",
    "--post-data",
    "--post-file",
    "--body-data",
    "--body-file",
    "--user",
    "--password",
    "--output-document",
    "--user-agent",
];

fn wget(args: &[&str]) -> Vec<Request> {
    let mut options = Options::default();
    let mut iter = args.iter().copied();
    while let Some(arg) = iter.next() {
        if !arg.starts_with('-') || arg == "-" {
            options.urls.push(arg.to_string());
            continue;
        }
        let (option, value) = match arg.split_once('=') {
            Some((option, value)) if option.starts_with("--") => (option, Some(value)),
            _ if WGET_VALUE.contains(&arg) => (arg, iter.next()),
            _ => (arg, None),
        };
        let Some(value) = value else { continue };
        match option {
            "--method" => options.method = Some(value.to_ascii_uppercase()),
            "--header" => options.header(value),
            "--post-data" | "--body-data" => options.data.push(value.to_string()),
            "--post-file" | "--body-file" => options.data_hidden = true,
            _ => {}
        }
    }
    options.requests()
}
