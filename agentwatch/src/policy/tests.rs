use super::*;

fn user(text: &str) -> Result<Policy, PolicyError> {
    Policy::from_str_with_path(text, Path::new("user.toml"))
}

fn ok(text: &str) -> Policy {
    user(text).unwrap_or_else(|e| panic!("unexpected diagnostics:\n{e}"))
}

/// (line, column, message) of every diagnostic, all pointing into user.toml.
fn problems(text: &str) -> Vec<(usize, usize, String)> {
    match user(text) {
        Err(PolicyError::Invalid(list)) => list
            .into_iter()
            .inspect(|d| assert_eq!(d.path, Path::new("user.toml")))
            .map(|d| (d.line, d.column, d.message))
            .collect(),
        other => panic!("expected diagnostics, got {other:?}"),
    }
}

fn ids<T>(items: &[T], id: fn(&T) -> &str) -> Vec<String> {
    items.iter().map(|i| id(i).to_string()).collect()
}

fn class<'p>(policy: &'p Policy, id: &str) -> &'p CredentialClass {
    &policy.classes[policy.class_index(id).expect(id)]
}

#[test]
fn builtin_parses_and_has_the_catalog_ids() {
    let policy = Policy::builtin();
    assert_eq!(policy.action, Action::Block);
    assert!(!policy.strict);
    assert_eq!(policy.ask_timeout, Duration::from_secs(120));
    let providers = ids(&policy.providers, |p| &p.id);
    for id in [
        "railway",
        "aws",
        "github",
        "gcp",
        "azure",
        "fly",
        "vercel",
        "netlify",
        "heroku",
        "render",
        "digitalocean",
        "cloudflare",
        "supabase",
        "neon",
        "hetzner",
        "linode",
        "vultr",
        "scaleway",
        "terraform",
        "pulumi",
        "planetscale",
        "anthropic",
        "openai",
        "gemini",
    ] {
        assert!(providers.contains(&id.to_string()), "provider {id}");
    }
    let classes = ids(&policy.classes, |c| &c.id);
    for id in [
        "railway",
        "aws",
        "github",
        "gcp",
        "ssh",
        "kube",
        "docker",
        "netrc",
        "git-credentials",
        "workspace",
        "found",
        "npm",
        "pypi",
        "cargo",
        "anthropic",
        "openai",
        "gemini",
    ] {
        assert!(classes.contains(&id.to_string()), "class {id}");
    }
    assert!(
        policy.classes.len() <= 40,
        "{} classes",
        policy.classes.len()
    );
    let agents = ids(&policy.agents, |a| &a.id);
    for id in [
        "claude-code",
        "codex",
        "gemini-cli",
        "cursor",
        "aider",
        "copilot-cli",
    ] {
        assert!(agents.contains(&id.to_string()), "agent {id}");
    }
    let github = &policy.providers[providers.iter().position(|p| p == "github").unwrap()];
    assert_eq!(github.hosts, ["api.github.com", "uploads.github.com"]);
    assert!(github.domains.is_empty());
    let railway = class(&policy, "railway");
    assert!(
        railway
            .files
            .contains(&"~/.railway/config.json".to_string())
    );
    assert_eq!(railway.env, ["RAILWAY_TOKEN", "RAILWAY_API_TOKEN"]);
    assert_eq!(railway.providers, Some(vec!["railway".to_string()]));
    assert_eq!(class(&policy, "kube").providers, None);
    assert_eq!(class(&policy, "workspace").providers, None);
    assert_eq!(class(&policy, "found").providers, None);
    assert!(class(&policy, "found").files.is_empty());
    let netrc = class(&policy, "netrc").providers.clone();
    assert_eq!(netrc, Some(vec!["heroku".into(), "github".into()]));
    let claude = &policy.agents[0];
    assert_eq!(claude.id, "claude-code");
    assert_eq!(
        claude.env[0],
        EnvMarker::Equals("CLAUDECODE".into(), "1".into())
    );
    assert!(policy.allow.is_empty());
}

