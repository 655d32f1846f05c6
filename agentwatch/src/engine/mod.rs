//! The pipeline `run` and the daemon share: `kernel` (probes, ring buffer)
//! → `decode` → `enrich` → events, with `feed` keeping the kernel's tables
//! current (credential files, infrastructure addresses, content scans).
//! What the events ask of user space is carried out by `respond`, and they
//! are written out by `sinks`. Decisions are the kernel's; nothing here is
//! on the path of a syscall, except the judgment of an operation whose
//! caller the kernel stopped for it (`operations`).

mod fence;
mod operations;

use std::{
    collections::{BTreeSet, HashSet},
    net::IpAddr,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use agentwatch_common::{
    event::owes_scan,
    maps::{Config, CredKey, HostClass, SessionState, session_flags},
    names::{NameSource, OpenSyscall, SocketJudgment},
};
use anyhow::{Context as _, Result};
use tokio::time::{Instant, Interval, interval_at};
use tracing::{info, warn};

use crate::{
    decode::{Clock, Record, clock_ns, decode},
    enrich::{Enricher, state::Process},
    event::{Body, CredentialUse, Event, Found, Open},
    feed::{
        content::{ContentScans, ScanJob, ScanResult, ScanStats, Submitted, worth_scanning},
        credentials::{CatalogPaths, CredentialFile, expand, watch_dirs},
        environ,
        hostsfile::{self, HOSTS_PATH, HostsFile},
        resolver::{REFRESH_INTERVAL, Resolutions, Resolved, is_localhost},
        tables::Tables,
        watch::DirWatcher,
        workspace::{self, Find, Walks},
    },
    kernel::{
        maps::{KernelCounters, KernelMaps, MapFill},
        probes::{LoadOptions, Probes},
        ringbuf::RecordStream,
    },
    operation::Catalog,
    policy::{Action, Policy},
    scan::{CATALOG_FILE_RULE, Finding, Scanner},
    sinks::journal,
};
use agentwatch_common::hash::executable_hash;

/// How long a start waits for the catalog's hosts to resolve: a resolver
/// that answers at all answers well within it, and a start is not held
/// longer than its programs take to load by one that does not.
const START_RESOLUTION_WAIT: Duration = Duration::from_millis(300);

/// Class a content finding of no known provider is given.
const FOUND_CLASS: &str = "found";

pub struct EngineOptions {
    pub ring_buffer_bytes: u32,
    pub max_processes: u32,
    pub max_sockets: u32,
    pub policy: Policy,
    /// Home directories whose `~/` credential files count.
    pub homes: Vec<PathBuf>,
}

/// What the kernel's and user space's counters say went missing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Losses {
    pub kernel: KernelCounters,
    pub decode_errors: u64,
    /// Session processes left unprobed at `SSL_write` (their TLS calls
    /// judged by host): the ring buffer was full, or attaching failed.
    pub tls_unprobed: u64,
    pub scans: ScanStats,
}

pub struct Engine {
    probes: Probes,
    records: RecordStream,
    core: Core,
    watcher: DirWatcher,
    refresh: Interval,
    resolutions: Resolutions,
    /// When to look whether /etc/hosts changed.
    hosts_poll: Interval,
    scans: ContentScans,
    /// Workspace walks still going on after a session's start.
    walks: Walks,
}

/// The state a record is handled against (apart from the streams feeding it).
struct Core {
    maps: KernelMaps,
    enrich: Enricher,
    policy: Policy,
    clock: Clock,
    homes: Vec<PathBuf>,
    /// The files the catalog names under the homes: a workspace walk's
    /// find among them keeps the catalog's class.
    catalog: HashSet<CredKey>,
    /// The catalog's patterns, for a file read before an expansion found it.
    catalog_paths: CatalogPaths,
    workspaces: BTreeSet<PathBuf>,
    /// Bumped by every policy change: a background walk's finds carry class
    /// indices of the policy it started under, and stale ones are dropped.
    policy_generation: u64,
    decode_errors: u64,
    /// Files read by sessions, waiting to be handed to the scanner.
    to_scan: Vec<ScanJob>,
    /// Sessions' TLS writes waiting for the scans of what they read.
    fence: fence::ScanFence,
    hosts_file: HostsFile,
    heads: operations::RequestHeads,
    /// Processes whose `SSL_write` probes are to be attached or detached
    /// (the probes belong to the loaded object, not to `Core`).
    tls_changes: Vec<operations::TlsProcessChange>,
    /// Session processes whose Go `crypto/tls` writes are probed.
    go_tls: HashSet<u32>,
    /// Session processes whose `SSL_write` probes could not be attached.
    tls_unprobed: u64,
    /// When the current catalog was put in the kernel's tables
    /// (CLOCK_BOOTTIME ns).
    catalog_loaded_ns: u64,
}

/// Puts the catalog in the kernel's tables; returns when that was done
/// (CLOCK_BOOTTIME ns), which DNS answers are told apart by.
fn load_catalog(tables: &Tables, maps: &mut KernelMaps) -> Result<u64> {
    tables.load_into(maps)?;
    Ok(clock_ns(libc::CLOCK_BOOTTIME))
}

