use super::{
    baseline::Baseline,
    report::{Format, Report},
    rules::RuleFile,
    text::*,
    workspace::scan_paths,
    *,
};
use std::path::Path;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

// Test tokens are generated at run time so this file itself holds no
// credential-shaped strings for other scanners to trip over.
const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const URLSAFE: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
const BASE64: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BASE32: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const LOWER_ALNUM: &str = "abcdefghijklmnopqrstuvwxyz0123456789";
const HEX: &str = "0123456789abcdef";
const DIGITS: &str = "0123456789";

const PROVIDERS: &[&str] = &[
    "railway",
    "aws",
    "gcp",
    "azure",
    "github",
    "gitlab",
    "cloudflare",
    "digitalocean",
    "heroku",
    "vercel",
    "netlify",
    "fly",
    "render",
    "supabase",
    "neon",
    "hetzner",
    "linode",
    "anthropic",
    "openai",
    "gemini",
    "slack",
    "stripe",
    "npm",
    "pypi",
    "planetscale",
    "terraform",
];

static SCANNER: LazyLock<Scanner> = LazyLock::new(|| {
    let env = [
        ("RAILWAY_TOKEN", "railway"),
        ("RAILWAY_API_TOKEN", "railway"),
        ("HCLOUD_TOKEN", "hetzner"),
        ("FLY_API_TOKEN", "fly"),
    ];
    Scanner::new(&env.map(|(n, p)| (n.to_string(), p.to_string())))
});

/// Deterministic pseudo-random string over `charset` (xorshift64).
fn tok(charset: &str, len: usize, seed: u64) -> String {
    let chars = charset.as_bytes();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chars[(x % chars.len() as u64) as usize] as char
        })
        .collect()
}

