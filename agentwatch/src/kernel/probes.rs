//! Loading the kernel programs and attaching them to their hooks.

use std::{collections::HashMap, fs::File, path::Path, sync::Mutex};

use agentwatch_common::{
    features,
    maps::SocketKey,
    maps::{DEFAULT_MAX_PROCESSES, DEFAULT_MAX_SOCKETS, DEFAULT_RING_BUFFER_BYTES},
    names::map_name,
    offsets::{self, KernelOffsets},
    uring,
};
use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{MapData, SockHash, sock::SockMapFd},
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock,
        CgroupSockAddr, Program, ProgramError, SkMsg, SockOps, TracePoint,
        trace_point::TracePointLinkId,
    },
};
use tracing::debug;

use super::{
    btf::{KernelBtf, VMLINUX_BTF},
    features::Support,
    mounts, teardown,
    tls::{self, TlsProbes},
};

pub(super) static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agentwatch"));

/// Where a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// `syscalls:<program name>` tracepoint (needs tracefs).
    Syscall,
    /// `tp_btf/<program name>` (a scheduler tracepoint, no tracefs needed).
    Sched,
    /// `io_uring:<program name>` tracepoint, whose record layout is
    /// checked against tracefs first (`agentwatch_common::uring`).
    IoUring,
    /// A cgroup sock_addr program attached to the cgroup v2 root.
    CgroupSockAddr,
    /// A cgroup skb ingress program attached to the cgroup v2 root.
    CgroupSkbIngress,
    /// A cgroup skb egress program attached to the cgroup v2 root.
    CgroupSkbEgress,
    /// A cgroup sock_create program attached to the cgroup v2 root.
    CgroupSockCreate,
    /// A sock_ops program attached to the cgroup v2 root.
    SockOps,
    /// An sk_msg program attached to the `SOCKETS` sockhash.
    SkMsg,
}

pub struct ProgramSpec {
    pub name: &'static str,
    pub hook: Hook,
    /// Without a required program agentwatch refuses to run; an optional one
    /// (a syscall some architectures or kernels lack) is reported and skipped.
    pub required: bool,
}

const fn spec(name: &'static str, hook: Hook, required: bool) -> ProgramSpec {
    ProgramSpec {
        name,
        hook,
        required,
    }
}

pub const PROGRAMS: &[ProgramSpec] = &[
    spec("sched_process_fork", Hook::Sched, true),
    spec("sched_process_exec", Hook::Sched, true),
    spec("sched_process_exit", Hook::Sched, true),
    spec("sys_exit_openat", Hook::Syscall, true),
    spec("sys_exit_openat2", Hook::Syscall, false),
    spec("sys_exit_open", Hook::Syscall, false),
    spec("sys_exit_creat", Hook::Syscall, false),
    spec("sys_exit_open_by_handle_at", Hook::Syscall, false),
    spec("io_uring_submit_req", Hook::IoUring, false),
    spec("io_uring_complete", Hook::IoUring, false),
    spec("sys_exit_connect", Hook::Syscall, true),
    spec("sys_enter_execve", Hook::Syscall, true),
    spec("sys_exit_execve", Hook::Syscall, true),
    spec("sys_enter_execveat", Hook::Syscall, false),
    spec("sys_exit_execveat", Hook::Syscall, false),
    spec("connect4", Hook::CgroupSockAddr, true),
    spec("connect6", Hook::CgroupSockAddr, true),
    spec("sendmsg4", Hook::CgroupSockAddr, true),
    spec("sendmsg6", Hook::CgroupSockAddr, true),
    spec("dns_ingress", Hook::CgroupSkbIngress, true),
    spec("socket_egress", Hook::CgroupSkbEgress, true),
    // Without it a session's MPTCP sockets go uninspected (counted).
    spec("socket_create", Hook::CgroupSockCreate, false),
    // Without these two, connects are judged by address alone.
    spec(FIRST_WRITE_PROGRAMS[0], Hook::SockOps, false),
    spec(FIRST_WRITE_PROGRAMS[1], Hook::SkMsg, false),
];

/// Every program attached at load (the kill switch waits until it is
/// used), whether or not it could be.
pub fn programs_attached_at_load() -> impl Iterator<Item = &'static str> {
    PROGRAMS
        .iter()
        .map(|spec| spec.name)
        .chain([tls::TLS_WRITE_PROGRAM])
}