impl Engine {
    /// Loads and attaches the programs and fills the kernel's tables. The
    /// catalog's hostnames are resolved beside the event loop; a start waits
    /// for the first answers until `START_RESOLUTION_WAIT` after the lookups
    /// began.
    pub async fn start(options: EngineOptions) -> Result<Self> {
        // The lookups begin before the programs load and run on the
        // runtime's workers meanwhile: a resolver that never answers then
        // costs the start only what is left of its wait once loading is
        // done, not the whole wait after it.
        let tables = Tables::compile(&options.policy);
        let mut resolutions = Resolutions::default();
        resolutions.start(&tables.exact_hosts);
        let resolution_deadline = Instant::now() + START_RESOLUTION_WAIT;
        let mut probes = Probes::load(&LoadOptions {
            ring_buffer_bytes: options.ring_buffer_bytes,
            max_processes: options.max_processes,
            max_sockets: options.max_sockets,
        })?;
        for failure in &probes.attach_failures {
            journal::info(format!(
                "agentwatch: running without {}: {}",
                failure.program, failure.error
            ));
        }
        if !probes.foreign_sk_msg.is_empty() {
            journal::info(format!(
                "agentwatch: other sk_msg programs are loaded ({}): sockets they own cannot be \
                 watched at their first write and are judged by address",
                probes.foreign_sk_msg.join(", ")
            ));
        }
        if probes.tls.is_empty() {
            journal::info(
                "agentwatch: no libssl or node to probe: TLS requests of tainted sessions are \
                 judged by host, not by operation",
            );
        }
        for target in probes.tls.targets() {
            info!("TLS requests judged by operation in {}", target.display());
        }
        let mut maps = KernelMaps::take(&mut probes.ebpf)?;
        maps.set_first_write(probes.first_write)?;
        let records = RecordStream::take(&mut probes.ebpf)?;
        let catalog_loaded_ns = load_catalog(&tables, &mut maps)?;
        for rule in &options.policy.allow {
            info!(
                "allow rule: {:?} for {} ({})",
                rule.host,
                rule.credential.as_deref().unwrap_or("any credential"),
                rule.comment.as_deref().unwrap_or("no comment")
            );
        }
        // Every exec's environment is scanned, so that a later read of a
        // process's /proc/PID/environ can be judged.
        maps.set_config(Config {
            scan_all_env: 1,
            ..Config::default()
        })?;
        for (pid, classes) in environ::running_processes(&tables.env_names) {
            maps.add_env_classes(pid, classes)?;
        }
        let scanner = Arc::new(Scanner::new(&credential_env(&options.policy)));
        let mut core = Core {
            maps,
            enrich: Enricher::new(tables),
            policy: options.policy,
            clock: Clock::now(),
            homes: options.homes,
            catalog: HashSet::new(),
            catalog_paths: CatalogPaths::default(),
            workspaces: BTreeSet::new(),
            policy_generation: 0,
            decode_errors: 0,
            to_scan: Vec::new(),
            fence: fence::ScanFence::default(),
            hosts_file: HostsFile::new(HOSTS_PATH),
            heads: operations::RequestHeads::default(),
            tls_changes: Vec::new(),
            go_tls: HashSet::new(),
            tls_unprobed: 0,
            catalog_loaded_ns,
        };
        core.load_credentials()?;
        core.load_commands()?;
        // Parsing the kernel's BTF (for struct offsets and BTF tracepoints)
        // briefly takes tens of MiB; give them back rather than keep them
        // as resident heap for the daemon's lifetime.
        // SAFETY: malloc_trim only returns free heap pages to the kernel.
        unsafe { libc::malloc_trim(0) };
        let mut watcher = DirWatcher::new()?;
        let _ = watcher.watch(&core.credential_dirs());
        core.refresh_hosts_file()?;
        // A session may connect to a catalog host's address without a DNS
        // lookup of its own (an address it was given): those addresses must
        // be known before it starts. A resolver that does not answer delays
        // the start by at most START_RESOLUTION_WAIT, and says so; so does
        // one that fails every lookup at once (no route to it, say).
        match tokio::time::timeout_at(resolution_deadline, resolutions.next()).await {
            Ok(resolved) if !resolved.is_empty() => core.learn_resolved(resolved)?,
            unanswered => journal::info(format!(
                "agentwatch: the system resolver gave no address for the catalog's hosts ({}); \
                 their addresses count once it does, and as sessions' own DNS answers give them",
                match unanswered {
                    Ok(_) => "every lookup failed".to_string(),
                    Err(_) => format!("none answered in {} ms", START_RESOLUTION_WAIT.as_millis()),
                }
            )),
        }
        Ok(Self {
            probes,
            records,
            core,
            watcher,
            refresh: interval_at(Instant::now() + REFRESH_INTERVAL, REFRESH_INTERVAL),
            resolutions,
            hosts_poll: interval_at(
                Instant::now() + hostsfile::POLL_INTERVAL,
                hostsfile::POLL_INTERVAL,
            ),
            scans: ContentScans::start(scanner.clone()),
            walks: Walks::new(scanner),
        })
    }