#[test]
fn builtin_infrastructure_hosts() {
    let policy = Policy::builtin();
    let of = |host| policy.provider_of_host(host).map(|p| p.id.as_str());
    assert_eq!(of("backboard.railway.app"), Some("railway"));
    assert_eq!(of("Backboard.Railway.App."), Some("railway"));
    assert_eq!(of("myapp.up.railway.app"), None);
    assert_eq!(of("railway.app"), None);
    assert_eq!(of("s3.us-east-1.amazonaws.com"), Some("aws"));
    assert_eq!(of("bucket.s3.amazonaws.com"), Some("aws"));
    assert_eq!(of("EC2.EU-WEST-1.AMAZONAWS.COM."), Some("aws"));
    assert_eq!(of("bedrock.us-east-1.amazonaws.com"), Some("aws"));
    assert_eq!(of("bedrock-runtime.us-east-1.amazonaws.com"), None);
    assert_eq!(of("storage.googleapis.com"), Some("gcp"));
    assert_eq!(of("generativelanguage.googleapis.com"), None);
    assert_eq!(of("api.github.com"), Some("github"));
    assert_eq!(of("github.com"), None);
    assert_eq!(of("raw.githubusercontent.com"), None);
    assert_eq!(of("objects.githubusercontent.com"), None);
    assert_eq!(of("api.anthropic.com"), None);
    assert_eq!(of("registry-1.docker.io"), None);
    assert_eq!(of("console.neon.tech"), Some("neon"));
}

fn provider(id: &str, hosts: &[&str], domains: &[&str], exclude: &[&str]) -> Provider {
    let own = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
    Provider {
        id: id.into(),
        name: id.into(),
        hosts: own(hosts),
        domains: own(domains),
        exclude_domains: own(exclude),
        graphql_paths: Vec::new(),
        graphql: Vec::new(),
        rest: Vec::new(),
        actions: Vec::new(),
    }
}

#[test]
fn provider_of_host_prefers_longest_suffix_and_honours_exclusions() {
    let mut policy = Policy::builtin();
    policy.providers = vec![
        provider("a", &[], &["example.com"], &["static.example.com"]),
        provider("b", &[], &["api.example.com"], &[]),
        provider("c", &["cdn.static.example.com"], &[], &[]),
    ];
    let of = |host| policy.provider_of_host(host).map(|p| p.id.as_str());
    assert_eq!(of("example.com"), Some("a"));
    assert_eq!(of("WWW.Example.COM."), Some("a"));
    assert_eq!(of("api.example.com"), Some("b"));
    assert_eq!(of("v1.api.example.com"), Some("b"));
    assert_eq!(of("static.example.com"), None);
    assert_eq!(of("img.static.example.com"), None);
    assert_eq!(of("cdn.static.example.com"), Some("c"));
    assert_eq!(of("notexample.com"), None);
    assert_eq!(of(""), None);
}

#[test]
fn class_counts_against_its_providers() {
    let mut policy = Policy::builtin();
    let railway = policy.class_index("railway").unwrap();
    let workspace = policy.class_index("workspace").unwrap();
    let netrc = policy.class_index("netrc").unwrap();
    assert!(policy.class_counts_against(railway, "railway"));
    assert!(!policy.class_counts_against(railway, "aws"));
    assert!(policy.class_counts_against(workspace, "aws"));
    assert!(policy.class_counts_against(workspace, "railway"));
    assert!(policy.class_counts_against(netrc, "heroku"));
    assert!(!policy.class_counts_against(netrc, "aws"));
    assert!(!policy.class_counts_against(policy.classes.len(), "aws"));
    policy.strict = true;
    assert!(policy.class_counts_against(railway, "aws"));
    assert!(policy.class_counts_against(policy.class_index("ssh").unwrap(), "github"));
    assert!(!policy.class_counts_against(policy.classes.len(), "aws"));
}

#[test]
fn ssh_and_registry_tokens_count_against_no_infrastructure() {
    let policy = Policy::builtin();
    for id in ["ssh", "docker", "npm", "pypi", "cargo"] {
        let class = policy.class_index(id).unwrap();
        assert_eq!(policy.classes[class].providers, Some(vec![]), "{id}");
        for provider in &policy.providers {
            assert!(!policy.class_counts_against(class, &provider.id), "{id}");
        }
    }
    let ssh = class(&policy, "ssh");
    assert_eq!(ssh.files, ["~/.ssh/id_*"]);
    assert_eq!(ssh.exclude_files, ["~/.ssh/*.pub"]);
}

#[test]
fn class_of_provider_is_the_providers_own_class() {
    let policy = Policy::builtin();
    assert_eq!(policy.class_of_provider("aws"), policy.class_index("aws"));
    assert!(policy.class_of_provider("aws").is_some());
    assert_eq!(policy.class_of_provider("kubernetes"), None);
    assert_eq!(policy.class_of_provider("nosuch"), None);
}

