//! Where TLS plaintext can be seen: every libssl the dynamic linker knows
//! (`ldconfig -p`), every `node` on `PATH` (node has OpenSSL built in and
//! exports `SSL_write`), and each Go program a session's process runs (its
//! `crypto/tls.(*Conn).Write`, found in its symbol table at exec).
//!
//! Only the probes that notice a session's process starting to use OpenSSL
//! (`OPENSSL_init_ssl`, `SSL_CTX_new`, `SSL_new`: once per connection) are
//! attached machine-wide. The `SSL_write` probes, which run on every write,
//! are attached per process, while the kernel holds that process stopped at
//! its first use of OpenSSL: no process outside a session traps on them.
//! A target is offered only where both could be attached, so a process is
//! never trusted to be judged at `SSL_write` where it cannot be.

use std::{
    collections::{BTreeSet, HashMap},
    fs::File,
    num::NonZeroU32,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf,
    programs::{
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeLinkId, UProbeScope},
    },
};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

use super::probes::AttachFailure;

/// The programs, and the functions each is attached to in every target.
pub const TLS_WRITE_PROGRAM: &str = "tls_write";
/// Go programs' `crypto/tls`, attached per process to the program it runs.
pub const GO_WRITE_PROGRAM: &str = "go_tls_write";
const GO_WRITE_FUNCTION: &str = "crypto/tls.(*Conn).Write";
/// Where a Go program's session process is stopped, as at its first use of
/// OpenSSL, until its write probe is attached: every TCP dial goes through
/// it, before the connection and so before its TLS handshake.
const GO_DIAL_FUNCTION: &str = "net.(*Dialer).DialContext";
const WRITE_FUNCTIONS: [&str; 2] = ["SSL_write", "SSL_write_ex"];
const LIBRARY_PROGRAM: &str = "tls_library";
const LIBRARY_FUNCTIONS: [&str; 3] = ["OPENSSL_init_ssl", "SSL_CTX_new", "SSL_new"];

/// A library or executable whose TLS writes are judged by their operation.
#[derive(Debug, Clone)]
struct Target {
    path: PathBuf,
    /// The file the offsets were read from: a package upgrade replaces it,
    /// and the new file's functions are elsewhere.
    identity: (u64, u64),
    /// File offsets of [`WRITE_FUNCTIONS`], in order.
    write_offsets: [u64; WRITE_FUNCTIONS.len()],
}

/// The targets, and the `SSL_write` probes attached for each process.
#[derive(Debug, Default)]
pub struct TlsProbes {
    targets: Vec<Target>,
    processes: HashMap<u32, Vec<UProbeLinkId>>,
    /// Each program file seen (by device and inode): where its
    /// `crypto/tls.(*Conn).Write` starts, None for one that is not Go with
    /// symbols. A Go one's dials stop session processes from then on.
    go_programs: HashMap<(u64, u64), Option<u64>>,
    /// The Go probe attached for each process, and the program it runs.
    go_processes: HashMap<u32, ((u64, u64), UProbeLinkId)>,
    /// Whether the Go probe loaded (it is no failure of its own: a Go
    /// program's calls are then judged by host, as before).
    go_loaded: bool,
}