    pub fn probes(&self) -> &Probes {
        &self.probes
    }

    /// While armed, every process of a killed session dies at its next syscall.
    pub fn arm_kill_switch(&mut self) -> Result<()> {
        self.probes.arm_kill_switch()
    }

    pub fn disarm_kill_switch(&mut self) -> Result<()> {
        self.probes.disarm_kill_switch()
    }

    /// The syscall tracepoints cost every process on the machine, so they are
    /// attached only while there is a session to watch. The kernel's
    /// discovery is told in the order that never lets an agent found meanwhile run
    /// unwatched: after attaching, and before detaching (it is then paused
    /// at exec until they are attached again).
    pub fn set_syscalls_attached(&mut self, attached: bool, default_action: Action) -> Result<()> {
        if attached {
            self.probes.attach_syscalls()?;
            self.configure_discovery(default_action)
        } else {
            self.write_discovery(default_action, false)?;
            self.probes.detach_syscalls()
        }
    }

    /// Turns the kernel's agent discovery on: an agent found at exec opens a
    /// session under `default_action`.
    pub fn configure_discovery(&mut self, default_action: Action) -> Result<()> {
        let attached = self.probes.syscalls_attached();
        self.write_discovery(default_action, attached)
    }

    fn write_discovery(&mut self, default_action: Action, syscalls_attached: bool) -> Result<()> {
        self.core.maps.set_config(Config {
            scan_all_env: 1,
            discover: 1,
            default_action: default_action.code(),
            syscalls_attached: u32::from(syscalls_attached),
            ..Config::default()
        })
    }

    /// Discovery and environment scans off, for the kernel programs that
    /// outlive the daemon by a moment as it exits.
    pub fn disable_discovery(&mut self) -> Result<()> {
        self.core.maps.set_config(Config {
            scan_all_env: 0,
            discover: 0,
            ..Config::default()
        })
    }

    /// An executable whose name (`hash`) marks `agent` at exec.
    pub fn add_agent_executable(&mut self, hash: u64, agent: u32) -> Result<()> {
        self.core.maps.add_agent_comm(hash, agent)
    }

    /// An environment entry (`hash`) that marks `agent` at exec.
    pub fn add_agent_marker(&mut self, hash: u64, agent: u32) -> Result<()> {
        self.core.maps.add_agent_marker(hash, agent)
    }

    /// An executable's two innermost directories (`hash`) that mark `agent`
    /// at exec.
    pub fn add_agent_directory(&mut self, hash: u64, agent: u32) -> Result<()> {
        self.core.maps.add_agent_directory(hash, agent)
    }

    /// While registered, whatever `tgid` forks joins `session` from its first instruction.
    pub fn add_spawner(&mut self, tgid: u32, session: u32) -> Result<()> {
        self.core.maps.add_spawner(tgid, session)
    }

    pub fn remove_spawner(&mut self, tgid: u32) -> Result<()> {
        self.core.maps.remove_spawner(tgid)
    }

    /// Makes a running process (found in /proc) a process of `session` in the kernel's eyes.
    pub fn track_process(&mut self, pid: u32, session: u32) -> Result<()> {
        self.core.maps.add_process(pid, session)
    }

    /// Whether the kernel counts `pid` as a process of some session.
    pub fn is_tracked(&self, pid: u32) -> bool {
        self.core.maps.is_tracked(pid)
    }

    /// Every process of every session, as (pid, session).
    pub fn tracked_processes(&self) -> Vec<(u32, u32)> {
        self.core.maps.processes()
    }

    pub fn session_pids(&self, session: u32) -> Vec<u32> {
        self.core.maps.session_pids(session)
    }

    /// Classes a session holds: what the kernel saw it read and what user space added.
    pub fn credentials_held(&self, session: u32) -> u64 {
        self.core.maps.credentials_held(session)
    }

    /// Lets a stopped session's retry of its connect to `addr` through, once,
    /// and clears its flags so that it runs as before.
    pub fn allow_retry(&mut self, session: u32, addr: IpAddr) -> Result<()> {
        self.core.maps.allow_once(session, addr)?;
        self.core.maps.set_session_flags(session, 0)
    }

    /// Lets a session stopped at an operation go on: a command `process`
    /// may use `classes` with its provider; a TLS request needs nothing (its
    /// socket passes what SSL_write let through).
    pub fn allow_operation(&mut self, session: u32, process: u32, classes: u64) -> Result<()> {
        if classes != 0 {
            self.core.maps.grant_command(process, classes)?;
        }
        self.core.maps.set_session_flags(session, 0)
    }

    /// The kernel refuses a killed session everything until it is gone.
    pub fn mark_killed(&mut self, session: u32) -> Result<()> {
        self.core
            .maps
            .set_session_flags(session, session_flags::KILLED)
    }

    /// Interpreters the kernel stopped at exec, waiting for user space to read their argv.
    pub fn held_processes(&self) -> Vec<u32> {
        self.core.maps.held()
    }

    pub fn release_held(&mut self, pid: u32) {
        self.core.maps.release_held(pid);
    }