/// The programs that judge a socket by the name its first write asks for.
pub const FIRST_WRITE_PROGRAMS: [&str; 2] = ["socket_ops", "first_write"];

/// Loaded with the others but attached only while a session is being
/// killed (`raw_syscalls:sys_enter` would otherwise cost every syscall).
const KILL_SWITCH: &str = "kill_switch";

/// A program that could not be attached.
#[derive(Debug, Clone)]
pub struct AttachFailure {
    pub program: &'static str,
    pub required: bool,
    pub error: String,
}

/// The loaded object with its programs attached; dropping it detaches them.
pub struct Probes {
    pub ebpf: Ebpf,
    /// Optional programs that could not be attached.
    pub attach_failures: Vec<AttachFailure>,
    /// Sockets are judged by the name their first write asks for.
    pub first_write: bool,
    /// Other programs' sk_msg programs, seen at load.
    pub foreign_sk_msg: Vec<String>,
    /// Where TLS requests are read before encryption.
    pub tls: TlsProbes,
    kill_switch: Option<TracePointLinkId>,
    /// Syscall tracepoints that attached at load.
    syscall_programs: Vec<&'static str>,
    /// Their links while attached; `None` while detached.
    syscall_links: Option<Vec<(&'static str, TracePointLinkId)>>,
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub max_processes: u32,
    pub max_sockets: u32,
    pub ring_buffer_bytes: u32,
}

/// As many processes as this kernel can run at once (the smaller of
/// `kernel.pid_max` and `kernel.threads-max`): a process map this large
/// never fills. `DEFAULT_MAX_PROCESSES` where neither can be read.
pub fn kernel_process_capacity() -> u32 {
    let read =
        |path: &str| -> Option<u32> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    match (
        read("/proc/sys/kernel/pid_max"),
        read("/proc/sys/kernel/threads-max"),
    ) {
        (Some(pids), Some(threads)) => pids.min(threads),
        (Some(one), None) | (None, Some(one)) => one,
        (None, None) => DEFAULT_MAX_PROCESSES,
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            max_processes: kernel_process_capacity(),
            max_sockets: DEFAULT_MAX_SOCKETS,
            ring_buffer_bytes: DEFAULT_RING_BUFFER_BYTES,
        }
    }
}

/// Struct offsets of the running kernel, for the programs.
pub fn kernel_offsets() -> Result<KernelOffsets> {
    KernelBtf::load(Path::new(VMLINUX_BTF))?.kernel_offsets()
}

/// What attaching every program gave: the syscall tracepoints' links (so
/// they can be detached while no session exists) and the failures.
pub struct Attached {
    pub support: Support,
    /// Other programs' sk_msg programs, seen at load.
    pub foreign_sk_msg: Vec<String>,
    pub syscall_links: Vec<(&'static str, TracePointLinkId)>,
    pub failures: Vec<AttachFailure>,
    pub tls: TlsProbes,
}

/// sk_msg programs other than ours, by name and id: a socket already in
/// their sockmap or sockhash cannot enter ours, so it is judged by address.
fn foreign_sk_msg_programs(ebpf: &Ebpf) -> Vec<String> {
    let own = ebpf
        .program(FIRST_WRITE_PROGRAMS[1])
        .and_then(|program| program.info().ok())
        .map(|info| info.id());
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|info| {
            info.program_type() == aya_obj::generated::bpf_prog_type::BPF_PROG_TYPE_SK_MSG
                && Some(info.id()) != own
        })
        .map(|info| {
            format!(
                "{} (id {})",
                info.name_as_str().unwrap_or("unnamed"),
                info.id()
            )
        })
        .collect()
}

impl Attached {
    /// Whether both first-write programs attached.
    pub fn first_write(&self) -> bool {
        !self
            .failures
            .iter()
            .any(|failure| FIRST_WRITE_PROGRAMS.contains(&failure.program))
    }
}

