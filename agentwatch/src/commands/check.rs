//! `agentwatch check`: what this kernel and this process allow, probed for
//! real (the programs are loaded and attached, then detached).

use std::path::Path;

use anyhow::Result;
use nix::sys::utsname::uname;

use crate::{
    kernel::{
        btf::{KernelBtf, VMLINUX_BTF},
        mounts,
        probes::{LoadOptions, PROGRAMS, load_and_attach},
        tls::{GO_WRITE_PROGRAM, TLS_WRITE_PROGRAM},
    },
    privileges::missing_capabilities,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    /// Works, with a gap the user should know about.
    Warn,
    /// agentwatch cannot run.
    Fail,
}

struct Report {
    lines: Vec<(Status, String, String)>,
}

impl Report {
    fn add(&mut self, status: Status, what: impl Into<String>, detail: impl Into<String>) {
        self.lines.push((status, what.into(), detail.into()));
    }

    fn can_run(&self) -> bool {
        self.lines
            .iter()
            .all(|(status, ..)| *status != Status::Fail)
    }

    fn print(&self) {
        for (status, what, detail) in &self.lines {
            let label = match status {
                Status::Ok => "ok  ",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
            };
            println!("{label}  {what:<34} {detail}");
        }
    }
}

/// Prints the report; returns whether agentwatch can run here.
pub fn check() -> Result<bool> {
    let mut report = Report { lines: Vec::new() };
    let kernel = uname()
        .map(|u| {
            format!(
                "{} {} {}",
                u.sysname().to_string_lossy(),
                u.release().to_string_lossy(),
                u.machine().to_string_lossy()
            )
        })
        .unwrap_or_else(|error| error.to_string());
    report.add(Status::Ok, "kernel", kernel);

    let missing = missing_capabilities()?;
    let privileged = missing.is_empty();
    if privileged {
        report.add(
            Status::Ok,
            "privileges",
            "CAP_SYS_ADMIN CAP_BPF CAP_PERFMON CAP_NET_ADMIN",
        );
    } else {
        report.add(
            Status::Fail,
            "privileges",
            format!("missing {}: run as root", missing.join(", ")),
        );
    }

    match KernelBtf::load(Path::new(VMLINUX_BTF)).and_then(|btf| btf.kernel_offsets()) {
        Ok(_) => report.add(
            Status::Ok,
            "BTF",
            format!("{VMLINUX_BTF}: struct offsets resolved"),
        ),
        Err(error) => report.add(Status::Fail, "BTF", format!("{error:#}")),
    }

    let mounted = |found: Result<Option<std::path::PathBuf>>, fallback: &str| match found {
        Ok(Some(path)) => (Status::Ok, path.display().to_string()),
        Ok(None) if privileged => (
            Status::Ok,
            format!("not mounted; agentwatch mounts it at {fallback}"),
        ),
        Ok(None) => (
            Status::Fail,
            "not mounted, and mounting needs root".to_string(),
        ),
        Err(error) => (Status::Fail, format!("{error:#}")),
    };
    let (status, detail) = mounted(mounts::find_cgroup2(), mounts::PRIVATE_CGROUP2);
    report.add(status, "cgroup v2", detail);
    let (status, detail) = mounted(mounts::find_tracefs(), mounts::TRACEFS);
    report.add(status, "tracefs", detail);

    if privileged {
        probe_programs(&mut report);
    } else {
        report.add(Status::Fail, "kernel programs", "not probed: needs root");
    }
    report.add(
        Status::Warn,
        "OS keyring",
        "tokens kept in the Secret Service keyring (gh, supabase, planetscale) are not file reads and are not seen",
    );
    report.print();
    let can_run = report.can_run();
    println!(
        "{}",
        if can_run {
            "agentwatch can run here."
        } else {
            "agentwatch cannot run here: see FAIL above."
        }
    );
    Ok(can_run)
}

fn probe_programs(report: &mut Report) {
    let options = LoadOptions::default();
    match load_and_attach(&options) {
        Ok((_ebpf, attached)) => {
            report.add(
                Status::Ok,
                "ring buffer",
                format!("{} MiB", options.ring_buffer_bytes >> 20),
            );
            let support = &attached.support;
            report.add(
                Status::Ok,
                "kill and stop at a refusal",
                support.signal_at_refusal(),
            );
            if attached.first_write() {
                report.add(
                    Status::Ok,
                    "first-write judgment",
                    format!(
                        "a session's TCP socket is judged by the name its first write asks for \
                         (TLS server name, HTTP Host, proxy CONNECT); kill and stop {}",
                        support.signal_at_write()
                    ),
                );
            } else {
                let why = if support.first_write_missing.is_empty() {
                    "its programs did not attach (see below)".to_string()
                } else {
                    format!(
                        "this kernel lacks {}",
                        support.first_write_missing.join(", ")
                    )
                };
                report.add(
                    Status::Warn,
                    "first-write judgment",
                    format!(
                        "unavailable: {why}; connects are judged by address alone, so an \
                         address shared with a non-infrastructure name is refused too"
                    ),
                );
            }
            if !attached.foreign_sk_msg.is_empty() {
                report.add(
                    Status::Warn,
                    "other sk_msg programs",
                    format!(
                        "{}: a socket one of them owns cannot be watched at its first write; \
                         a session's such sockets are judged by address",
                        attached.foreign_sk_msg.join(", ")
                    ),
                );
            }
            if support.uprobes {
                report.add(
                    Status::Ok,
                    "uprobes",
                    "available in this kernel (uprobe PMU)",
                );
            } else {
                report.add(Status::Warn, "uprobes", "missing: no uprobe PMU");
            }
            if attached.tls.is_empty() {
                report.add(
                    Status::Warn,
                    "operations of TLS requests",
                    "no libssl or node could be probed: a tainted session's TLS calls to its \
                     provider are judged by host, reads included",
                );
            } else {
                let targets: Vec<String> = attached
                    .tls
                    .targets()
                    .map(|target| target.display().to_string())
                    .collect();
                report.add(
                    Status::Ok,
                    "operations of TLS requests",
                    format!(
                        "read at SSL_write before encryption in {}",
                        targets.join(", ")
                    ),
                );
            }
            if attached.tls.go_loaded() {
                report.add(
                    Status::Ok,
                    "operations of Go TLS requests",
                    "read at crypto/tls.(*Conn).Write before encryption in each Go program a \
                     session runs, when it kept its symbols",
                );
            }
            for failure in attached
                .failures
                .iter()
                .filter(|failure| [TLS_WRITE_PROGRAM, GO_WRITE_PROGRAM].contains(&failure.program))
            {
                report.add(
                    Status::Warn,
                    "TLS probe",
                    format!("not attached: {}", failure.error),
                );
            }
            for spec in PROGRAMS {
                let what = format!("{:?} {}", spec.hook, spec.name);
                match attached
                    .failures
                    .iter()
                    .find(|failure| failure.program == spec.name)
                {
                    None => report.add(Status::Ok, what, "attached"),
                    Some(failure) if failure.required => {
                        report.add(Status::Fail, what, failure.error.clone())
                    }
                    Some(failure) => report.add(
                        Status::Warn,
                        what,
                        format!("optional, not attached: {}", failure.error),
                    ),
                }
            }
        }
        Err(error) => report.add(Status::Fail, "kernel programs", format!("{error:#}")),
    }
}