    /// How full the kernel's bounded maps are.
    pub fn map_fill(&self) -> Vec<MapFill> {
        self.core.maps.fill()
    }

    /// The policy as compiled for the kernel, to name classes and providers.
    pub fn tables(&self) -> &Tables {
        &self.core.enrich.tables
    }

    /// What user space knows of a process of a session.
    pub fn process(&self, pid: u32) -> Option<&Process> {
        self.core.enrich.procs.get(pid)
    }

    /// A process user space started itself (`run`'s command), named before
    /// its first event.
    pub fn add_process(&mut self, pid: u32, process: Process) {
        self.core.enrich.procs.insert(pid, process);
    }

    /// Starts a session in the kernel's tables.
    pub fn add_session(&mut self, session: u32, action: Action) -> Result<()> {
        self.core.maps.add_session(
            session,
            SessionState {
                action: action.code(),
                opened_ns: clock_ns(libc::CLOCK_BOOTTIME),
                ..SessionState::default()
            },
        )
    }

    /// Files open in process `pid` without close-on-exec, which the
    /// command it execs next inherits (`3<~/.railway/config.json`): each is
    /// an `open` (syscall `inherited`) of `session`'s first process, a
    /// credential file taints the session now, and any other regular file
    /// is scanned by content (`finish_scans` waits for the scans).
    pub fn inherit_open_files(
        &mut self,
        session: u32,
        pid: u32,
        comm: &str,
        out: &mut Vec<Event>,
    ) -> Result<()> {
        for (fd, flags, path, meta) in inheritable_files(pid)? {
            let key = CredKey {
                dev: agentwatch_common::offsets::kernel_dev(meta.dev()),
                _pad: 0,
                ino: meta.ino(),
            };
            let cred_classes = self
                .core
                .maps
                .credential_class(&key)
                .map_or(0, |class| 1u64 << (class & 63));
            if cred_classes != 0 {
                self.core.maps.add_user_taint(session, cred_classes)?;
            }
            let path = path.to_string_lossy().into_owned();
            let event = self.core.enrich.event(Event {
                ts: SystemTime::now(),
                session,
                pid,
                tid: pid,
                ppid: 0,
                uid: meta.uid(),
                comm: comm.to_string(),
                body: Body::Open(Open {
                    path: format!("/proc/self/fd/{fd}"),
                    resolved: path,
                    flags,
                    ret: i64::from(fd),
                    dev: meta.dev(),
                    ino: meta.ino(),
                    syscall: OpenSyscall::Inherited,
                    truncated: false,
                    cred_classes,
                    credentials: Vec::new(),
                }),
            });
            if let Some(job) = scan_job(&event, false) {
                self.core.to_scan.push(job);
            }
            out.push(event);
        }
        Ok(())
    }

    /// Gives a session (adopted after a restart) the credentials it held.
    pub fn restore_credentials(&mut self, session: u32, classes: &[String]) -> Result<()> {
        let mask = self.core.enrich.tables.class_mask(classes);
        self.core.maps.add_user_taint(session, mask)
    }

    /// Forgets a session whose last process exited.
    pub fn end_session(&mut self, session: u32) {
        self.core.maps.remove_session(session);
        self.core.fence.forget(session);
        self.core.enrich.credentials.forget(session);
    }

    /// A session's working directory is searched for workspace credentials.
    /// The part nearest `dir` is walked now, for at most `wait`; the rest
    /// in the background (see `feed::workspace`).
    pub fn add_workspace(&mut self, dir: &Path, wait: Duration) -> Result<()> {
        self.core.add_workspace(dir, wait, &self.walks)
    }

    /// Puts a new policy in force: its tables are added to the kernel's
    /// (entries the old policy had and the new one drops stay until restart)
    /// and credential files are expanded again.
    pub fn replace_policy(&mut self, policy: Policy) -> Result<()> {
        self.core.replace_policy(policy, &self.walks)
    }

    /// Waits for the next piece of work and appends the events it produced.
    pub async fn step(&mut self, out: &mut Vec<Event>) -> Result<()> {
        tokio::select! {
            received = self.records.recv(|record| self.core.handle(record, out)) => received?,
            _ = self.watcher.changed() => {
                // A new directory (`mkdir ~/.railway`) is watched from now
                // on; what was written into it before the watch took is
                // found by expanding once more.
                self.core.load_credentials()?;
                if self.watcher.watch(&self.core.credential_dirs()) {
                    self.core.load_credentials()?;
                }
            }
            _ = self.refresh.tick() => {
                self.resolutions.start(&self.core.enrich.tables.exact_hosts);
                self.probes.forget_vanished_tls_processes();
            }
            resolved = self.resolutions.next() => self.core.learn_resolved(resolved)?,
            _ = self.hosts_poll.tick() => self.core.refresh_hosts_file()?,
            result = self.scans.next() => self.core.scanned(result, out)?,
            found = self.walks.next() => {
                if found.generation == self.core.policy_generation {
                    self.core.add_finds(found.files)?;
                }
            }
        }
        self.after_records(out)
    }