#[test]
fn user_file_overrides_fields_and_adds_entries() {
    let builtin = Policy::builtin();
    let policy = ok(r#"
action = "ask"
strict = true
ask_timeout_secs = 30

[providers.railway]
hosts = ["Backboard.Example.COM."]

[credentials.railway]
files = ["~/.other/railway.json"]

[credentials.workspace]
workspace_names = [".secrets"]

[providers.acme]
name = "Acme"
domains = ["acme.io"]
credential_files = ["~/.acme/token"]
credential_env = ["ACME_TOKEN"]

[credentials.vault]
files = ["/etc/vault/*.hcl"]
providers = ["acme", "aws"]

[agents.claude-code]
argv = ["claude-wrapper"]

[agents.mybot]
executables = ["mybot"]
env = ["MYBOT"]
"#);
    assert_eq!(policy.action, Action::Ask);
    assert!(policy.strict);
    assert_eq!(policy.ask_timeout, Duration::from_secs(30));

    let railway = &policy.providers[0];
    assert_eq!(railway.id, "railway");
    assert_eq!(railway.name, "Railway");
    assert_eq!(railway.hosts, ["backboard.example.com"]);
    let class_railway = class(&policy, "railway");
    assert_eq!(class_railway.files[0], "~/.other/railway.json");
    assert!(
        class_railway
            .files
            .contains(&"~/.railway/config.json".into())
    );
    assert_eq!(class_railway.providers, Some(vec!["railway".into()]));

    let workspace = class(&policy, "workspace");
    assert_eq!(workspace.workspace_names, [".secrets"]);
    assert_eq!(workspace.name, "Workspace secrets");
    assert!(!workspace.exclude_files.is_empty());

    // The catalog's bits stay put; the user's classes come after them.
    let n = builtin.classes.len();
    assert_eq!(
        ids(&policy.classes[..n], |c| &c.id),
        ids(&builtin.classes, |c| &c.id)
    );
    assert_eq!(policy.class_index("acme"), Some(n));
    assert_eq!(policy.class_index("vault"), Some(n + 1));
    let acme = class(&policy, "acme");
    assert_eq!(acme.name, "Acme");
    assert_eq!(acme.providers, Some(vec!["acme".into()]));
    assert_eq!(acme.files, ["~/.acme/token"]);
    assert_eq!(acme.env, ["ACME_TOKEN"]);
    let vault = class(&policy, "vault");
    assert_eq!(vault.name, "vault");
    assert_eq!(vault.providers, Some(vec!["acme".into(), "aws".into()]));
    assert_eq!(policy.provider_of_host("x.acme.io").unwrap().id, "acme");

    let claude = policy
        .agents
        .iter()
        .find(|a| a.id == "claude-code")
        .unwrap();
    assert_eq!(claude.executables, ["claude", "claude.exe"]);
    assert_eq!(claude.argv, ["claude-wrapper"]);
    assert_eq!(
        claude.directories,
        [DirectoryPair {
            grandparent: "claude".into(),
            parent: "versions".into()
        }]
    );
    let mybot = policy.agents.last().unwrap();
    assert_eq!(mybot.id, "mybot");
    assert_eq!(mybot.name, "mybot");
    assert_eq!(mybot.env, [EnvMarker::Present("MYBOT".into())]);
}

#[test]
fn enabled_false_removes_entries() {
    let policy = ok(r#"
[providers.heroku]
enabled = false

[credentials.ssh]
enabled = false

[agents.aider]
enabled = false

[[allow]]
host = "api.github.com"
credential = "ssh"
"#);
    assert!(policy.providers.iter().all(|p| p.id != "heroku"));
    assert_eq!(policy.class_index("heroku"), None);
    assert_eq!(policy.class_index("ssh"), None);
    assert!(policy.agents.iter().all(|a| a.id != "aider"));
    assert_eq!(
        class(&policy, "netrc").providers,
        Some(vec!["github".into()])
    );
    // A rule for a class that no longer exists goes with it.
    assert!(policy.allow.is_empty());
    assert!(policy.class_index("railway").is_some());
}

#[test]
fn allow_rules() {
    let policy = ok(r#"
[[allow]]
host = "api.github.com"
credential = "github"
comment = "gh CLI pushes"

[[allow]]
host = "*.Example.com."

[[allow]]
host = ".corp.internal"
"#);
    let [a, b, c] = &policy.allow[..] else {
        panic!("{:?}", policy.allow)
    };
    assert_eq!(a.host, HostPattern::Exact("api.github.com".into()));
    assert_eq!(a.credential.as_deref(), Some("github"));
    assert_eq!(a.comment.as_deref(), Some("gh CLI pushes"));
    assert_eq!(b.host, HostPattern::Suffix("example.com".into()));
    assert_eq!(b.credential, None);
    assert_eq!(b.comment, None);
    assert_eq!(c.host, HostPattern::Suffix("corp.internal".into()));
    assert!(a.host.matches("API.GitHub.com."));
    assert!(!a.host.matches("uploads.github.com"));
    assert!(b.host.matches("example.com"));
    assert!(b.host.matches("a.b.example.com"));
    assert!(!b.host.matches("badexample.com"));
}

#[test]
fn action_names() {
    for (name, action) in [
        ("observe", Action::Observe),
        ("alert", Action::Alert),
        ("block", Action::Block),
        ("kill", Action::Kill),
        ("ask", Action::Ask),
    ] {
        assert_eq!(name.parse::<Action>(), Ok(action));
        assert_eq!(action.to_string(), name);
    }
    let err = "Block".parse::<Action>().unwrap_err().to_string();
    assert_eq!(
        err,
        "unknown action \"Block\" (expected one of observe, alert, block, kill, ask)"
    );
    assert_eq!(Action::default(), Action::Block);
}

#[test]
fn every_problem_is_reported_at_its_place() {
    let text = r#"action = "explode"
strict = "yes"
ask_timeout_secs = 0
colour = "blue"

[providers.acme]
hosts = ["api.acme.io", "", "bad host.io"]
domains = "acme.io"
credential_files = ["relative/path", "~/.acme/[creds"]
credential_env = [""]
flavour = 1

[credentials.acme-extra]
providers = ["acme", "nosuch"]
workspace_names = ["a/b"]

[[allow]]
host = "*.Example.com"
credential = "nosuch-class"

[agents.bot]
env = ["", "=1", "BOT=1"]
executables = [1]
directories = ["versions", "a/b/c", "claude/versions"]
"#;
    let found = problems(text);
    let places: Vec<_> = found.iter().map(|(l, c, _)| (*l, *c)).collect();
    assert_eq!(
        places,
        [
            (1, 10),
            (2, 10),
            (3, 20),
            (4, 1),
            (7, 25),
            (7, 29),
            (8, 11),
            (9, 21),
            (9, 38),
            (10, 19),
            (11, 1),
            (14, 22),
            (15, 20),
            (19, 14),
            (22, 8),
            (22, 12),
            (23, 16),
            (24, 16),
            (24, 28),
        ],
        "{found:#?}"
    );
    let expect = [
        "unknown action \"explode\"",
        "\"strict\" must be true or false",
        "\"ask_timeout_secs\" must be between 1 and 86400",
        "unknown key \"colour\" in the policy",
        "empty hostname",
        "invalid hostname \"bad host.io\"",
        "\"domains\" must be an array of strings",
        "must start with \"~/\" or \"/\"",
        "invalid glob pattern \"~/.acme/[creds\"",
        "empty environment variable name",
        "unknown key \"flavour\" in a provider",
        "unknown provider \"nosuch\"",
        "must be a file name",
        "unknown credential class \"nosuch-class\"",
        "empty environment marker",
        "empty variable name",
        "\"executables\" must contain only strings",
        "directories entry \"versions\" must be two directory names",
        "directories entry \"a/b/c\" must be two directory names",
    ];
    for ((_, _, message), want) in found.iter().zip(expect) {
        assert!(message.contains(want), "{message:?} lacks {want:?}");
    }
}

#[test]
fn more_problems_at_their_places() {
    let at = |text: &str| {
        let found = problems(text);
        (found[0].0, found[0].1)
    };
    assert_eq!(at("ask_timeout_secs = 86401\n"), (1, 20));
    assert_eq!(at("ask_timeout_secs = -5\n"), (1, 20));
    assert_eq!(at("\n  action = 3\n"), (2, 12));
    let found = problems("\n\nproviders = 3\n[credentials.x]\nenabled = \"no\"\n");
    let places: Vec<_> = found.iter().map(|(l, c, m)| (*l, *c, m.as_str())).collect();
    assert_eq!(
        places,
        [
            (3, 13, "\"providers\" must be a table"),
            (5, 11, "\"enabled\" must be true or false"),
        ]
    );
    let found = problems("[[allow]]\ncomment = \"no host\"\n[[allow]]\nhost = \"a..b\"\n");
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!((found[0].0, found[0].1), (1, 1), "{found:?}");
    assert!(found[0].2.contains("without \"host\""));
    assert_eq!((found[1].0, found[1].1), (4, 8), "{found:?}");
    let long = format!("[providers.x]\nhosts = [\"{}.com\"]\n", "a".repeat(64));
    assert_eq!(at(&long), (2, 10));
    assert_eq!(at("[credentials.x]\nfiles = [\"~/a\", \"a\"]\n"), (2, 17));
    assert_eq!(
        at("[credentials.x]\nexclude_files = [\"/a/***\"]\n"),
        (2, 18)
    );
    assert_eq!(at("[credentials.x]\nproviders = [\"*\", 3]\n"), (2, 19));
    assert_eq!(at("[providers.\"a b\"]\n"), (1, 12));
    assert_eq!(at("[agents.x]\nargv = [\"\"]\n"), (2, 9));
    assert_eq!(at("[agents.x]\nexecutables = [\"bin/x\"]\n"), (2, 16));
    assert_eq!(at("[[allow]]\nhost = \"*.\"\n"), (2, 8));
    // Syntax errors come from the TOML parser, also with their places.
    let found = problems("strict = true\nhosts = [\n");
    assert_eq!(found[0].0, 2, "{found:?}");
    let found = problems("[providers.railway]\n[providers.railway]\n");
    assert_eq!(found[0].0, 2, "{found:?}");
}

#[test]
fn at_most_63_classes() {
    let builtin = Policy::builtin().classes.len();
    let text: String = (0..MAX_CLASSES)
        .map(|i| format!("[credentials.c{i}]\nfiles = [\"~/c{i}\"]\n"))
        .collect();
    let found = problems(&text);
    // The 64th class overall is the user's (64 - builtin)th.
    let first_over = MAX_CLASSES - builtin;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].0, found[0].1), (2 * first_over + 1, 14));
    assert!(found[0].2.contains("too many credential classes"));
    // Exactly 63 is fine.
    let text: String = (0..MAX_CLASSES - builtin)
        .map(|i| format!("[credentials.c{i}]\n"))
        .collect();
    assert_eq!(ok(&text).classes.len(), MAX_CLASSES);
}