fn uuid(seed: u64) -> String {
    let h = tok(HEX, 32, seed);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn scan(content: &str) -> Vec<Finding> {
    SCANNER.scan_bytes(content.as_bytes())
}

#[track_caller]
fn assert_single(content: &str, rule: &str, provider: Option<&str>) {
    let findings = scan(content);
    let got: Vec<_> = findings
        .iter()
        .map(|f| (f.rule.as_str(), f.provider.as_deref()))
        .collect();
    assert_eq!(got, [(rule, provider)], "content: {content}");
}

#[track_caller]
fn assert_clean(content: &str) {
    assert_eq!(scan(content), [], "content: {content}");
}

fn private_key_block() -> String {
    let body: Vec<String> = (0..12).map(|i| tok(BASE64, 64, 900 + i)).collect();
    format!(
        "-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----\n",
        body.join("\n")
    )
}

/// (content, rule, provider): one true positive per rule and syntax.
fn positives() -> Vec<(String, &'static str, Option<&'static str>)> {
    let service_account = format!(
        "{{\n  \"type\": \"service_account\",\n  \"project_id\": \"demo\",\n  \
         \"private_key_id\": \"{}\",\n  \"private_key\": \"{}\",\n  \
         \"client_email\": \"ci@demo.iam.gserviceaccount.com\"\n}}\n",
        tok(HEX, 40, 60),
        private_key_block().replace("RSA ", "").replace('\n', "\\n")
    );
    vec![
        (
            format!("aws_access_key_id = AKIA{}", tok(BASE32, 16, 1)),
            "aws-access-key-id",
            Some("aws"),
        ),
        (
            format!("aws_secret_access_key = {}", tok(BASE64, 40, 2)),
            "aws-secret-access-key",
            Some("aws"),
        ),
        (
            format!("GH_TOKEN=ghp_{}", tok(ALNUM, 36, 3)),
            "github-pat",
            Some("github"),
        ),
        (
            format!("\"oauth_token\": \"gho_{}\"", tok(ALNUM, 36, 4)),
            "github-oauth",
            Some("github"),
        ),
        (
            format!(
                "git clone https://x:ghs_{}@github.com/o/r",
                tok(ALNUM, 36, 5)
            ),
            "github-app-token",
            Some("github"),
        ),
        (
            format!("refresh: ghr_{}", tok(ALNUM, 36, 6)),
            "github-refresh-token",
            Some("github"),
        ),
        (
            format!("github_pat_{}", tok(&format!("{ALNUM}_"), 82, 7)),
            "github-fine-grained-pat",
            Some("github"),
        ),
        (
            format!("GITLAB_TOKEN: glpat-{}", tok(URLSAFE, 20, 8)),
            "gitlab-pat",
            Some("gitlab"),
        ),
        (
            format!(
                "slack = xoxb-{}-{}-{}",
                tok(DIGITS, 12, 9),
                tok(DIGITS, 12, 10),
                tok(ALNUM, 24, 11)
            ),
            "slack-token",
            Some("slack"),
        ),
        (
            format!(
                "url: https://hooks.slack.com/services/T{}/B{}/{}",
                tok(BASE32, 8, 12),
                tok(BASE32, 10, 13),
                tok(ALNUM, 24, 14)
            ),
            "slack-webhook-url",
            Some("slack"),
        ),
        (
            format!("STRIPE_KEY=sk_live_{}", tok(ALNUM, 24, 15)),
            "stripe-secret-key",
            Some("stripe"),
        ),
        (
            format!("sk-ant-api03-{}AA", tok(URLSAFE, 93, 16)),
            "anthropic-api-key",
            Some("anthropic"),
        ),
        (
            format!(
                "OPENAI_API_KEY=\"sk-proj-{}T3BlbkFJ{}\"",
                tok(URLSAFE, 74, 17),
                tok(URLSAFE, 74, 18)
            ),
            "openai-api-key",
            Some("openai"),
        ),
        (
            format!(
                "openai.api_key = 'sk-{}T3BlbkFJ{}'",
                tok(ALNUM, 20, 19),
                tok(ALNUM, 20, 20)
            ),
            "openai-api-key",
            Some("openai"),
        ),
        (
            format!("GEMINI_API_KEY=AIza{}", tok(URLSAFE, 35, 21)),
            "gemini-api-key",
            Some("gemini"),
        ),
        (
            format!("const maps = \"AIza{}\";", tok(URLSAFE, 35, 22)),
            "gcp-api-key",
            Some("gcp"),
        ),
        (service_account, "gcp-service-account", Some("gcp")),
        (
            format!("client_secret: GOCSPX-{}", tok(URLSAFE, 28, 23)),
            "gcp-oauth-client-secret",
            Some("gcp"),
        ),
        (
            format!(
                "DefaultEndpointsProtocol=https;AccountName=demo;AccountKey={}==;\
                 EndpointSuffix=core.windows.net",
                tok(BASE64, 86, 24)
            ),
            "azure-storage-account-key",
            Some("azure"),
        ),
        (
            format!(
                "AZURE_CLIENT_SECRET=\"{}8Q~{}\"",
                tok(ALNUM, 3, 25),
                tok(ALNUM, 34, 26)
            ),
            "azure-ad-client-secret",
            Some("azure"),
        ),
        (private_key_block(), "private-key", None),
        (
            format!("DIGITALOCEAN_TOKEN=dop_v1_{}", tok(HEX, 64, 27)),
            "digitalocean-token",
            Some("digitalocean"),
        ),
        (
            format!("CLOUDFLARE_API_TOKEN={}", tok(URLSAFE, 40, 28)),
            "cloudflare-api-token",
            Some("cloudflare"),
        ),
        (
            format!("export CF_API_TOKEN=\"{}\"", tok(URLSAFE, 40, 29)),
            "cloudflare-api-token",
            Some("cloudflare"),
        ),
        (
            format!("HRKU-AA{}", tok(URLSAFE, 58, 30)),
            "heroku-api-key",
            Some("heroku"),
        ),
        (
            format!("HEROKU_API_KEY={}", uuid(31)),
            "heroku-api-key",
            Some("heroku"),
        ),
        (
            format!("token: vcp_{}", tok(ALNUM, 24, 32)),
            "vercel-token",
            Some("vercel"),
        ),
        (
            format!("VERCEL_TOKEN={}", tok(ALNUM, 24, 33)),
            "vercel-token",
            Some("vercel"),
        ),
        (
            format!("nfp_{}", tok(ALNUM, 36, 34)),
            "netlify-token",
            Some("netlify"),
        ),
        (
            format!("NETLIFY_AUTH_TOKEN={}", tok(URLSAFE, 43, 35)),
            "netlify-token",
            Some("netlify"),
        ),
        (
            format!("fly auth token: fo1_{}", tok(URLSAFE, 43, 36)),
            "fly-token",
            Some("fly"),
        ),
        (
            format!(
                "FLY_API_TOKEN=\"FlyV1 fm2_{},fm2_{}\"",
                tok(BASE64, 120, 37),
                tok(BASE64, 120, 38)
            ),
            "fly-token",
            Some("fly"),
        ),
        (
            format!("RENDER_API_KEY=rnd_{}", tok(ALNUM, 32, 39)),
            "render-api-key",
            Some("render"),
        ),
        (
            format!("SUPABASE_ACCESS_TOKEN=sbp_{}", tok(HEX, 40, 40)),
            "supabase-token",
            Some("supabase"),
        ),
        (
            format!("SUPABASE_SECRET_KEY=sb_secret_{}", tok(URLSAFE, 31, 41)),
            "supabase-token",
            Some("supabase"),
        ),
        (
            format!("NEON_API_KEY=napi_{}", tok(LOWER_ALNUM, 64, 42)),
            "neon-api-key",
            Some("neon"),
        ),
        (
            format!("HCLOUD_TOKEN={}", tok(ALNUM, 64, 43)),
            "hetzner-api-token",
            Some("hetzner"),
        ),
        (
            format!(
                "# hcloud CLI\n[[contexts]]\nname = \"prod\"\ntoken = \"{}\"\n",
                tok(ALNUM, 64, 44)
            ),
            "hetzner-api-token",
            Some("hetzner"),
        ),
        (
            format!("LINODE_TOKEN={}", tok(HEX, 64, 45)),
            "linode-api-token",
            Some("linode"),
        ),
        (
            format!("RAILWAY_TOKEN={}", uuid(46)),
            "railway-token",
            Some("railway"),
        ),
        (
            format!("railway:\n  apiToken: \"{}\"", uuid(47)),
            "generic-assignment",
            None,
        ),
        (
            format!(
                "//registry.npmjs.org/:_authToken=npm_{}",
                tok(ALNUM, 36, 48)
            ),
            "npm-access-token",
            Some("npm"),
        ),
        (
            format!("password = pypi-AgEIcHlwaS5vcmc{}", tok(URLSAFE, 70, 49)),
            "pypi-upload-token",
            Some("pypi"),
        ),
        // Generic assignments, in each syntax.
        (
            format!("DB_PASSWORD = \"{}\"", tok(ALNUM, 20, 50)),
            "generic-assignment",
            None,
        ),
        (
            format!("  api_key: {}", tok(ALNUM, 24, 51)),
            "generic-assignment",
            None,
        ),
        (
            format!("{{\"clientSecret\": \"{}\"}}", tok(URLSAFE, 32, 52)),
            "generic-assignment",
            None,
        ),
        (
            format!("export AUTH_TOKEN={}", tok(ALNUM, 32, 53)),
            "generic-assignment",
            None,
        ),
        (
            format!("Authorization: Bearer {}", tok(ALNUM, 40, 54)),
            "generic-assignment",
            None,
        ),
        (
            format!("const SESSION_SECRET: &str = \"{}\";", tok(BASE64, 32, 55)),
            "generic-assignment",
            None,
        ),
        // A policy variable: lower bar (10 chars) and the provider it names.
        (
            format!("RAILWAY_API_TOKEN={}", tok(ALNUM, 10, 56)),
            "env-credential",
            Some("railway"),
        ),
        (
            format!(
                "process.env.RAILWAY_API_TOKEN = \"{}\";",
                tok(ALNUM, 24, 57)
            ),
            "env-credential",
            Some("railway"),
        ),
        // Written the way people write them: prose, tables, headers.
        (
            format!("The railway token is {}, keep it safe", uuid(60)),
            "railway-token",
            Some("railway"),
        ),
        (
            format!("| Railway | API token | `{}` |", uuid(61)),
            "railway-token",
            Some("railway"),
        ),
        (
            format!(
                "curl -H \"Authorization: Bearer {}\" https://backboard.railway.app/graphql/v2",
                uuid(62)
            ),
            "railway-token",
            Some("railway"),
        ),
        (
            format!("heroku api key: {}", uuid(63)),
            "heroku-api-key",
            Some("heroku"),
        ),
        (
            format!(
                "curl -H \"X-Auth-Key: {}\" https://api.cloudflare.com/client/v4",
                tok(HEX, 37, 64)
            ),
            "cloudflare-global-api-key",
            Some("cloudflare"),
        ),
        (
            format!("DOCKER_PAT=dckr_pat_{}", tok(URLSAFE, 27, 65)),
            "docker-hub-pat",
            None,
        ),
        (
            format!(
                "postgres://neondb_owner:npg_{}@ep-cool-1.neon.tech/neondb",
                tok(ALNUM, 12, 66)
            ),
            "neon-password",
            Some("neon"),
        ),
        (
            format!("SG.{}.{}", tok(URLSAFE, 22, 67), tok(URLSAFE, 43, 68)),
            "sendgrid-api-key",
            None,
        ),
        (
            format!("pscale_tkn_{}", tok(URLSAFE, 43, 69)),
            "planetscale-token",
            Some("planetscale"),
        ),
        (
            format!(
                "token = \"{}.atlasv1.{}\"",
                tok(ALNUM, 14, 70),
                tok(URLSAFE, 67, 71)
            ),
            "terraform-cloud-token",
            Some("terraform"),
        ),
        (
            format!("hf_{}", tok(&ALNUM[..52], 34, 72)),
            "huggingface-token",
            None,
        ),
        (
            format!("sntrys_eyJ{}", tok(BASE64, 80, 73)),
            "sentry-token",
            None,
        ),
        (
            format!("VAULT_TOKEN=hvs.{}", tok(URLSAFE, 90, 74)),
            "vault-token",
            None,
        ),
        (
            format!("dp.pt.{}", tok(ALNUM, 43, 75)),
            "doppler-token",
            None,
        ),
        (
            format!("lin_api_{}", tok(ALNUM, 40, 76)),
            "linear-api-key",
            None,
        ),
        (format!("gsk_{}", tok(ALNUM, 52, 77)), "groq-api-key", None),
        (
            format!(
                "https://acct.blob.core.windows.net/c?sv=2022-11-02&ss=b&sp=rl&sig={}%3D",
                tok(ALNUM, 43, 78)
            ),
            "azure-sas-token",
            Some("azure"),
        ),
        (
            format!(
                "aws configure set aws_secret_access_key {}",
                tok(BASE64, 40, 79)
            ),
            "aws-secret-access-key",
            Some("aws"),
        ),
        (
            format!(
                "redis://default:{}@cache.internal:6379/0",
                tok(ALNUM, 20, 80)
            ),
            "connection-string-password",
            None,
        ),
        (
            format!(
                "Server=db.corp;Database=app;User Id=sa;Password={};",
                tok(ALNUM, 14, 81)
            ),
            "connection-string-password",
            None,
        ),
        (
            format!(
                "mysql -h db -u root -p'{}' app < dump.sql",
                tok(ALNUM, 14, 82)
            ),
            "command-line-password",
            None,
        ),
        (
            format!("client-key-data: {}", {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.encode(private_key_block())
            }),
            "private-key",
            None,
        ),
    ]
}

#[test]
fn rules_load_with_policy_provider_ids() {
    let file: RuleFile = toml::from_str(include_str!("patterns.toml")).unwrap();
    for rule in &file.rule {
        if let Some(provider) = &rule.provider {
            assert!(PROVIDERS.contains(&provider.as_str()), "{}", rule.id);
        }
        assert!(!rule.keywords.is_empty(), "{} has no prefilter", rule.id);
    }
    assert_eq!(SCANNER.rules.len(), file.rule.len());
}

#[test]
fn true_positives() {
    for (content, rule, provider) in positives() {
        assert_single(&content, rule, provider);
    }
}

#[test]
fn every_format_rule_has_a_positive() {
    let covered: HashSet<&str> = positives().into_iter().map(|(_, rule, _)| rule).collect();
    for rule in &SCANNER.rules {
        assert!(covered.contains(rule.id.as_str()), "{} untested", rule.id);
    }
}

/// The precision heuristics must not cost recall on real random tokens.
#[test]
fn random_tokens_are_recalled() {
    let recalled = |template: &str, charset: &str, len: usize| {
        (0..200)
            .filter(|&seed| {
                let value = tok(charset, len, 1000 + seed);
                !scan(&template.replace("{}", &value)).is_empty()
            })
            .count()
    };
    for (charset, len) in [
        (ALNUM, 16),
        (ALNUM, 32),
        (URLSAFE, 32),
        (BASE64, 40),
        (HEX, 32),
        (LOWER_ALNUM, 24),
    ] {
        let found = recalled("api_token = \"{}\"", charset, len);
        assert!(found >= 185, "{charset} x{len}: {found}/200");
    }
    assert!(recalled("RAILWAY_API_TOKEN={}", ALNUM, 12) >= 175);
    assert!(recalled("RAILWAY_API_TOKEN={}", ALNUM, 8) >= 160);
}

#[test]
fn finding_fields_and_lines() {
    let token = format!("ghp_{}", tok(ALNUM, 36, 70));
    let content = format!("# config\n\nGH_TOKEN={token}\n{}", private_key_block());
    let findings = scan(&content);
    assert_eq!(
        findings,
        [
            Finding {
                line: 3,
                rule: "github-pat".into(),
                provider: Some("github".into()),
                redacted: format!("ghp_…{}", &token[token.len() - 2..]),
            },
            Finding {
                line: 4,
                rule: "private-key".into(),
                provider: None,
                redacted: "----…--".into(),
            },
        ]
    );
}

#[test]
fn format_rules_win_over_assignments_and_duplicates_collapse() {
    let token = format!("ghp_{}", tok(ALNUM, 36, 71));
    // Secret-named and policy-named assignments of a known format.
    assert_single(
        &format!("token = \"{token}\""),
        "github-pat",
        Some("github"),
    );
    assert_single(
        &format!("RAILWAY_TOKEN={token}"),
        "github-pat",
        Some("github"),
    );
    // One finding per (line, secret), but each line counts.
    assert_eq!(scan(&format!("a={token} b={token}")).len(), 1);
    assert_eq!(scan(&format!("a={token}\nb={token}")).len(), 2);
    // The policy name beats the generic rule for the same value.
    assert_single(
        &format!("HCLOUD_TOKEN=\"{}\"", tok(ALNUM, 32, 72)),
        "env-credential",
        Some("hetzner"),
    );
}

#[test]
fn placeholders_and_references_are_not_secrets() {
    for content in [
        "API_KEY=changeme",
        "token: \"<your-token>\"",
        "token: <YOUR_API_TOKEN_HERE_12345>",
        "password = \"${DB_PASSWORD}\"",
        "secret=$(cat /run/secrets/db)",
        "GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}",
        "api_key = \"xxxxxxxxxxxxxxxxxxxxxxxx\"",
        "api_key = \"XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX\"",
        "token = \"your_token_here_1234\"",
        "password: \"aaaaaaaaaaaaaaaaaaaaaaaa\"",
        "password: \"abcabcabcabcabcabc12\"",
        "api_key = \"sk-1234567890abcdef-example\"",
        "SECRET_KEY = \"replace-with-a-long-random-string-42\"",
        "token_url: https://auth.service.io/oauth/token",
        "auth_endpoint = \"https://login.microsoftonline.com/common/v2\"",
        "ssl_key = \"/etc/ssl/private/server-2024.key\"",
        "secret_file: ./config/secrets/prod2.yaml",
        "client_secret_path = \"conf/oauth2/client.json\"",
        "RAILWAY_TOKEN=$RAILWAY_TOKEN",
        "RAILWAY_TOKEN=",
        "password=%(db_password)s",
        "\"token_expired\": \"Your session token has expired\"",
        "key: \"welcome_message_2\"",
        "signingkey = 3AA5C34371567BD2",
    ] {
        assert_clean(content);
    }
    assert_clean(&format!(
        "token: ghp_{}",
        "x".repeat(36) // a format hit with no entropy is a placeholder
    ));
}

#[test]
fn aws_documentation_examples_are_ignored() {
    let id = format!("AKIA{}", "IOSFODNN7EXAMPLE");
    let secret = format!("wJalrXUtnFEMI/K7MDENG/bPxRfiCY{}", "EXAMPLEKEY");
    assert_clean(&format!(
        "# Credentials\n\nSet `AWS_ACCESS_KEY_ID={id}` and\n\n```ini\n[default]\n\
         aws_access_key_id = {id}\naws_secret_access_key = {secret}\n```\n"
    ));
}

#[test]
fn lockfile_hashes_and_commit_shas_do_not_fire() {
    let sha = tok(HEX, 40, 80);
    let sha256 = tok(HEX, 64, 81);
    for content in [
        format!(
            "    \"node_modules/x\": {{\n      \"resolved\": \"https://registry.npmjs.org/x/-/x-1.0.0.tgz\",\n      \
             \"integrity\": \"sha512-{}==\"\n    }}",
            tok(BASE64, 86, 82)
        ),
        format!(
            "[[package]]\nname = \"hcloud\"\nversion = \"0.21.0\"\n\
             source = \"registry+https://github.com/rust-lang/crates.io-index\"\n\
             checksum = \"{sha256}\"\n"
        ),
        format!("commit {sha}\nAuthor: Dev <dev@example.org>\n"),
        format!("\"sha\": \"{sha}\","),
        format!("rev = \"{sha}\""),
        format!("      - uses: actions/checkout@{sha} # v4"),
        format!("source = \"git+https://github.com/o/r?branch=main#{sha}\""),
        format!("{sha} refs/heads/main"),
    ] {
        assert_clean(&content);
    }
}

#[test]
fn uuids_need_a_railway_credential_name() {
    for content in [
        format!("project_id = \"{}\"", uuid(90)),
        format!("RAILWAY_PROJECT_ID={}", uuid(91)),
        format!("RAILWAY_ENVIRONMENT_ID: {}", uuid(92)),
        format!("railway link --project {}", uuid(93)),
        format!("X-Request-Id: {}", uuid(94)),
        format!("HEROKU_APP_ID={}", uuid(95)),
        uuid(96),
    ] {
        assert_clean(&content);
    }
}

#[test]
fn code_and_public_values_do_not_fire() {
    for content in [
        "let token = get_token();",
        "password = os.environ[\"PW\"]",
        "const apiKey = process.env.OPENAI_API_KEY;",
        "token = self.config.github_access_token",
        "api_key = settings.API_KEY_FROM_VAULT",
        "auth = AuthenticationMiddleware2Handler",
        "private_key = load_private_key(key_path2)",
        "if token == \"\" {",
        "if pem.starts_with(\"-----BEGIN PRIVATE KEY-----\") {",
        "vcr_cassette_dir = \"tests/cassettes\"",
        // Seen in real trees: bindings, registry paths, algorithm names.
        "key_node.tag = 'tag:yaml.org,2002:str'",
        "    pub Password: super::super::Win32::Foundation::UNICODE_STRING,",
        "pub const IFLA_BOND_AD_INFO_ACTOR_KEY: _bindgen_ty_28 = _bindgen_ty_28::IFLA_BOND_AD_INFO_ACTOR_KEY;",
        "    pub dot11AuthAlgo: DOT11_AUTH_ALGORITHM,",
        "    pub PassThrough: SCSI_PASS_THROUGH_DIRECT32,",
        "let key = r\"SOFTWARE\\Microsoft\\VisualStudio\\SxS\\VC7\";",
        "#keystore.pkcs12.keyProtectionAlgorithm = PBEWithHmacSHA256AndAES_256",
        "credential_helper = \"osxkeychain2Helper\"",
        "com.google.auth:google-auth-library-oauth2-http\t1.57.0",
        "the \"key::\" prefix mechanism (e.g. \"key::ecdsa-sha2-nistp256\")",
        "    pub token_create: bpf_attr__bindgen_ty_20,",
        "    pub credentials: MI_UserCredentials_0,",
        "        RegOpenKeyEx = win32api.RegOpenKeyEx",
        "        self, private_key: ed25519.Ed25519PrivateKey, f_priv: _FragList",
        "    pub authTransform: IPSEC_AUTH_TRANSFORM0,",
        "    pub GenerateKeyPair: BCryptGenerateKeyPairFn,",
        "    mngr->getKey = xmlSecKeysMngrGetKey;",
        "syn match sudoersPASSWD contained '\\%(NO\\)\\=PASSWD:' nextgroup=@sudoersCmndInSpec",
    ] {
        assert_clean(content);
    }
    assert_clean(&format!(
        "public_key = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{}\"",
        tok(BASE64, 43, 100)
    ));
    assert_clean(&format!(
        "NEXT_PUBLIC_SUPABASE_ANON_KEY=eyJ{}.eyJ{}.{}",
        tok(URLSAFE, 30, 101),
        tok(URLSAFE, 60, 102),
        tok(URLSAFE, 43, 103)
    ));
}

#[test]
fn non_utf8_content_is_scanned() {
    let token = format!("npm_{}", tok(ALNUM, 36, 110));
    let mut content = b"\xff\xfe\x80 junk\n".to_vec();
    content.extend_from_slice(format!("NPM_TOKEN={token}\n").as_bytes());
    content.extend_from_slice(b"\xc3\x28 more\n");
    let findings = SCANNER.scan_bytes(&content);
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].line, 2);
    assert_eq!(findings[0].rule, "npm-access-token");
}