    /// Handles every record already in the ring buffer, without waiting.
    pub fn drain(&mut self, out: &mut Vec<Event>) -> Result<()> {
        self.records.drain(|record| self.core.handle(record, out));
        self.after_records(out)
    }

    /// What the records handled asked of the probes, the scanner and the
    /// kernel's scan fence.
    fn after_records(&mut self, out: &mut Vec<Event>) -> Result<()> {
        for change in std::mem::take(&mut self.core.tls_changes) {
            self.core.apply_tls_change(&mut self.probes, change);
        }
        self.submit_scans(out);
        self.core.fence.flush(&mut self.core.maps)
    }

    /// Waits for every content scan submitted so far and applies what they
    /// found, so that a read just before the command's exit still counts.
    pub async fn finish_scans(&mut self, out: &mut Vec<Event>) -> Result<()> {
        self.submit_scans(out);
        while self.scans.pending() > 0 {
            let result = self.scans.next().await;
            self.core.scanned(result, out)?;
        }
        self.core.fence.flush(&mut self.core.maps)
    }

    /// Hands the reads to the scanner; one it will not scan (scanned
    /// already, or its queue is full: counted) is paid to the fence now.
    fn submit_scans(&mut self, out: &mut Vec<Event>) {
        for job in std::mem::take(&mut self.core.to_scan) {
            let (session, owed) = (job.session, job.owed);
            if self.scans.submit(job) == Submitted::Skipped && owed {
                self.core.fence_scanned(session, out);
            }
        }
    }

    pub fn losses(&self) -> Result<Losses> {
        Ok(Losses {
            kernel: self.core.maps.counters()?,
            decode_errors: self.core.decode_errors,
            tls_unprobed: self.core.tls_unprobed,
            scans: self.scans.stats(),
        })
    }
}

impl Core {
    fn handle(&mut self, record: &[u8], out: &mut Vec<Event>) {
        match decode(&self.clock, record) {
            Ok(Record::Event(event)) => {
                let owed = owes_scan_of(&event);
                let event = self.enrich.event(event);
                if let Some(job) = scan_job(&event, owed) {
                    self.fence.scanning(job.session);
                    self.to_scan.push(job);
                } else if owed {
                    self.fence.pay(event.session);
                }
                match &event.body {
                    Body::Exit(_) => self
                        .tls_changes
                        .push(operations::TlsProcessChange::Exited(event.pid)),
                    Body::Exec(exec) if exec.ret == 0 => {
                        let program = Path::new(&exec.filename);
                        self.tls_changes
                            .push(operations::TlsProcessChange::Executed(
                                event.pid,
                                program.is_absolute().then(|| program.to_path_buf()),
                            ));
                    }
                    _ => {}
                }
                if matches!(&event.body, Body::Exec(exec) if exec.held_command) {
                    self.held_command(event, out);
                } else {
                    out.push(event);
                }
            }
            Ok(Record::TlsWrite(write)) => self.tls_write(write, out),
            Ok(Record::TlsProcess(pid)) => self
                .tls_changes
                .push(operations::TlsProcessChange::Started(pid)),
            Ok(Record::Alert(event, raw)) => out.push(self.enrich.alert(event, raw)),
            // The programs see DNS from their attach, before the catalog is
            // in their tables: an answer parsed meanwhile matched no domain
            // whatever its name, and would make an infrastructure address
            // look shared with a name that is not (another agentwatch's
            // session asking while this one starts).
            Ok(Record::Dns(answer))
                if answer.domain.is_none() && answer.matched_ns < self.catalog_loaded_ns => {}
            Ok(Record::Dns(answer)) => {
                if answer.domain.is_some() {
                    self.mark_shared_with_earlier_names(&answer.addrs);
                }
                self.enrich.dns(&answer);
            }
            Ok(Record::Name(event, key, domain)) => {
                if let Body::Name(named) = &event.body
                    && named.judgment == SocketJudgment::Harmless
                {
                    self.maps.forget_socket(&key);
                }
                out.push(self.enrich.named(event, domain));
            }
            Err(error) => {
                self.decode_errors += 1;
                warn!("undecodable record: {error}");
            }
        }
    }

    /// Infrastructure addresses DNS gave earlier for a name that is not
    /// infrastructure are shared (the kernel marks the other order itself).
    fn mark_shared_with_earlier_names(&mut self, addrs: &[IpAddr]) {
        for &addr in addrs {
            if self.enrich.hosts.latest_is_other(addr)
                && let Err(error) = self.maps.mark_shared(addr)
            {
                warn!("{error:#}");
            }
        }
    }

    fn replace_policy(&mut self, policy: Policy, walks: &Walks) -> Result<()> {
        let tables = Tables::compile(&policy);
        self.catalog_loaded_ns = load_catalog(&tables, &mut self.maps)?;
        self.enrich.tables = tables;
        self.policy = policy;
        self.policy_generation += 1;
        self.load_credentials()?;
        self.load_commands()?;
        // The new catalog may cover names the hosts file maps.
        self.apply_hosts_file()?;
        // The new policy's workspace names, in every workspace, from scratch.
        let names = workspace::names(&self.policy.classes);
        for dir in &self.workspaces {
            walks.start(names.clone(), dir, self.policy_generation, Duration::ZERO);
        }
        Ok(())
    }