impl TlsProbes {
    pub fn targets(&self) -> impl Iterator<Item = &Path> {
        self.targets.iter().map(|target| target.path.as_path())
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Whether Go programs' `crypto/tls` writes can be probed.
    pub fn go_loaded(&self) -> bool {
        self.go_loaded
    }

    /// Attaches the `SSL_write` probes for process `pid` to every target
    /// (a process may load any of them later), or to none.
    pub fn probe_process(&mut self, ebpf: &mut Ebpf, pid: u32) -> Result<()> {
        if self.processes.contains_key(&pid) {
            // Probed before an exec: the probes follow the process's new image.
            return Ok(());
        }
        let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).context("pid 0")?);
        let uprobe = program(ebpf, TLS_WRITE_PROGRAM)?;
        let mut links = Vec::new();
        for target in &mut self.targets {
            let attached = target.current().and_then(|()| {
                for offset in target.write_offsets {
                    let location = UProbeAttachLocation::AbsoluteOffset(offset);
                    links.push(uprobe.attach(location, &target.path, scope)?);
                }
                Ok(())
            });
            if let Err(error) = attached {
                for link in links {
                    let _ = uprobe.detach(link);
                }
                return Err(error)
                    .with_context(|| format!("SSL_write in {}", target.path.display()));
            }
        }
        self.processes.insert(pid, links);
        Ok(())
    }

    /// Learns the program at `program` (the path a session's process
    /// exec'd): a Go one's dials stop session processes from now on, until
    /// their write probe is attached. Then attaches that probe for process
    /// `pid` if it still runs a Go program; whether it did. An earlier
    /// program's probe goes.
    pub fn probe_go_process(
        &mut self,
        ebpf: &mut Ebpf,
        pid: u32,
        program_file: Option<&Path>,
    ) -> Result<bool> {
        if !self.go_loaded {
            return Ok(false);
        }
        if let Some(path) = program_file
            && let Ok(identity) = identity(path)
        {
            self.go_write_offset(ebpf, identity, path);
        }
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        let Ok(identity) = identity(&exe) else {
            // It has exited (or exec'd again).
            self.forget_go_process(ebpf, pid);
            return Ok(false);
        };
        if self
            .go_processes
            .get(&pid)
            .is_some_and(|(probed, _)| *probed == identity)
        {
            return Ok(true);
        }
        self.forget_go_process(ebpf, pid);
        let Some(offset) = self.go_write_offset(ebpf, identity, &exe) else {
            return Ok(false);
        };
        let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).context("pid 0")?);
        let attached = program(ebpf, GO_WRITE_PROGRAM)?.attach(
            UProbeAttachLocation::AbsoluteOffset(offset),
            &exe,
            scope,
        );
        match attached {
            Ok(link) => {
                self.go_processes.insert(pid, (identity, link));
                Ok(true)
            }
            // It exited meanwhile: nothing left to judge.
            Err(_) if identity_of_pid(pid).is_none() => Ok(false),
            Err(error) => Err(error).with_context(|| format!("{GO_WRITE_FUNCTION} in {exe:?}")),
        }
    }

    /// Where the Go program file `identity` (at `path`) has its write
    /// function, read once per file; a newly seen Go program gets its dial
    /// probe.
    fn go_write_offset(
        &mut self,
        ebpf: &mut Ebpf,
        identity: (u64, u64),
        path: &Path,
    ) -> Option<u64> {
        if let Some(offset) = self.go_programs.get(&identity) {
            return *offset;
        }
        let offset = go_write_offset(path);
        self.go_programs.insert(identity, offset);
        if offset.is_some()
            && let Err(error) = attach_go_dial_probe(ebpf, path)
        {
            // Its processes are then probed at exec only, as the exec
            // event reaches user space (judged by host until then).
            tracing::info!("{}: {error:#}", path.display());
        }
        offset
    }

    fn forget_go_process(&mut self, ebpf: &mut Ebpf, pid: u32) {
        if let Some((_, link)) = self.go_processes.remove(&pid)
            && let Ok(uprobe) = program(ebpf, GO_WRITE_PROGRAM)
        {
            let _ = uprobe.detach(link);
        }
    }

    /// Detaches the probes of processes gone without an exit record (one
    /// lost to a full ring buffer).
    pub fn forget_vanished(&mut self, ebpf: &mut Ebpf) {
        let vanished: Vec<u32> = self
            .processes
            .keys()
            .chain(self.go_processes.keys())
            .copied()
            .filter(|pid| !Path::new(&format!("/proc/{pid}")).exists())
            .collect();
        for pid in vanished {
            self.forget_process(ebpf, pid);
        }
    }

    /// Detaches process `pid`'s probes once it has exited.
    pub fn forget_process(&mut self, ebpf: &mut Ebpf, pid: u32) {
        self.forget_go_process(ebpf, pid);
        let Some(links) = self.processes.remove(&pid) else {
            return;
        };
        if let Ok(uprobe) = program(ebpf, TLS_WRITE_PROGRAM) {
            for link in links {
                let _ = uprobe.detach(link);
            }
        }
    }
}

impl Target {
    fn read(path: PathBuf) -> Result<Self> {
        let identity = identity(&path).with_context(|| format!("{}", path.display()))?;
        let write_offsets = file_offsets(&path, WRITE_FUNCTIONS)?;
        Ok(Self {
            path,
            identity,
            write_offsets,
        })
    }

    /// Reads the offsets again if the file at the path was replaced.
    fn current(&mut self) -> Result<()> {
        if identity(&self.path).with_context(|| format!("{}", self.path.display()))?
            != self.identity
        {
            *self = Self::read(self.path.clone())?;
        }
        Ok(())
    }
}

/// The identity of the program file process `pid` runs, while it runs.
fn identity_of_pid(pid: u32) -> Option<(u64, u64)> {
    identity(Path::new(&format!("/proc/{pid}/exe"))).ok()
}

/// A plain I/O error: most callers only learn that a process has exited,
/// once per short-lived process, and an `anyhow` error would capture a
/// backtrace each time (under `RUST_BACKTRACE`).
fn identity(path: &Path) -> std::io::Result<(u64, u64)> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