#[test]
fn redaction_reveals_at_most_six_characters() {
    assert_eq!(redact(b"short"), "****");
    assert_eq!(redact(b"0123456789a"), "****");
    assert_eq!(redact(b"0123456789ab"), "0123…ab");
    for (content, _, _) in positives() {
        for finding in scan(&content) {
            let shown = finding.redacted.chars().filter(|&c| c != '…').count();
            assert!(shown <= 6, "{finding:?}");
            assert!(finding.redacted == "****" || finding.redacted.contains('…'));
        }
    }
}

#[test]
fn scan_file_skips_binary_and_non_regular_files() {
    let dir = tempfile::tempdir().unwrap();
    let token = format!("glpat-{}", tok(URLSAFE, 20, 120));

    let binary = dir.path().join("blob.bin");
    std::fs::write(&binary, format!("\0ELF\n{token}\n")).unwrap();
    assert_eq!(SCANNER.scan_file(&binary).unwrap(), []);

    // Not a regular file: nothing to read, and no blocking on a FIFO.
    assert_eq!(SCANNER.scan_file(dir.path()).unwrap(), []);
    assert!(SCANNER.scan_file(&dir.path().join("missing")).is_err());
}

#[test]
fn large_files_are_scanned_whole_in_overlapping_windows() {
    let dir = tempfile::tempdir().unwrap();
    let filler = "2024-05-01T10:00:00Z INFO request served in 3ms\n";
    let lines_per_window = WINDOW_BYTES / filler.len();
    let tokens: Vec<String> = (0..3)
        .map(|i| format!("ghp_{}", tok(ALNUM, 36, 140 + i)))
        .collect();
    let mut content = String::new();
    let mut expected = Vec::new();
    // One token straddling the first window's hand-over point, one at the
    // first window's very end, one deep in the file (past 1 MiB).
    let straddle = WINDOW_BYTES - WINDOW_OVERLAP - 10;
    while content.len() < straddle {
        content.push_str(filler);
    }
    content.truncate(straddle);
    content.push('\n');
    for (token, pad_to) in tokens
        .iter()
        .zip([0, WINDOW_BYTES - 20, 5 * WINDOW_BYTES / 2])
    {
        while content.len() < pad_to {
            content.push_str(filler);
        }
        expected.push(content.matches('\n').count() + 1);
        content.push_str(&format!("{token}\n"));
    }
    let big = dir.path().join("big.log");
    std::fs::write(&big, &content).unwrap();
    let lines: Vec<usize> = SCANNER
        .scan_file(&big)
        .unwrap()
        .iter()
        .map(|f| f.line)
        .collect();
    assert_eq!(lines, expected, "{lines_per_window} lines a window");
}