    fn add_workspace(&mut self, dir: &Path, wait: Duration, walks: &Walks) -> Result<()> {
        if !self.workspaces.insert(dir.to_path_buf()) {
            return Ok(());
        }
        let names = workspace::names(&self.policy.classes);
        let found = walks.start(names, dir, self.policy_generation, wait);
        self.add_finds(found)
    }

    /// Puts the identities of the catalog's credential files under each
    /// home in the kernel's map (workspaces are walked by `add_workspace`).
    fn load_credentials(&mut self) -> Result<()> {
        let classes = &self.policy.classes;
        let files: Vec<_> = self
            .homes
            .iter()
            .flat_map(|home| expand(classes, home))
            .collect();
        self.catalog = files.iter().map(|file| file.key).collect();
        self.catalog_paths = CatalogPaths::new(classes, &self.homes);
        self.add_files(files)
    }

    /// The catalog's commands, held at a session's exec to be judged.
    fn load_commands(&mut self) -> Result<()> {
        for name in Catalog::new(&self.policy).command_names() {
            self.maps.add_command(executable_hash(name))?;
        }
        Ok(())
    }

    fn add_files(&mut self, files: Vec<CredentialFile>) -> Result<()> {
        for file in files {
            self.maps.add_credential(file.key, file.class as u32)?;
            self.enrich.files.insert(file.key, file.path);
        }
        Ok(())
    }

    /// Workspace files holding secrets become credential files: of the
    /// class the catalog gives their name, else of what their findings name.
    fn add_finds(&mut self, finds: Vec<Find>) -> Result<()> {
        let mut files = Vec::new();
        for find in finds {
            if self.catalog.contains(&find.key) {
                continue;
            }
            let class = match find.named {
                Some(class) => class,
                None => match self.file_class(&self.classes_of(&find.findings)?)? {
                    Some(class) => class,
                    None => continue,
                },
            };
            files.push(CredentialFile {
                class,
                path: find.path,
                key: find.key,
            });
        }
        self.add_files(files)
    }

    fn credential_dirs(&self) -> BTreeSet<PathBuf> {
        self.homes
            .iter()
            .flat_map(|home| watch_dirs(&self.policy.classes, home))
            .collect()
    }

    /// Records the addresses the system resolver gave the exact
    /// infrastructure hostnames (as the hosts file's when it is what gave them).
    fn learn_resolved(&mut self, resolved: Resolved) -> Result<()> {
        for (name, addrs) in resolved {
            let domain = self.enrich.tables.lookup(&name);
            for addr in addrs {
                let source = if self.hosts_file.gives(&name, addr) {
                    NameSource::HostsFile
                } else {
                    NameSource::Dns
                };
                self.enrich
                    .hosts
                    .learn(&name, &[addr], source, domain.is_some());
                if let Some(domain) = domain.filter(|_| !is_localhost(addr)) {
                    let host = HostClass {
                        learned: source.code(),
                        ..domain.host
                    };
                    self.maps.add_infra_address(addr, host)?;
                }
            }
        }
        Ok(())
    }

    /// Reads /etc/hosts again if it changed. Entries it no longer has stay
    /// in the kernel's address maps until they age out.
    fn refresh_hosts_file(&mut self) -> Result<()> {
        if self.hosts_file.refresh() {
            self.apply_hosts_file()?;
        }
        Ok(())
    }

    /// Names the hosts file's addresses, and records those of names under
    /// the catalog's domains (the longest listed suffix decides, so an
    /// excluded sub-domain does not count). Localhost is never
    /// infrastructure, nor worth naming: blocking lists map thousands of
    /// names to 0.0.0.0.
    fn apply_hosts_file(&mut self) -> Result<()> {
        for (name, addr) in &self.hosts_file.entries {
            if is_localhost(*addr) {
                continue;
            }
            let domain = self.enrich.tables.lookup(name);
            self.enrich
                .hosts
                .learn(name, &[*addr], NameSource::HostsFile, domain.is_some());
            if let Some(domain) = domain {
                let host = HostClass {
                    learned: NameSource::HostsFile.code(),
                    ..domain.host
                };
                self.maps.add_infra_address(*addr, host)?;
            }
        }
        Ok(())
    }

    /// A scan finished: its findings are applied, for the read that asked
    /// for it and the reads that joined it, then each read is paid to its
    /// session's fence. Findings that cannot be applied pay nothing: the
    /// writes waiting on them stay stopped.
    fn scanned(&mut self, result: ScanResult, out: &mut Vec<Event>) -> Result<()> {
        let ScanResult {
            job,
            findings,
            joined,
            ..
        } = result;
        for job in std::iter::once(job).chain(joined) {
            self.found(&job, &findings, out)?;
            if job.owed {
                self.fence_scanned(job.session, out);
            }
        }
        Ok(())
    }