#[test]
fn env_markers_and_normalized_hosts() {
    let policy = ok(r#"
[providers.x]
hosts = ["API.X.IO."]
exclude_domains = ["Static.X.IO"]
[agents.x]
env = ["A=1", "B", "C=", "D=x=y"]
"#);
    let x = policy.providers.last().unwrap();
    assert_eq!(x.hosts, ["api.x.io"]);
    assert_eq!(x.exclude_domains, ["static.x.io"]);
    let agent = policy.agents.last().unwrap();
    assert_eq!(
        agent.env,
        [
            EnvMarker::Equals("A".into(), "1".into()),
            EnvMarker::Present("B".into()),
            EnvMarker::Equals("C".into(), String::new()),
            EnvMarker::Equals("D".into(), "x=y".into()),
        ]
    );
}

#[test]
fn load_and_check_files() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "action = \"alert\"\n").unwrap();
    assert_eq!(Policy::load(&good).unwrap().action, Action::Alert);

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "action = \"nope\"\n").unwrap();
    let err = Policy::load(&bad).unwrap_err();
    let PolicyError::Invalid(list) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(list[0].path, bad);
    assert!(
        err.to_string()
            .starts_with(&format!("{}:1:10: unknown action", bad.display())),
        "{err}"
    );

    let missing = dir.path().join("missing.toml");
    assert!(matches!(
        Policy::load(&missing),
        Err(PolicyError::Read { .. })
    ));
}