/// Loads the object and tries every program, returning the ones that failed.
pub fn load_and_attach(options: &LoadOptions) -> Result<(Ebpf, Attached)> {
    let offsets = kernel_offsets()?;
    let support = Support::probe()?;
    mounts::ensure_tracefs()?;
    let cgroup_root = mounts::ensure_cgroup2()?;
    let mut ebpf = EbpfLoader::new()
        .override_global(offsets::GLOBAL, &offsets, true)
        .override_global(features::GLOBAL, &support.features, true)
        .map_max_entries(map_name::PROCS, options.max_processes)
        .map_max_entries(map_name::SOCKETS, options.max_sockets)
        .map_max_entries(map_name::SOCKET_STATES, options.max_sockets)
        .map_max_entries(map_name::EVENTS, options.ring_buffer_bytes)
        .load(EBPF_OBJECT)
        .context("loading the kernel programs")?;
    let btf = Btf::from_sys_fs().context("reading the kernel's BTF")?;
    let cgroup = File::open(&cgroup_root)
        .with_context(|| format!("opening the cgroup v2 root {}", cgroup_root.display()))?;
    let kill_switch: &mut TracePoint = ebpf
        .program_mut(KILL_SWITCH)
        .ok_or_else(|| anyhow!("program {KILL_SWITCH} missing from the object"))?
        .try_into()?;
    kill_switch.load().map_err(describe)?;
    let mut attached = Attached {
        support,
        foreign_sk_msg: Vec::new(),
        syscall_links: Vec::new(),
        failures: Vec::new(),
        tls: TlsProbes::default(),
    };
    let sockets: SockHash<&MapData, SocketKey> = ebpf
        .map(map_name::SOCKETS)
        .ok_or_else(|| anyhow!("map {} missing from the object", map_name::SOCKETS))?
        .try_into()?;
    let sockets = sockets.fd().try_clone()?;
    let hooks = Targets {
        offsets: &offsets,
        cgroup: &cgroup,
        sockets: &sockets,
    };
    let mut load_errors = load_all(&mut ebpf, &btf);
    teardown::wait_for_earlier_detaching();
    for spec in PROGRAMS {
        let attached_or_not = match load_errors.remove(spec.name) {
            Some(error) => Err(describe(error)),
            None => attach(&mut ebpf, spec, &hooks),
        };
        match attached_or_not {
            Ok(Some(link)) => attached.syscall_links.push((spec.name, link)),
            Ok(None) => {}
            Err(error) => attached.failures.push(AttachFailure {
                program: spec.name,
                required: spec.required,
                error: format!("{error:#}"),
            }),
        }
    }
    attached.tls = tls::attach(&mut ebpf, &mut attached.failures);
    attached.foreign_sk_msg = foreign_sk_msg_programs(&ebpf);
    Ok((ebpf, attached))
}

impl Probes {
    pub fn load(options: &LoadOptions) -> Result<Self> {
        let (ebpf, attached) = load_and_attach(options)?;
        if let Some(failure) = attached.failures.iter().find(|failure| failure.required) {
            bail!(
                "cannot attach {}: {} (`agentwatch check` lists what this kernel supports)",
                failure.program,
                failure.error
            );
        }
        let syscall_programs = attached
            .syscall_links
            .iter()
            .map(|(name, _)| *name)
            .collect();
        let first_write = attached.first_write();
        Ok(Self {
            ebpf,
            first_write,
            foreign_sk_msg: attached.foreign_sk_msg,
            tls: attached.tls,
            attach_failures: attached.failures,
            kill_switch: None,
            syscall_programs,
            syscall_links: Some(attached.syscall_links),
        })
    }