    /// An owed read of `session` is done with: the writes that waited for
    /// its last scan are judged now, with what the scans found.
    fn fence_scanned(&mut self, session: u32, out: &mut Vec<Event>) {
        for write in self.fence.scanned(session) {
            self.tls_write(write, out);
        }
    }

    /// A scan finished: a hit taints the session (in the kernel, where
    /// connects are judged) with every provider its findings name, and
    /// makes the file a credential file for all. A file the catalog names
    /// by its path (created after the last expansion, and read at once) is
    /// its class's credential whatever it holds.
    fn found(&mut self, job: &ScanJob, findings: &[Finding], out: &mut Vec<Event>) -> Result<()> {
        let mut classes = self.classes_of(findings)?;
        let named = self.catalog_paths.class_of(Path::new(&job.path));
        let file_class = match named {
            Some(class) => class,
            None => match self.file_class(&classes)? {
                Some(class) => class,
                None => return Ok(()),
            },
        };
        let by_path;
        if let Some(class) = named.filter(|named| classes.iter().all(|(c, _)| c != named)) {
            by_path = Finding {
                line: 0,
                rule: CATALOG_FILE_RULE.into(),
                provider: None,
                redacted: String::new(),
            };
            classes.insert(0, (class, &by_path));
        }
        let mask = classes
            .iter()
            .fold(0u64, |mask, (class, _)| mask | 1 << class);
        self.maps.add_user_taint(job.session, mask)?;
        self.maps.add_credential(job.key, file_class as u32)?;
        self.enrich.files.insert(job.key, PathBuf::from(&job.path));
        let ppid = self
            .enrich
            .procs
            .get(job.pid)
            .map_or(0, |process| process.ppid);
        for (class, finding) in classes {
            let credential = self.policy.classes[class].id.clone();
            self.enrich.credentials.record(
                job.session,
                1 << class,
                CredentialUse {
                    class: credential.clone(),
                    source: job.path.clone(),
                    at: job.at,
                    pid: job.pid,
                    comm: job.comm.clone(),
                },
            );
            out.push(Event {
                ts: SystemTime::now(),
                session: job.session,
                pid: job.pid,
                tid: job.pid,
                ppid,
                uid: job.uid,
                comm: job.comm.clone(),
                body: Body::Found(Found {
                    path: job.path.clone(),
                    line: finding.line,
                    rule: finding.rule.clone(),
                    provider: finding.provider.clone(),
                    redacted: finding.redacted.clone(),
                    credential,
                }),
            });
        }
        Ok(())
    }

    /// The classes findings give, each with the first finding giving it.
    fn classes_of<'f>(&self, findings: &'f [Finding]) -> Result<Vec<(usize, &'f Finding)>> {
        let mut classes: Vec<(usize, &Finding)> = Vec::new();
        for finding in findings {
            let class = self.class_of_finding(finding)?;
            if !classes.iter().any(|(known, _)| *known == class) {
                classes.push((class, finding));
            }
        }
        Ok(classes)
    }

    /// The class a finding gives: its provider's, or `found` when the
    /// provider is unknown (or has no class).
    fn class_of_finding(&self, finding: &Finding) -> Result<usize> {
        finding
            .provider
            .as_deref()
            .and_then(|provider| self.policy.class_of_provider(provider))
            .map_or_else(|| self.found_class(), Ok)
    }

    fn found_class(&self) -> Result<usize> {
        self.policy
            .class_index(FOUND_CLASS)
            .context("the policy has no `found` credential class")
    }

    /// The one class the kernel's credential map keeps for a file: the
    /// findings' class when they agree, else `found`, which counts against
    /// every provider, so no provider a finding names is left out.
    fn file_class<T>(&self, classes: &[(usize, T)]) -> Result<Option<usize>> {
        Ok(match classes {
            [] => None,
            [(class, _)] => Some(*class),
            _ => Some(self.found_class()?),
        })
    }
}

/// Whether `event` is an open the kernel owed to its session's scan fence.
fn owes_scan_of(event: &Event) -> bool {
    matches!(&event.body, Body::Open(open) if owes_scan(open.ret, open.flags, open.cred_classes))
}

/// The scan a read asks for (a successful read-only open of a file that is
/// not a known credential is worth a look at its content); `owed` when the
/// kernel counted it for the session's scan fence.
fn scan_job(event: &Event, owed: bool) -> Option<ScanJob> {
    let Body::Open(open) = &event.body else {
        return None;
    };
    if !owes_scan(open.ret, open.flags, open.cred_classes) || !worth_scanning(&open.resolved) {
        return None;
    }
    Some(ScanJob {
        owed,
        session: event.session,
        path: open.resolved.clone(),
        key: agentwatch_common::maps::CredKey {
            dev: agentwatch_common::offsets::kernel_dev(open.dev),
            _pad: 0,
            ino: open.ino,
        },
        pid: event.pid,
        uid: event.uid,
        comm: event.comm.clone(),
        at: event.ts,
    })
}