#[test]
fn drop_ins_beside_the_config_layer_over_it_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("policy.toml");
    std::fs::write(&config, "action = \"alert\"\nask_timeout_secs = 5\n").unwrap();
    let dropins = dir.path().join("policy.d");
    std::fs::create_dir(&dropins).unwrap();
    std::fs::write(dropins.join("20-late.toml"), "action = \"kill\"\n").unwrap();
    std::fs::write(dropins.join("10-early.toml"), "action = \"block\"\n").unwrap();
    std::fs::write(dropins.join("README"), "not a policy").unwrap();
    let policy = Policy::load_config(Some(&config)).unwrap();
    assert_eq!(policy.action, Action::Kill);
    assert_eq!(policy.ask_timeout, Duration::from_secs(5));

    // A bad drop-in fails the whole configuration, naming its file.
    let bad = dropins.join("30-bad.toml");
    std::fs::write(&bad, "action = \"nope\"\n").unwrap();
    let err = Policy::load_config(Some(&config)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{}:1:10:", bad.display())),
        "{err}"
    );

    // A given file must exist.
    let missing = dir.path().join("missing.toml");
    assert!(matches!(
        Policy::load_config(Some(&missing)),
        Err(PolicyError::Read { .. })
    ));
}

#[test]
fn operations_and_commands_merge_entry_by_entry() {
    let builtin = Policy::builtin();
    assert_eq!(builtin.changes, Action::Alert);
    assert_eq!(builtin.unknown_operation, Action::Block);
    let policy = ok(r#"
changes = "block"
unknown_operation = "ask"

[providers.railway.graphql]
volumeDelete = "reads"
myThingDelete = "destructive"

[commands.terraform]
enabled = false

[commands.kubectl.operations]
"rollout restart" = "changes"

[commands.mytool]
executables = ["mytool"]
provider = "railway"
default = "reads"
[commands.mytool.operations]
"nuke" = "destructive"
"#);
    assert_eq!(policy.changes, Action::Block);
    assert_eq!(policy.unknown_operation, Action::Ask);
    let railway = policy.providers.iter().find(|p| p.id == "railway").unwrap();
    let class_of = |name: &str| {
        railway
            .graphql
            .iter()
            .find(|r| r.pattern.as_str() == name)
            .map(|r| r.class)
    };
    assert_eq!(class_of("volumeDelete"), Some(OperationClass::Reads));
    assert_eq!(class_of("myThingDelete"), Some(OperationClass::Destructive));
    assert_eq!(
        class_of("serviceDelete"),
        Some(OperationClass::Destructive),
        "kept"
    );
    assert!(
        railway.hosts.contains(&"backboard.railway.app".to_string()),
        "kept"
    );
    let tool = |exe: &str| {
        policy
            .commands
            .iter()
            .find(|c| c.executables.iter().any(|e| e == exe))
    };
    assert!(tool("terraform").is_none());
    let kubectl = tool("kubectl").unwrap();
    assert!(
        kubectl
            .operations
            .iter()
            .any(|r| r.pattern.as_str() == "delete"),
        "kept"
    );
    assert!(
        kubectl
            .operations
            .iter()
            .any(|r| r.pattern.as_str() == "rollout restart")
    );
    let mytool = tool("mytool").unwrap();
    assert_eq!(mytool.default, OperationClass::Reads);
    assert_eq!(mytool.provider.as_deref(), Some("railway"));
}

#[test]
fn bad_operation_entries_name_their_place() {
    let found = problems(
        r#"
[providers.railway.graphql]
volumeDelete = "deletes"
"vol ume" = "destructive"
other = "unknown"

[providers.vercel.rest]
"delete /v9/x" = "destructive"
"DELETE v9" = "destructive"

[commands.mytool]
provider = "nowhere"
value_flags = ["n"]
http_client = "httpie"
[commands.mytool.operations]
"" = "reads"
"#,
    );
    let messages: Vec<String> = found
        .iter()
        .map(|(l, c, m)| format!("{l}:{c}: {m}"))
        .collect();
    let has = |line: usize, text: &str| {
        assert!(
            found.iter().any(|(l, _, m)| *l == line && m.contains(text)),
            "line {line} {text:?} in {messages:#?}"
        )
    };
    has(3, "unknown operation class \"deletes\"");
    has(4, "invalid operation name \"vol ume\"");
    has(5, "unknown operation class \"unknown\"");
    has(8, "the method \"delete\" must be upper case");
    has(9, "the path must start with '/'");
    has(12, "unknown provider \"nowhere\"");
    has(13, "flag \"n\" must start with '-'");
    has(14, "unknown HTTP client \"httpie\"");
    has(16, "empty command pattern");
}