    fn tracepoint(&mut self, name: &str) -> Result<&mut TracePoint> {
        Ok(self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("program {name} missing"))?
            .try_into()?)
    }

    /// Makes every process of a killed session die at its next syscall.
    pub fn arm_kill_switch(&mut self) -> Result<()> {
        if self.kill_switch.is_none() {
            let link = self
                .tracepoint(KILL_SWITCH)?
                .attach("raw_syscalls", "sys_enter")
                .context("attaching the kill switch")?;
            self.kill_switch = Some(link);
        }
        Ok(())
    }

    pub fn disarm_kill_switch(&mut self) -> Result<()> {
        if let Some(link) = self.kill_switch.take() {
            self.tracepoint(KILL_SWITCH)?.detach(link)?;
        }
        Ok(())
    }

    /// Attaches the `SSL_write` probes for a session's process that the
    /// kernel stopped at its first use of OpenSSL.
    pub fn probe_tls_process(&mut self, pid: u32) -> Result<()> {
        self.tls.probe_process(&mut self.ebpf, pid)
    }

    /// Attaches the Go `crypto/tls` probe for process `pid` if the program
    /// it runs is Go with its symbols; whether it did.
    pub fn probe_go_process(&mut self, pid: u32, program: Option<&Path>) -> Result<bool> {
        self.tls.probe_go_process(&mut self.ebpf, pid, program)
    }

    pub fn forget_tls_process(&mut self, pid: u32) {
        self.tls.forget_process(&mut self.ebpf, pid);
    }

    pub fn forget_vanished_tls_processes(&mut self) {
        self.tls.forget_vanished(&mut self.ebpf);
    }

    pub fn syscalls_attached(&self) -> bool {
        self.syscall_links.is_some()
    }

    /// Detaches the syscall tracepoints: with no session to watch, every
    /// process on the machine then pays nothing for them.
    pub fn detach_syscalls(&mut self) -> Result<()> {
        for (name, link) in self.syscall_links.take().unwrap_or_default() {
            self.tracepoint(name)?.detach(link)?;
        }
        Ok(())
    }

    pub fn attach_syscalls(&mut self) -> Result<()> {
        if self.syscall_links.is_some() {
            return Ok(());
        }
        let mut links = Vec::new();
        for name in self.syscall_programs.clone() {
            let link = self
                .tracepoint(name)?
                .attach("syscalls", name)
                .with_context(|| format!("attaching {name}"))?;
            links.push((name, link));
        }
        self.syscall_links = Some(links);
        Ok(())
    }
}

/// What programs attach to besides tracepoints.
struct Targets<'a> {
    offsets: &'a KernelOffsets,
    cgroup: &'a File,
    sockets: &'a SockMapFd,
}

/// The io_uring tracepoint `program` attaches to on this kernel, once its
/// record layout and `struct io_open` are what the program reads.
fn io_uring_tracepoint(program: &str, offsets: &KernelOffsets) -> Result<&'static str> {
    if offsets.io_open_file_slot == 0 {
        bail!("this kernel's BTF has no struct io_open (io_uring not built in?)");
    }
    let tracepoint = uring::TRACEPOINTS
        .iter()
        .find(|tracepoint| tracepoint.program == program)
        .ok_or_else(|| anyhow!("{program} reads no io_uring tracepoint agentwatch knows"))?;
    let events = Path::new(mounts::TRACEFS).join("events/io_uring");
    let (name, format) = tracepoint
        .names
        .iter()
        .find_map(|name| {
            let format = std::fs::read_to_string(events.join(name).join("format")).ok()?;
            Some((*name, format))
        })
        .ok_or_else(|| {
            anyhow!(
                "no io_uring tracepoint {} in {}",
                tracepoint.names.join(" or "),
                events.display()
            )
        })?;
    for field in &tracepoint.fields {
        let listed = format.lines().any(|line| {
            line.split(';')
                .any(|part| part.trim().ends_with(&format!(" {}", field.name)))
                && line.contains(&format!("offset:{};", field.offset))
        });
        if !listed {
            bail!(
                "{name}'s field {} is not at offset {} on this kernel",
                field.name,
                field.offset
            );
        }
    }
    Ok(name)
}

/// Attaches one program; a syscall tracepoint's link is returned.
/// Loads (verifies) the programs `PROGRAMS` names, on as many threads as
/// there are CPUs: the verifier runs in the loading thread, and the exec
/// program alone takes most of a start's loading time. Returns each
/// program's load error by name.
fn load_all(ebpf: &mut Ebpf, btf: &Btf) -> HashMap<&'static str, ProgramError> {
    let mut work: Vec<(&'static str, &mut Program)> = ebpf
        .programs_mut()
        .filter_map(|(name, program)| {
            PROGRAMS
                .iter()
                .find(|spec| spec.name == name)
                .map(|spec| (spec.name, program))
        })
        .collect();
    // Taken from the end: the exec program, the longest to verify, first.
    work.sort_by_key(|(name, _)| *name == HEAVIEST_TO_VERIFY);
    let work = Mutex::new(work);
    let failed = Mutex::new(HashMap::new());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while let Some((name, program)) = work.lock().ok().and_then(|mut work| work.pop()) {
                    if let Err(error) = load(name, program, btf) {
                        failed.lock().expect("load errors").insert(name, error);
                    }
                }
            });
        }
    });
    failed.into_inner().expect("load errors")
}