/// This process's regular files open without close-on-exec: descriptor,
/// open flags, path and metadata.
fn inheritable_files(pid: u32) -> Result<Vec<(i32, u32, PathBuf, std::fs::Metadata)>> {
    let mut files = Vec::new();
    let fds = format!("/proc/{pid}/fd");
    let entries = match std::fs::read_dir(&fds) {
        // It has exited: it holds nothing any more.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        listed => listed.with_context(|| format!("listing {fds}"))?,
    };
    for entry in entries {
        let Some(fd) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Some(flags) = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
            .ok()
            .as_deref()
            .and_then(fd_flags)
        else {
            continue;
        };
        let link = format!("{fds}/{fd}");
        if flags & libc::O_CLOEXEC as u32 != 0 {
            continue;
        }
        let (Ok(meta), Ok(path)) = (std::fs::metadata(&link), std::fs::read_link(&link)) else {
            continue;
        };
        if meta.is_file() {
            files.push((fd, flags, path, meta));
        }
    }
    Ok(files)
}

/// The `flags:` line of a /proc fdinfo file (octal).
fn fd_flags(fdinfo: &str) -> Option<u32> {
    let value = fdinfo
        .lines()
        .find_map(|line| line.strip_prefix("flags:"))?;
    u32::from_str_radix(value.trim(), 8).ok()
}

/// The policy's credential variables with the provider each belongs to,
/// for the content scanner's `NAME=value` rule.
pub fn credential_env(policy: &Policy) -> Vec<(String, String)> {
    policy
        .classes
        .iter()
        .flat_map(|class| {
            let provider = match &class.providers {
                Some(providers) if providers.len() == 1 => providers[0].clone(),
                _ => class.id.clone(),
            };
            class
                .env
                .iter()
                .map(move |name| (name.clone(), provider.clone()))
        })
        .collect()
}

impl Losses {
    /// Session processes whose TLS requests were judged by host, not read
    /// at `SSL_write`: the kernel's (ring buffer full) and user space's
    /// (attaching failed).
    pub fn tls_unprobed_total(&self) -> u64 {
        self.kernel.tls_processes_unprobed + self.tls_unprobed
    }

    /// One line per kind of loss, for the end of a run and for logs.
    pub fn describe(&self) -> Vec<String> {
        let kernel = &self.kernel;
        let mut lines = Vec::new();
        let lost = kernel.lost_total();
        if lost > 0 {
            lines.push(format!(
                "{lost} events were lost because the ring buffer was full (by kind: {:?})",
                &kernel.lost[1..]
            ));
        }
        if kernel.procs_full > 0 {
            lines.push(format!(
                "{} processes could not be tracked: the process map was full",
                kernel.procs_full
            ));
        }
        if kernel.pending_full + kernel.read_failed + self.decode_errors > 0 {
            lines.push(format!(
                "incomplete events: {} syscalls not followed to their exit, {} kernel reads failed, {} records undecodable",
                kernel.pending_full, kernel.read_failed, self.decode_errors
            ));
        }
        if kernel.held_full > 0 {
            lines.push(format!(
                "{} interpreters ran without their argv being matched against the agent list: too many were held at once",
                kernel.held_full
            ));
        }
        if kernel.socket_marks_full + kernel.socket_uninspectable + kernel.socket_state_lost > 0 {
            lines.push(format!(
                "sockets: {} could not be marked at connect, {} could not be watched at their \
                 first write (judged by address only), {} lost their state (judged anew)",
                kernel.socket_marks_full, kernel.socket_uninspectable, kernel.socket_state_lost
            ));
        }
        if kernel.infra_full + kernel.env_truncated + kernel.dns_malformed > 0 {
            lines.push(format!(
                "{} infrastructure addresses did not fit their map, {} environments were too large to scan fully, {} DNS responses were malformed",
                kernel.infra_full, kernel.env_truncated, kernel.dns_malformed
            ));
        }
        if kernel.dns_tcp_unfollowed > 0 {
            lines.push(format!(
                "{} DNS-over-TCP segments could not be followed (a connection seen mid-stream, a missing segment, or too many messages in one segment): the rest of those connections was not parsed",
                kernel.dns_tcp_unfollowed
            ));
        }
        if kernel.tls_writes_unjudged + kernel.commands_unjudged > 0 {
            lines.push(format!(
                "{} TLS requests were refused and {} cataloged commands killed unjudged: the ring \
                 buffer was full when they had to be shown to user space",
                kernel.tls_writes_unjudged, kernel.commands_unjudged
            ));
        }
        if kernel.iouring_unseen_opens > 0 {
            lines.push(format!(
                "{} files opened through io_uring into direct descriptors could not be known: \
                 their sessions were treated as holding every credential",
                kernel.iouring_unseen_opens
            ));
        }
        let unprobed = self.tls_unprobed_total();
        if unprobed > 0 {
            lines.push(format!(
                "{unprobed} processes' TLS requests could not be read at SSL_write (ring buffer \
                 full, or their probes failed to attach): their calls were judged by host"
            ));
        }
        if self.scans.dropped + self.scans.failed > 0 {
            lines.push(format!(
                "{} files read were not scanned for credentials (scan queue full), {} could not be read",
                self.scans.dropped, self.scans.failed
            ));
        }
        lines
    }
}