#[test]
fn utf16_files_with_a_bom_are_read_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("# exported\r\nGITHUB_TOKEN=ghp_{}\r\n", tok(ALNUM, 36, 150));
    for (name, bom, encode) in [
        (
            "le.txt",
            [0xff, 0xfe],
            u16::to_le_bytes as fn(u16) -> [u8; 2],
        ),
        ("be.txt", [0xfe, 0xff], u16::to_be_bytes),
    ] {
        let mut bytes = bom.to_vec();
        bytes.extend(text.encode_utf16().flat_map(encode));
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let findings = SCANNER.scan_file(&path).unwrap();
        assert_eq!(findings.len(), 1, "{name}");
        assert_eq!(
            (findings[0].line, findings[0].rule.as_str()),
            (2, "github-pat")
        );
    }
}

/// `agentwatch scan PATHS` with at most `max_files`: the report and its text form.
fn scan_report(paths: &[&Path], max_files: usize) -> (Report, String) {
    let paths: Vec<_> = paths.iter().map(|p| p.to_path_buf()).collect();
    let report = scan_paths(&paths, &SCANNER, max_files).unwrap();
    let mut out = Vec::new();
    report.write(Format::Text, &mut out).unwrap();
    (report, String::from_utf8(out).unwrap())
}

fn github_token(seed: u64) -> String {
    format!("ghp_{}", tok(ALNUM, 36, seed))
}

