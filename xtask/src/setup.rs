//! Idempotent set-up of a fresh machine: the nightly's rust-src (to build
//! `core` for the BPF target), bpf-linker built against the nightly's own
//! LLVM (as ../shared/KERNEL.md records), cargo-deb (which packages
//! agentwatch), the Debian packages tests use, and the real agents' npm
//! packages the daemon tests start.

use std::{
    env,
    ffi::OsString,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{as_root, run};

const BPF_LINKER_VERSION: &str = "0.13.0";
const CARGO_DEB_VERSION: &str = "3.8.0";

/// Debian packages the integration tests drive.
const TEST_PACKAGES: &[&str] = &[
    "iproute2",
    "dnsmasq-base",
    "procps",
    "python3",
    // The server the daemon tests scrape with, and promtool, which checks
    // `/metrics` against the exposition format and its conventions.
    "prometheus",
    "tmux",
    // A user's session bus and the stand-in notification server on it
    // (Debian's python3 with its dbus and GLib modules).
    "dbus-daemon",
    "python3-dbus",
    "python3-gi",
    // The HTTP/2 API the operation tests call with curl.
    "python3-h2",
    // The Go client the operation tests build (crypto/tls, no libssl).
    "golang-go",
];
/// Extra packages for the VM lane (`cargo xtask test` runs its quick lane):
/// qemu, the initramfs's busybox, depmod for the kernel packages' modules.
const VM_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "kmod",
    "xz-utils",
    "zstd",
];
/// Extra packages for `cargo xtask bench` (the peers it compares against).
const BENCH_PACKAGES: &[&str] = &["bpftrace", "auditd"];

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Packages {
    Test,
    Vm,
    Bench,
}

/// Where bpf-linker and the libLLVM links it runs against live. It must
/// outlast the build: the binary's RUNPATH points into it.
pub fn toolchain_dir() -> PathBuf {
    if let Some(dir) = env::var_os("AGENTWATCH_TOOLCHAIN_DIR") {
        return PathBuf::from(dir);
    }
    let home = env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".local/share/agentwatch/toolchain")
}

/// PATH with the toolchain's bin directory first.
pub fn path_with_toolchain() -> OsString {
    let current = env::var_os("PATH").unwrap_or_default();
    env::join_paths(std::iter::once(toolchain_dir().join("bin")).chain(env::split_paths(&current)))
        .unwrap_or(current)
}

pub fn setup(packages: Packages) -> Result<()> {
    nightly_with_rust_src()?;
    bpf_linker()?;
    cargo_deb()?;
    agent_packages()?;
    let mut wanted: Vec<&str> = TEST_PACKAGES.to_vec();
    match packages {
        Packages::Test => {}
        Packages::Vm => wanted.extend_from_slice(VM_PACKAGES),
        Packages::Bench => wanted.extend_from_slice(BENCH_PACKAGES),
    }
    debian_packages(&wanted)
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn nightly_with_rust_src() -> Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))?;
    if !toolchains.lines().any(|line| line.starts_with("nightly")) {
        eprintln!("setup: installing the nightly toolchain");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if !installed.lines().any(|line| line.starts_with("rust-src")) {
        eprintln!("setup: adding rust-src to the nightly toolchain");
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    Ok(())
}

/// True when the installed bpf-linker runs (its libLLVM links still resolve).
fn bpf_linker_works(binary: &std::path::Path) -> bool {
    Command::new(binary)
        .arg("--version")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| {
            out.status.success()
                && String::from_utf8_lossy(&out.stdout).contains(BPF_LINKER_VERSION)
        })
}

fn bpf_linker() -> Result<()> {
    let prefix = toolchain_dir();
    let binary = prefix.join("bin/bpf-linker");
    if bpf_linker_works(&binary) {
        return Ok(());
    }
    eprintln!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM into {}",
        prefix.display()
    );
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let lib = PathBuf::from(sysroot.trim()).join("lib");
    let llvm = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name())
        .find(|name| name.to_string_lossy().starts_with("libLLVM.so."))
        .with_context(|| format!("no libLLVM.so.* in {}", lib.display()))?;
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)?;
    for link in [OsString::from("libLLVM.so"), llvm.clone()] {
        let path = prefix_lib.join(&link);
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(lib.join(&llvm), &path)
            .with_context(|| format!("linking {}", path.display()))?;
    }
    let llvm_major = llvm
        .to_string_lossy()
        .trim_start_matches("libLLVM.so.")
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap_or_default()
        .to_string();
    run(Command::new("cargo")
        .env("LLVM_PREFIX", &prefix)
        .args(["install", "--root"])
        .arg(&prefix)
        .args([
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--no-default-features",
            "--features",
        ])
        .arg(format!("llvm-{llvm_major}")))?;
    if !bpf_linker_works(&binary) {
        bail!("{} was built but does not run", binary.display());
    }
    Ok(())
}

fn cargo_deb() -> Result<()> {
    let works = Command::new("cargo")
        .args(["deb", "--version"])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| {
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains(CARGO_DEB_VERSION)
        });
    if works {
        return Ok(());
    }
    eprintln!("setup: installing cargo-deb {CARGO_DEB_VERSION}");
    run(Command::new("cargo").args([
        "install",
        "cargo-deb",
        "--version",
        CARGO_DEB_VERSION,
        "--locked",
    ]))
}

/// The real agents from npm, which the daemon tests start by their `bin`
/// links and paths (`--version`, no network needed then).
fn agent_packages() -> Result<()> {
    use agentwatch_tests::{AGENT_PACKAGES, agent_package_installed, agent_packages_dir};
    let dir = agent_packages_dir();
    let missing: Vec<String> = AGENT_PACKAGES
        .iter()
        .filter(|(package, version)| !agent_package_installed(&dir, package, version))
        .map(|(package, version)| format!("{package}@{version}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "setup: installing the agents' npm packages {}",
        missing.join(" ")
    );
    std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
    run(Command::new("npm")
        .arg("install")
        .arg("--prefix")
        .arg(&dir)
        .args(["--no-audit", "--no-fund", "--loglevel=error"])
        .args(&missing))
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", package])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
}

fn debian_packages(wanted: &[&str]) -> Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|package| !installed(package))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing Debian packages {}", missing.join(" "));
    run(as_root("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["update", "-qq"]))?;
    run(as_root("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing))
}