/// The program whose verification takes longest (the environment and
/// argv walks, discovery), started first.
const HEAVIEST_TO_VERIFY: &str = "sched_process_exec";

fn load(name: &str, program: &mut Program, btf: &Btf) -> Result<(), ProgramError> {
    match program {
        Program::TracePoint(program) => program.load(),
        Program::BtfTracePoint(program) => program.load(name, btf),
        Program::CgroupSockAddr(program) => program.load(),
        Program::CgroupSock(program) => program.load(),
        Program::CgroupSkb(program) => program.load(),
        Program::SockOps(program) => program.load(),
        Program::SkMsg(program) => program.load(),
        // No other kind is in `PROGRAMS`.
        _ => Err(ProgramError::UnexpectedProgramType),
    }
}

/// Attaches a loaded program to its hook; a syscall tracepoint's link is
/// returned, to be detached while no session needs it.
fn attach(
    ebpf: &mut Ebpf,
    spec: &ProgramSpec,
    hooks: &Targets,
) -> Result<Option<TracePointLinkId>> {
    let program = ebpf
        .program_mut(spec.name)
        .ok_or_else(|| anyhow!("program {} missing from the object", spec.name))?;
    let result = match spec.hook {
        Hook::Syscall => {
            let program: &mut TracePoint = program.try_into()?;
            program.attach("syscalls", spec.name).map(Some)
        }
        Hook::IoUring => {
            let tracepoint = io_uring_tracepoint(spec.name, hooks.offsets)?;
            let program: &mut TracePoint = program.try_into()?;
            program.attach("io_uring", tracepoint).map(|_| None)
        }
        Hook::Sched => {
            let program: &mut BtfTracePoint = program.try_into()?;
            program.attach().map(|_| None)
        }
        // A BPF link on a cgroup always coexists with other programs (another
        // agentwatch, systemd's); `Single` only means no flags.
        Hook::CgroupSockAddr => {
            let program: &mut CgroupSockAddr = program.try_into()?;
            program
                .attach(hooks.cgroup, CgroupAttachMode::Single)
                .map(|_| None)
        }
        Hook::CgroupSockCreate => {
            let program: &mut CgroupSock = program.try_into()?;
            program
                .attach(hooks.cgroup, CgroupAttachMode::Single)
                .map(|_| None)
        }
        Hook::CgroupSkbIngress | Hook::CgroupSkbEgress => {
            let direction = if spec.hook == Hook::CgroupSkbIngress {
                CgroupSkbAttachType::Ingress
            } else {
                CgroupSkbAttachType::Egress
            };
            let program: &mut CgroupSkb = program.try_into()?;
            program
                .attach(hooks.cgroup, direction, CgroupAttachMode::Single)
                .map(|_| None)
        }
        Hook::SockOps => {
            let program: &mut SockOps = program.try_into()?;
            program
                .attach(hooks.cgroup, CgroupAttachMode::Single)
                .map(|_| None)
        }
        Hook::SkMsg => {
            let program: &mut SkMsg = program.try_into()?;
            program.attach(hooks.sockets).map(|_| None)
        }
    };
    result.map_err(describe)
}

/// Verifier logs run to thousands of lines; the verdict is their last line
/// before the statistics. The rest is logged at debug level, for a bug report.
fn describe(error: ProgramError) -> anyhow::Error {
    match error {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            debug!("verifier log:\n{log}");
            anyhow!(
                "this kernel's verifier rejected it ({io_error}): {} \
                 (RUST_LOG=debug shows its whole log)",
                verifier_verdict(&log)
            )
        }
        other => other.into(),
    }
}

/// The line of a verifier log that says why it refused.
pub(super) fn verifier_verdict(log: &str) -> &str {
    const STATISTICS: &[&str] = &[
        "processed ",
        "verification time",
        "stack depth",
        "-- END PROG LOAD LOG --",
    ];
    log.lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty() && !STATISTICS.iter().any(|s| line.starts_with(s)))
        .unwrap_or("no reason given")
}