#[test]
fn scan_command_reports_and_summarises() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let token = github_token(130);
    std::fs::write(
        root.join(".env"),
        format!("# local\nGITHUB_TOKEN={token}\n"),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("node_modules/pkg")).unwrap();
    std::fs::write(
        root.join("node_modules/pkg/.env"),
        format!("NPM_TOKEN=npm_{}\n", tok(ALNUM, 36, 131)),
    )
    .unwrap();
    std::fs::create_dir(root.join("src")).unwrap();
    std::fs::write(root.join("src/main.rs"), "let token = get_token();\n").unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("secret.env");
    std::fs::write(&target, format!("GITHUB_TOKEN={token}\n")).unwrap();
    std::os::unix::fs::symlink(&target, root.join("linked.env")).unwrap();

    let (report, text) = scan_report(&[root], 100);
    let tail = &token[token.len() - 2..];
    let shown = root.join(".env");
    assert_eq!(
        text,
        format!(
            "{}:2: github-pat (github) ghp_…{tail}\n1 credentials in 1 files\n",
            shown.display()
        )
    );
    assert!(report.complete());

    let (report, text) = scan_report(&[&root.join("src")], 100);
    assert_eq!(text, "no credentials found in 1 files scanned\n");
    assert!(report.findings.is_empty());

    // A file argument is scanned as named, even in a skipped directory.
    let (_, text) = scan_report(&[&root.join("node_modules/pkg/.env"), &target], 100);
    assert!(
        text.contains("node_modules/pkg/.env:1: npm-access-token"),
        "{text}"
    );
    assert!(text.contains("secret.env:1: github-pat"), "{text}");

    let missing = scan_paths(&[root.join("missing")], &SCANNER, 100);
    assert!(missing.is_err());
}

