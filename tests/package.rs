//! The package as an operator meets it: shell completions and man pages
//! from the binary, and the .deb (`AGENTWATCH_DEB`: `cargo xtask test`
//! packages the debug build, `cargo xtask dist --check` the release one)
//! installed with dpkg on a fresh root and started as its unit says.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use agentwatch_tests::{NetNs, NotifySocket, agentwatch, output_with_timeout, require_root};

/// The subcommands `agentwatch --help` lists, clap's `help` aside.
fn subcommands() -> Vec<String> {
    let help = stdout(Command::new(agentwatch()).arg("--help"));
    let names: Vec<String> = help
        .lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect();
    assert!(names.iter().any(|name| name == "daemon"), "{help}");
    names
}

/// `cmd`'s stdout, failing the test (with its stderr) if it fails.
fn stdout(cmd: &mut Command) -> String {
    let output = output_with_timeout(cmd);
    assert_success(cmd, &output);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn assert_success(cmd: &Command, output: &Output) {
    assert!(
        output.status.success(),
        "{cmd:?} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn completions_offer_every_subcommand_in_bash_zsh_and_fish() {
    let subcommands = subcommands();
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout(Command::new(agentwatch()).args(["completions", shell]));
        for name in &subcommands {
            assert!(
                script.contains(name.as_str()),
                "{shell}'s completion lacks {name}"
            );
        }
    }
    // What a bash user gets once the script is sourced.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("agentwatch.bash");
    std::fs::write(
        &script,
        stdout(Command::new(agentwatch()).args(["completions", "bash"])),
    )
    .unwrap();
    let registered = stdout(Command::new("bash").arg("-c").arg(format!(
        "source {} && complete -p agentwatch",
        script.display()
    )));
    assert!(registered.contains("agentwatch"), "{registered}");
}

#[test]
fn every_command_has_a_man_page() {
    let dir = tempfile::tempdir().unwrap();
    stdout(Command::new(agentwatch()).arg("man").arg(dir.path()));
    let pages = [
        "agentwatch".to_string(),
        "agentwatch-policy-check".to_string(),
    ]
    .into_iter()
    .chain(
        subcommands()
            .into_iter()
            .map(|name| format!("agentwatch-{name}")),
    );
    for page in pages {
        let path = dir.path().join(format!("{page}.1"));
        let roff = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        assert!(roff.contains(&format!(".TH {page} 1")), "{roff}");
    }
    assert!(
        !dir.path().join("agentwatch-man.1").exists(),
        "the hidden command that writes the pages has none"
    );
}

/// Every file the package installs that an operator relies on, and its mode.
const INSTALLED: &[(&str, &str)] = &[
    ("./usr/bin/agentwatch", "-rwxr-xr-x"),
    ("./usr/lib/systemd/system/agentwatch.service", "-rw-r--r--"),
    ("./etc/agentwatch/policy.toml", "-rw-r--r--"),
    ("./usr/share/doc/agentwatch/README.md", "-rw-r--r--"),
    (
        "./usr/share/doc/agentwatch/default-policy.toml",
        "-rw-r--r--",
    ),
    (
        "./usr/share/bash-completion/completions/agentwatch",
        "-rw-r--r--",
    ),
    (
        "./usr/share/zsh/vendor-completions/_agentwatch",
        "-rw-r--r--",
    ),
    (
        "./usr/share/fish/vendor_completions.d/agentwatch.fish",
        "-rw-r--r--",
    ),
    ("./usr/share/man/man1/agentwatch.1.gz", "-rw-r--r--"),
    ("./usr/share/man/man1/agentwatch-daemon.1.gz", "-rw-r--r--"),
];

fn package() -> PathBuf {
    let path = std::env::var_os("AGENTWATCH_DEB")
        .map(PathBuf::from)
        .expect("AGENTWATCH_DEB: the .deb to check (`cargo xtask dist` builds one)");
    assert!(path.is_file(), "{} does not exist", path.display());
    path
}

#[test]
fn the_package_holds_the_binary_unit_policy_completions_and_man_pages() {
    let deb = package();
    let contents = stdout(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    for (path, mode) in INSTALLED {
        assert!(
            contents.lines().any(|line| line.starts_with(mode)
                && line.contains(" 0/0 ")
                && line.ends_with(path)),
            "no {path} ({mode}, root's) in:\n{contents}"
        );
    }
    for name in subcommands() {
        let page = format!("./usr/share/man/man1/agentwatch-{name}.1.gz");
        assert!(contents.contains(&page), "no {page}");
    }
    let fields = stdout(Command::new("dpkg-deb").arg("--field").arg(&deb).args([
        "Package",
        "Depends",
        "Description",
    ]));
    assert!(fields.contains("Package: agentwatch"), "{fields}");
    assert!(fields.contains("Depends: libc6"), "{fields}");
    // An operator's edits to the policy survive upgrades.
    let conffiles = stdout(
        Command::new("dpkg-deb")
            .arg("--info")
            .arg(&deb)
            .arg("conffiles"),
    );
    assert_eq!(conffiles.trim(), "/etc/agentwatch/policy.toml");
}

/// A fresh machine: this one's root file system under a copy-on-write
/// overlay (in a private mount namespace per command), so what dpkg and the
/// daemon write lands in `upper` only, and nothing of agentwatch is there
/// before the package is installed.
struct FreshRoot {
    dir: tempfile::TempDir,
}

/// Mounts the overlay and the kernel's file systems, binds the shared
/// directory in (a socket bound outside is not reachable through the
/// overlay), and runs the command chrooted.
const ENTER_FRESH_ROOT: &str = r#"set -e
root=$1 shared=$2; shift 2
mount -t overlay overlay -o "lowerdir=/,upperdir=$root/upper,workdir=$root/work" "$root/merged"
for fs in /proc /sys /dev; do mount --rbind "$fs" "$root/merged$fs"; done
mount --bind "$shared" "$root/merged$shared"
exec chroot "$root/merged" "$@"
"#;

impl FreshRoot {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for layer in ["upper", "work", "merged"] {
            std::fs::create_dir(dir.path().join(layer)).unwrap();
        }
        Self { dir }
    }

    /// Where `path` (absolute in the fresh root) is written, seen from outside.
    fn written(&self, path: &str) -> PathBuf {
        self.dir
            .path()
            .join("upper")
            .join(path.trim_start_matches('/'))
    }

    /// `argv` run in the fresh root (after `prefix`, `ip netns exec NS`
    /// say), with `shared` bound in at the same path.
    fn command(&self, prefix: &[&str], shared: &Path, argv: &[&str]) -> Command {
        let mut words = prefix
            .iter()
            .chain(&["unshare", "--mount", "--propagation", "private"]);
        let mut cmd = Command::new(words.next().unwrap());
        cmd.args(words)
            .args(["sh", "-c", ENTER_FRESH_ROOT, "sh"])
            .arg(self.dir.path())
            .arg(shared)
            .args(argv);
        cmd
    }
}

/// The values of `key=` in a unit file, in order.
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

/// What systemd creates for the unit before starting it: the runtime,
/// state and logs directories its `*Directory=` lines name, with their modes.
fn create_unit_directories(fresh: &FreshRoot, unit: &str) {
    for (key, parent) in [
        ("RuntimeDirectory", "/run"),
        ("StateDirectory", "/var/lib"),
        ("LogsDirectory", "/var/log"),
    ] {
        let mode = unit_values(unit, &format!("{key}Mode"))
            .first()
            .map_or(0o755, |mode| u32::from_str_radix(mode, 8).unwrap());
        for name in unit_values(unit, key) {
            let dir = fresh.written(&format!("{parent}/{name}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }
}

/// A command in the namespaces (mounts, root, network) of process `pid`.
fn inside(pid: u32, argv: &[&str]) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.args([
        "--target",
        &pid.to_string(),
        "--mount",
        "--root",
        "--net",
        "--wd=/",
    ])
    .args(argv);
    cmd
}

#[test]
fn the_package_installed_on_a_fresh_machine_runs_the_daemon_its_unit_starts() {
    require_root();
    let deb = package();
    let fresh = FreshRoot::new();
    // The package inside the fresh root, at /agentwatch.deb.
    std::fs::copy(&deb, fresh.written("/agentwatch.deb")).unwrap();
    let notify = NotifySocket::new();
    let shared = notify.path.parent().unwrap();
    let in_fresh = |argv: &[&str]| fresh.command(&[], shared, argv);

    let before = output_with_timeout(&mut in_fresh(&["dpkg-query", "-W", "agentwatch"]));
    assert!(!before.status.success(), "agentwatch is already installed");
    stdout(&mut in_fresh(&["dpkg", "-i", "/agentwatch.deb"]));
    let status = stdout(&mut in_fresh(&[
        "dpkg-query",
        "-W",
        "-f",
        "${Status} ${Conffiles}",
        "agentwatch",
    ]));
    assert!(status.starts_with("install ok installed"), "{status}");
    assert!(status.contains("/etc/agentwatch/policy.toml"), "{status}");
    assert!(
        !fresh
            .written("/etc/systemd/system/multi-user.target.wants/agentwatch.service")
            .exists(),
        "installing must not enable enforcement: the operator does"
    );

    let unit_path = "/usr/lib/systemd/system/agentwatch.service";
    let unit = std::fs::read_to_string(fresh.written(unit_path)).unwrap();
    if Path::new("/usr/bin/systemd-analyze").exists() {
        stdout(&mut in_fresh(&["systemd-analyze", "verify", unit_path]));
    }
    // ExecStartPre checks the installed policy.
    let pre = unit_values(&unit, "ExecStartPre");
    let checked = stdout(&mut in_fresh(
        &pre[0].split_whitespace().collect::<Vec<_>>(),
    ));
    assert!(
        checked.contains("/etc/agentwatch/policy.toml: ok"),
        "{checked}"
    );

    // ExecStart as systemd runs it: its directories made, NOTIFY_SOCKET and
    // the watchdog set; in a network namespace of its own, so its metrics
    // port is free.
    create_unit_directories(&fresh, &unit);
    let start = unit_values(&unit, "ExecStart");
    let watchdog_secs: u64 = unit_values(&unit, "WatchdogSec")[0].parse().unwrap();
    let netns = NetNs::new();
    let stderr = tempfile::NamedTempFile::new().unwrap();
    let mut daemon = fresh
        .command(
            &netns.prefix(),
            shared,
            &start[0].split_whitespace().collect::<Vec<_>>(),
        )
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", (watchdog_secs * 1_000_000).to_string())
        .stdout(Stdio::null())
        .stderr(stderr.reopen().unwrap())
        .spawn()
        .unwrap();
    // Every wrapper execs: this is the daemon's pid.
    let pid = daemon.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !notify.received("READY=1") {
        let exited = daemon.try_wait().unwrap();
        let log = std::fs::read_to_string(stderr.path()).unwrap_or_default();
        assert!(exited.is_none(), "the daemon exited ({exited:?}): {log}");
        assert!(Instant::now() < deadline, "no READY=1: {log}");
    }

    // Its clients reach it on the unit's socket, its metrics on the default port.
    let pending = stdout(&mut inside(pid, &["agentwatch", "pending"]));
    assert_eq!(pending.trim(), "no pending requests");
    let health = stdout(&mut inside(
        pid,
        &["curl", "-s", "-f", "http://127.0.0.1:9464/healthz"],
    ));
    assert!(!health.is_empty());
    let metrics = stdout(&mut inside(
        pid,
        &["curl", "-s", "-f", "http://127.0.0.1:9464/metrics"],
    ));
    assert!(metrics.contains("agentwatch_build_info"), "{metrics}");
    assert!(
        fresh.written("/var/log/agentwatch/events.jsonl").exists(),
        "the event log in the unit's LogsDirectory"
    );

    // SAFETY: kill(2) on the daemon we started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = daemon.wait().unwrap();
    assert!(
        status.success(),
        "{status}: {}",
        std::fs::read_to_string(stderr.path()).unwrap_or_default()
    );
    notify.wait_for("STOPPING=1");
}
