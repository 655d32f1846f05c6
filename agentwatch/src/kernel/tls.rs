//! Where TLS plaintext can be seen: every libssl the dynamic linker knows
//! (`ldconfig -p`) and every `node` on `PATH` (node has OpenSSL built in and
//! exports `SSL_write`). Each gets the `SSL_write` probes; the probes that
//! mark a process as inspected (`OPENSSL_init_ssl`, `SSL_new`) are attached
//! only to a target whose write probes attached, so a process is never
//! trusted to be judged at `SSL_write` where it cannot be.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf,
    programs::{UProbe, uprobe::UProbeScope},
};

use super::probes::AttachFailure;

/// The programs, and the functions each is attached to in every target.
pub const TLS_WRITE_PROGRAM: &str = "tls_write";
const WRITE_FUNCTIONS: [&str; 2] = ["SSL_write", "SSL_write_ex"];
const LIBRARY_PROGRAM: &str = "tls_library";
const LIBRARY_FUNCTIONS: [&str; 3] = ["OPENSSL_init_ssl", "SSL_CTX_new", "SSL_new"];

/// Libraries and executables whose TLS writes are judged by their operation.
#[derive(Debug, Clone, Default)]
pub struct TlsProbes {
    pub targets: Vec<PathBuf>,
}

/// Every libssl the dynamic linker resolves, and `node` on `PATH`.
pub fn candidates() -> Vec<PathBuf> {
    let mut found = BTreeSet::new();
    if let Ok(out) = Command::new("ldconfig").arg("-p").output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some((name, path)) = line.trim().split_once(" => ") else {
                continue;
            };
            if name.starts_with("libssl.so") {
                found.extend(std::fs::canonicalize(path).ok());
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let node = dir.join("node");
            if node.is_file() {
                found.extend(std::fs::canonicalize(node).ok());
            }
        }
    }
    found.into_iter().collect()
}

/// Attaches the TLS probes to every candidate; a target that lacks the
/// functions (a node built without exporting them) is a failure reported by
/// name, and its processes are judged by host as before.
pub fn attach(ebpf: &mut Ebpf, failures: &mut Vec<AttachFailure>) -> TlsProbes {
    let mut probes = TlsProbes::default();
    if let Err(error) = load(ebpf) {
        failures.push(failure(TLS_WRITE_PROGRAM, &error));
        return probes;
    }
    for target in candidates() {
        let attached = attach_all(ebpf, TLS_WRITE_PROGRAM, &WRITE_FUNCTIONS, &target)
            .and_then(|()| attach_all(ebpf, LIBRARY_PROGRAM, &LIBRARY_FUNCTIONS, &target));
        match attached {
            Ok(()) => probes.targets.push(target),
            Err(error) => failures.push(failure(TLS_WRITE_PROGRAM, &error)),
        }
    }
    probes
}

fn failure(program: &'static str, error: &anyhow::Error) -> AttachFailure {
    AttachFailure {
        program,
        required: false,
        error: format!("{error:#}"),
    }
}

fn program<'e>(ebpf: &'e mut Ebpf, name: &str) -> Result<&'e mut UProbe> {
    Ok(ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the object"))?
        .try_into()?)
}

fn load(ebpf: &mut Ebpf) -> Result<()> {
    for name in [TLS_WRITE_PROGRAM, LIBRARY_PROGRAM] {
        program(ebpf, name)?
            .load()
            .with_context(|| format!("loading {name}"))?;
    }
    Ok(())
}

/// Attaches `name` to every function of `functions` in `target`, or to
/// none of them (a partly probed target would judge only some writes).
fn attach_all(ebpf: &mut Ebpf, name: &str, functions: &[&str], target: &Path) -> Result<()> {
    let uprobe = program(ebpf, name)?;
    let mut links = Vec::new();
    for function in functions {
        match uprobe.attach(*function, target, UProbeScope::AllProcesses) {
            Ok(link) => links.push(link),
            Err(error) => {
                for link in links {
                    let _ = uprobe.detach(link);
                }
                return Err(error).with_context(|| format!("{function} in {}", target.display()));
            }
        }
    }
    Ok(())
}