#[test]
fn scan_command_prints_unknown_provider() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("id_rsa"), private_key_block()).unwrap();
    let (_, text) = scan_report(&[dir.path()], 100);
    assert!(
        text.ends_with(
            "id_rsa:1: private-key (unknown provider) ----…--\n1 credentials in 1 files\n"
        ),
        "{text}"
    );
}

#[test]
fn a_scan_cut_by_max_files_is_incomplete_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a.txt", "b.txt"] {
        std::fs::write(dir.path().join(name), "nothing here\n").unwrap();
    }
    let (report, _) = scan_report(&[dir.path()], 1);
    assert_eq!(report.files_scanned, 1);
    assert!(!report.complete());
    assert!(
        report.incomplete[0].contains("--max-files 1"),
        "{:?}",
        report.incomplete
    );
    let (report, _) = scan_report(&[dir.path()], 2);
    assert!(report.complete(), "{:?}", report.incomplete);
}

#[test]
fn agentwatchignore_leaves_out_paths_by_glob() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("fixtures/deep")).unwrap();
    for path in ["fixtures/deep/token.txt", "test.env", "kept.env"] {
        std::fs::write(
            root.join(path),
            format!("GITHUB_TOKEN={}\n", github_token(150)),
        )
        .unwrap();
    }
    std::fs::write(
        root.join(workspace::IGNORE_FILE),
        "# test data\nfixtures/\n*.env\n!kept.env\n",
    )
    .unwrap();
    let (report, _) = scan_report(&[root], 100);
    let paths: Vec<&str> = report.findings.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, [root.join("kept.env").to_str().unwrap()]);
}