/// Where each of `functions` starts in the file at `path`, as the kernel's
/// uprobes take it (a file offset, not a virtual address).
fn file_offsets<const N: usize>(path: &Path, functions: [&str; N]) -> Result<[u64; N]> {
    let file = File::open(path).with_context(|| format!("{}", path.display()))?;
    // SAFETY: a read-only private mapping; a concurrent writer could change
    // what is parsed, which `object` treats as untrusted input anyway.
    let data = unsafe { memmap2::Mmap::map(&file) }
        .with_context(|| format!("mapping {}", path.display()))?;
    let elf = object::File::parse(&*data).with_context(|| format!("{}", path.display()))?;
    let mut offsets = [0; N];
    for (offset, function) in offsets.iter_mut().zip(functions) {
        let symbol = elf
            .dynamic_symbols()
            .chain(elf.symbols())
            .find(|symbol| symbol.is_definition() && symbol.name() == Ok(function))
            .ok_or_else(|| anyhow!("{function} not in {}", path.display()))?;
        let section = symbol
            .section_index()
            .and_then(|index| elf.section_by_index(index).ok())
            .ok_or_else(|| anyhow!("{function} in no section of {}", path.display()))?;
        let Some((section_offset, _)) = section.file_range() else {
            bail!("{function}'s section has no bytes in {}", path.display());
        };
        *offset = symbol
            .address()
            .checked_sub(section.address())
            .and_then(|into| into.checked_add(section_offset))
            .ok_or_else(|| anyhow!("{function} outside its section in {}", path.display()))?;
    }
    Ok(offsets)
}

/// Attaches the library probe, for every process, to the Go program at
/// `path`'s dial function.
fn attach_go_dial_probe(ebpf: &mut Ebpf, path: &Path) -> Result<()> {
    let [offset] = file_offsets(path, [GO_DIAL_FUNCTION])?;
    program(ebpf, LIBRARY_PROGRAM)?
        .attach(
            UProbeAttachLocation::AbsoluteOffset(offset),
            path,
            UProbeScope::AllProcesses,
        )
        .with_context(|| format!("{GO_DIAL_FUNCTION} in {}", path.display()))?;
    Ok(())
}

/// Where `crypto/tls.(*Conn).Write` starts in the program file at `path`,
/// if it is a Go program that kept its symbol table.
fn go_write_offset(path: &Path) -> Option<u64> {
    let is_go = {
        let file = File::open(path).ok()?;
        // SAFETY: as in `file_offsets`.
        let data = unsafe { memmap2::Mmap::map(&file) }.ok()?;
        let elf = object::File::parse(&*data).ok()?;
        elf.section_by_name(".go.buildinfo").is_some()
    };
    if !is_go {
        return None;
    }
    file_offsets(path, [GO_WRITE_FUNCTION])
        .ok()
        .map(|[offset]| offset)
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

/// Loads the TLS programs and attaches the library probes to every
/// candidate whose write functions were found; a target that lacks them (a
/// node built without exporting them) is a failure reported by name, and
/// its processes are judged by host as before.
pub fn attach(ebpf: &mut Ebpf, failures: &mut Vec<AttachFailure>) -> TlsProbes {
    let mut probes = TlsProbes::default();
    if let Err(error) = load(ebpf) {
        failures.push(failure(&error));
        return probes;
    }
    match program(ebpf, GO_WRITE_PROGRAM).and_then(|uprobe| Ok(uprobe.load()?)) {
        Ok(()) => probes.go_loaded = true,
        Err(error) => failures.push(AttachFailure {
            program: GO_WRITE_PROGRAM,
            required: false,
            error: format!("loading {GO_WRITE_PROGRAM}: {error:#}"),
        }),
    }
    for path in candidates() {
        let attached = Target::read(path.clone()).and_then(|target| {
            attach_library_probes(ebpf, &path)?;
            Ok(target)
        });
        match attached {
            Ok(target) => probes.targets.push(target),
            Err(error) => failures.push(failure(&error)),
        }
    }
    probes
}

fn failure(error: &anyhow::Error) -> AttachFailure {
    AttachFailure {
        program: TLS_WRITE_PROGRAM,
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

/// Attaches the library probes to every function of [`LIBRARY_FUNCTIONS`]
/// in `target`, or to none of them (the target is then reported as a
/// failure, not half-watched).
fn attach_library_probes(ebpf: &mut Ebpf, target: &Path) -> Result<()> {
    let uprobe = program(ebpf, LIBRARY_PROGRAM)?;
    let mut links = Vec::new();
    for function in LIBRARY_FUNCTIONS {
        match uprobe.attach(function, target, UProbeScope::AllProcesses) {
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