#[test]
fn a_baseline_accepts_the_findings_it_was_written_with_and_no_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("old.env"),
        format!("GITHUB_TOKEN={}\n", github_token(160)),
    )
    .unwrap();
    let (report, _) = scan_report(&[root], 100);
    let file = tempfile::NamedTempFile::new().unwrap();
    assert_eq!(baseline::write(file.path(), &report).unwrap(), 1);
    let written = std::fs::read_to_string(file.path()).unwrap();
    assert!(
        !written.contains(&github_token(160)[4..]),
        "no secret in {written}"
    );

    std::fs::write(
        root.join("new.env"),
        format!("GITHUB_TOKEN={}\n", github_token(161)),
    )
    .unwrap();
    let (mut report, _) = scan_report(&[root], 100);
    report.suppress(&Baseline::read(file.path()).unwrap());
    let paths: Vec<&str> = report.findings.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, [root.join("new.env").to_str().unwrap()]);
    assert_eq!(report.suppressed, 1);
    assert!(
        report.summary().ends_with("(1 more in the baseline)"),
        "{}",
        report.summary()
    );
}

#[test]
fn sarif_has_what_code_scanning_requires_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let token = github_token(170);
    std::fs::write(
        dir.path().join("my notes.md"),
        format!("x\nGITHUB_TOKEN={token}\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("id_rsa"), private_key_block()).unwrap();
    let (mut report, _) = scan_report(&[dir.path()], 100);
    report.incomplete.push("a reason".into());
    let mut out = Vec::new();
    report.write(Format::Sarif, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(!text.contains(&token[4..]), "{text}");
    let sarif: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    let run = &sarif["runs"][0];
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    let ids: Vec<&str> = rules.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["private-key", "github-pat"]);
    let results = run["results"].as_array().unwrap();
    let github = &results[1];
    assert_eq!(github["ruleId"], "github-pat");
    assert_eq!(github["ruleIndex"], 1);
    assert_eq!(github["level"], "error");
    assert!(
        github["message"]["text"]
            .as_str()
            .unwrap()
            .contains("ghp_…")
    );
    let location = &github["locations"][0]["physicalLocation"];
    assert_eq!(location["region"]["startLine"], 2);
    let uri = location["artifactLocation"]["uri"].as_str().unwrap();
    assert!(
        uri.starts_with("file:///") && uri.ends_with("/my%20notes.md"),
        "{uri}"
    );
    assert_eq!(run["invocations"][0]["executionSuccessful"], false);
}

#[test]
fn hostile_input_is_fast_and_does_not_panic() {
    let start = Instant::now();
    // Random bytes, with and without newlines.
    let mut x = 0x2545_F491_4F6C_DD1D_u64;
    let random: Vec<u8> = (0..256 << 10)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    SCANNER.scan_bytes(&random);
    // Near-misses repeated along one very long line, and many short lines.
    for unit in [
        "token=\"a1",
        "key: ",
        "ghp_",
        "-----BEGIN PRIVATE KEY-----",
        "\"type\": \"service_account\", \"private_key\": \"-----BEGIN",
        "hcloud ",
        "AKIA",
        "a",
    ] {
        let line = unit.repeat((1 << 20) / unit.len());
        SCANNER.scan_bytes(line.as_bytes());
        SCANNER.scan_bytes(line.replace(' ', "\n").as_bytes());
    }
    // A hit past the per-line window is out of reach for assignments only.
    let long = format!(
        "{} password = \"{}\"",
        "x".repeat(5000),
        tok(ALNUM, 20, 140)
    );
    assert_clean(&long);
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
}
