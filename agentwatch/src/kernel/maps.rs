//! User-space handles on the maps the programs share with the daemon.

use std::net::IpAddr;

use agentwatch_common::{
    maps::{
        AllowKey, Config, CredKey, EnvName, HostClass, ProcInfo, SessionState, SocketKey,
        SocketState, counter,
    },
    names::{Kind, TlsProbeState, map_name},
};
use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, SockHash},
};

/// Sums of the kernel's per-CPU drop counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelCounters {
    /// Records that found the ring buffer full, by event kind.
    pub lost: [u64; Kind::COUNT as usize],
    pub procs_full: u64,
    pub pending_full: u64,
    pub read_failed: u64,
    pub infra_full: u64,
    pub dns_malformed: u64,
    pub dns_tcp_unfollowed: u64,
    pub env_truncated: u64,
    pub held_full: u64,
    pub socket_marks_full: u64,
    pub socket_uninspectable: u64,
    pub socket_state_lost: u64,
    pub mptcp_refused: u64,
    pub fast_open: u64,
    /// First writes judged by the name they asked for, by their address
    /// (they named nothing), or by their address because they could not be read.
    pub named_writes: u64,
    pub nameless_writes: u64,
    pub write_unreadable: u64,
    /// TLS writes stopped for their operation to be judged, refused at the
    /// socket after the judgment, and refused unjudged (ring buffer full).
    pub tls_writes_held: u64,
    /// TLS writes of untainted sessions stopped until their reads' scans
    /// were done (the scan fence).
    pub tls_writes_fenced: u64,
    /// Opens a task had reported already (same file, same flags): judged,
    /// counted here, not sent again.
    pub opens_repeated: u64,
    pub tls_writes_refused: u64,
    pub tls_writes_unjudged: u64,
    /// Cataloged commands stopped at exec, and killed unjudged.
    pub commands_held: u64,
    pub commands_unjudged: u64,
    /// Session processes stopped at their first use of OpenSSL for their
    /// `SSL_write` probes, and those left unprobed (ring buffer full).
    pub tls_processes_held: u64,
    pub tls_processes_unprobed: u64,
    /// io_uring opens whose file could not be known (direct descriptors):
    /// their sessions were treated as holding every credential.
    pub iouring_unseen_opens: u64,
}

impl KernelCounters {
    pub fn lost_total(&self) -> u64 {
        self.lost.iter().sum()
    }
}

pub struct KernelMaps {
    procs: HashMap<MapData, u32, ProcInfo>,
    spawners: HashMap<MapData, u32, u32>,
    sessions: HashMap<MapData, u32, SessionState>,
    user_taint: HashMap<MapData, u32, u64>,
    scans_owed: HashMap<MapData, u32, u64>,
    scans_paid: HashMap<MapData, u32, u64>,
    creds: HashMap<MapData, CredKey, u32>,
    domains: HashMap<MapData, u64, HostClass>,
    infra4: HashMap<MapData, u32, HostClass>,
    infra6: HashMap<MapData, [u8; 16], HostClass>,
    env_names: HashMap<MapData, u64, EnvName>,
    env_classes: HashMap<MapData, u32, u64>,
    agent_comms: HashMap<MapData, u64, u32>,
    agent_markers: HashMap<MapData, u64, u32>,
    agent_dirs: HashMap<MapData, u64, u32>,
    allow_once: HashMap<MapData, AllowKey, u8>,
    held: HashMap<MapData, u32, u32>,
    config: Array<MapData, Config>,
    counters: PerCpuArray<MapData, u64>,
    sockets: SockHash<MapData, SocketKey>,
    socket_states: HashMap<MapData, SocketKey, SocketState>,
    refused_writers: HashMap<MapData, u64, u8>,
    tls_procs: HashMap<MapData, u32, u8>,
    commands: HashMap<MapData, u64, u8>,
    command_grants: HashMap<MapData, u32, u64>,
    /// The first-write programs are attached ([`Config::first_write`]).
    first_write: bool,
    max_sockets: u32,
    capacities: std::collections::HashMap<&'static str, u32>,
}

/// Maps whose fill is reported: (label, map name).
const FILLED: &[(&str, &str)] = &[
    ("procs", map_name::PROCS),
    ("sessions", map_name::SESSIONS),
    ("credentials", map_name::CREDS),
    ("infrastructure_ipv4", map_name::INFRA4),
    ("infrastructure_ipv6", map_name::INFRA6),
    ("environment_classes", map_name::ENV_CLASSES),
];

/// How full a kernel map is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapFill {
    pub map: &'static str,
    pub entries: usize,
    pub capacity: u32,
}

fn take<T: TryFrom<aya::maps::Map, Error = MapError>>(ebpf: &mut Ebpf, name: &str) -> Result<T> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the object"))?;
    T::try_from(map).with_context(|| format!("map {name}"))
}

/// A map update that failed because the map is full says so.
fn update(result: Result<(), MapError>, what: &str) -> Result<()> {
    result.with_context(|| format!("updating {what} (is the map full?)"))
}

/// `max_entries` of a hash map, as the kernel created it.
fn capacity(ebpf: &Ebpf, name: &str) -> u32 {
    match ebpf.map(name) {
        Some(
            aya::maps::Map::HashMap(data)
            | aya::maps::Map::LruHashMap(data)
            | aya::maps::Map::SockHash(data),
        ) => data.info().map_or(0, |info| info.max_entries()),
        _ => 0,
    }
}

impl KernelMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        let capacities = FILLED
            .iter()
            .map(|(label, name)| (*label, capacity(ebpf, name)))
            .collect();
        let max_sockets = capacity(ebpf, map_name::SOCKETS);
        Ok(Self {
            capacities,
            procs: take(ebpf, map_name::PROCS)?,
            spawners: take(ebpf, map_name::SPAWNERS)?,
            sessions: take(ebpf, map_name::SESSIONS)?,
            user_taint: take(ebpf, map_name::USER_TAINT)?,
            scans_owed: take(ebpf, map_name::SCANS_OWED)?,
            scans_paid: take(ebpf, map_name::SCANS_PAID)?,
            creds: take(ebpf, map_name::CREDS)?,
            domains: take(ebpf, map_name::DOMAINS)?,
            infra4: take(ebpf, map_name::INFRA4)?,
            infra6: take(ebpf, map_name::INFRA6)?,
            env_names: take(ebpf, map_name::ENV_NAMES)?,
            env_classes: take(ebpf, map_name::ENV_CLASSES)?,
            agent_comms: take(ebpf, map_name::AGENT_COMMS)?,
            agent_markers: take(ebpf, map_name::AGENT_MARKERS)?,
            agent_dirs: take(ebpf, map_name::AGENT_DIRS)?,
            allow_once: take(ebpf, map_name::ALLOW_ONCE)?,
            held: take(ebpf, map_name::HELD)?,
            config: take(ebpf, map_name::CONFIG)?,
            counters: take(ebpf, map_name::COUNTERS)?,
            sockets: take(ebpf, map_name::SOCKETS)?,
            socket_states: take(ebpf, map_name::SOCKET_STATES)?,
            refused_writers: take(ebpf, map_name::REFUSED_WRITERS)?,
            tls_procs: take(ebpf, map_name::TLS_PROCS)?,
            commands: take(ebpf, map_name::COMMANDS)?,
            command_grants: take(ebpf, map_name::COMMAND_GRANTS)?,
            first_write: false,
            max_sockets,
        })
    }

    /// Children `tgid` forks from now on start in `session`.
    pub fn add_spawner(&mut self, tgid: u32, session: u32) -> Result<()> {
        update(self.spawners.insert(tgid, session, 0), "the spawner map")
    }

    pub fn remove_spawner(&mut self, tgid: u32) -> Result<()> {
        self.spawners
            .remove(&tgid)
            .context("unregistering the session's spawner")
    }

    /// Creates a session with what it already holds and what it does.
    pub fn add_session(&mut self, session: u32, state: SessionState) -> Result<()> {
        update(self.sessions.insert(session, state, 0), "the session map")
    }

    pub fn session(&self, session: u32) -> Option<SessionState> {
        self.sessions.get(&session, 0).ok()
    }

    /// Gives a session credential classes found by user space.
    pub fn add_user_taint(&mut self, session: u32, classes: u64) -> Result<()> {
        let held = self.user_taint.get(&session, 0).unwrap_or(0);
        update(
            self.user_taint.insert(session, held | classes, 0),
            "the user taint map",
        )
    }

    /// Whether the kernel counts `pid` in a session.
    pub fn is_tracked(&self, pid: u32) -> bool {
        self.procs.get(&pid, 0).is_ok()
    }

    /// Every tracked process with its session.
    pub fn processes(&self) -> Vec<(u32, u32)> {
        self.procs
            .iter()
            .filter_map(Result::ok)
            .map(|(pid, info)| (pid, info.session))
            .collect()
    }

    /// Every credential class `session` holds now: what the kernel saw it
    /// take and what its content scans found.
    pub fn credentials_held(&self, session: u32) -> u64 {
        self.session(session).map_or(0, |state| state.creds)
            | self.user_taint.get(&session, 0).unwrap_or(0)
    }

    /// Tells the kernel how many of `session`'s scannable reads user space
    /// has handled (the scan fence): after their findings are applied.
    pub fn set_scans_paid(&mut self, session: u32, paid: u64) -> Result<()> {
        update(
            self.scans_paid.insert(session, paid, 0),
            "the scan fence map",
        )
    }

    /// Processes the kernel currently counts as members of `session`.
    pub fn session_pids(&self, session: u32) -> Vec<u32> {
        self.procs
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, info)| info.session == session)
            .map(|(pid, _)| pid)
            .collect()
    }

    /// The class of the credential file `key` names, if it is one.
    pub fn credential_class(&self, key: &CredKey) -> Option<u32> {
        self.creds.get(key, 0).ok()
    }

    pub fn add_credential(&mut self, key: CredKey, class: u32) -> Result<()> {
        update(self.creds.insert(key, class, 0), "the credential map")
    }

    pub fn add_domain(&mut self, suffix_hash: u64, host: HostClass) -> Result<()> {
        update(self.domains.insert(suffix_hash, host, 0), "the domain map")
    }

    /// Records an infrastructure address; one already known as shared
    /// stays shared.
    pub fn add_infra_address(&mut self, addr: IpAddr, host: HostClass) -> Result<()> {
        match addr {
            IpAddr::V4(v4) => {
                let key = u32::from_ne_bytes(v4.octets());
                let host = host.learned_over(self.infra4.get(&key, 0).ok().as_ref());
                update(
                    self.infra4.insert(key, host, 0),
                    "the IPv4 infrastructure map",
                )
            }
            IpAddr::V6(v6) => {
                let key = v6.octets();
                let host = host.learned_over(self.infra6.get(&key, 0).ok().as_ref());
                update(
                    self.infra6.insert(key, host, 0),
                    "the IPv6 infrastructure map",
                )
            }
        }
    }

    /// DNS gave a known infrastructure address for a name that is not
    /// infrastructure too: connects to it wait for their first write's name.
    pub fn mark_shared(&mut self, addr: IpAddr) -> Result<()> {
        let known = match addr {
            IpAddr::V4(v4) => self.infra4.get(&u32::from_ne_bytes(v4.octets()), 0),
            IpAddr::V6(v6) => self.infra6.get(&v6.octets(), 0),
        };
        match known {
            Ok(host) if host.shared == 0 => {
                self.add_infra_address(addr, HostClass { shared: 1, ..host })
            }
            _ => Ok(()),
        }
    }

    pub fn add_env_name(&mut self, name_hash: u64, classes: u64) -> Result<()> {
        let held = self
            .env_names
            .get(&name_hash, 0)
            .map(|name| name.classes)
            .unwrap_or(0);
        update(
            self.env_names.insert(
                name_hash,
                EnvName {
                    classes: held | classes,
                },
                0,
            ),
            "the environment-name map",
        )
    }

    /// Records the credential classes in a running process's environment.
    pub fn add_env_classes(&mut self, pid: u32, classes: u64) -> Result<()> {
        update(
            self.env_classes.insert(pid, classes, 0),
            "the environment-class map",
        )
    }

    /// An executable name (as `comm` hashes it) or environment marker that
    /// opens a session for `agent` at exec.
    pub fn add_agent_comm(&mut self, hash: u64, agent: u32) -> Result<()> {
        update(
            self.agent_comms.insert(hash, agent, 0),
            "the agent-name map",
        )
    }

    pub fn add_agent_marker(&mut self, hash: u64, agent: u32) -> Result<()> {
        update(
            self.agent_markers.insert(hash, agent, 0),
            "the agent-marker map",
        )
    }

    pub fn add_agent_directory(&mut self, hash: u64, agent: u32) -> Result<()> {
        update(
            self.agent_dirs.insert(hash, agent, 0),
            "the agent-directory map",
        )
    }

    /// Puts a running process into a session (found by a /proc scan or
    /// matched by argv while held at exec); its children follow in the kernel.
    pub fn add_process(&mut self, pid: u32, session: u32) -> Result<()> {
        update(
            self.procs.insert(pid, ProcInfo { session, _pad: 0 }, 0),
            "the process map",
        )
    }

    /// Forgets a session whose processes have all exited.
    pub fn remove_session(&mut self, session: u32) {
        let _ = self.sessions.remove(&session);
        let _ = self.user_taint.remove(&session);
        let _ = self.scans_owed.remove(&session);
        let _ = self.scans_paid.remove(&session);
    }

    /// Replaces a session's flags (the session is stopped or dead, so the
    /// kernel is not updating its state meanwhile).
    pub fn set_session_flags(&mut self, session: u32, flags: u32) -> Result<()> {
        let state = self
            .sessions
            .get(&session, 0)
            .with_context(|| format!("session {session} is gone"))?;
        update(
            self.sessions
                .insert(session, SessionState { flags, ..state }, 0),
            "the session map",
        )
    }

    /// Interpreters the kernel stopped at exec that user space has not
    /// released yet.
    pub fn held(&self) -> Vec<u32> {
        self.held.keys().filter_map(Result::ok).collect()
    }

    pub fn release_held(&mut self, pid: u32) {
        let _ = self.held.remove(&pid);
    }

    /// Lets the session's next connect to `addr` through, once.
    pub fn allow_once(&mut self, session: u32, addr: IpAddr) -> Result<()> {
        let mut key = AllowKey {
            session,
            ..AllowKey::default()
        };
        match addr {
            IpAddr::V4(v4) => key.addr[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => key.addr = v6.octets(),
        }
        update(self.allow_once.insert(key, 1, 0), "the approval map")
    }

    /// The thread's next write to an inspected infrastructure socket is
    /// refused (its TLS request was judged and refused).
    pub fn refuse_writer(&mut self, pid: u32, tid: u32) -> Result<()> {
        let pid_tgid = (u64::from(pid) << 32) | u64::from(tid);
        update(
            self.refused_writers.insert(pid_tgid, 1, 0),
            "the refused-writer map",
        )
    }

    /// Whether process `pid`'s TLS requests are read at `SSL_write` (its
    /// probes attached) or judged by host (they could not be).
    pub fn set_tls_state(&mut self, pid: u32, state: TlsProbeState) -> Result<()> {
        update(
            self.tls_procs.insert(pid, state.code(), 0),
            "the TLS process map",
        )
    }

    /// A session's exec of the command named `hash` (as `comm` hashes it)
    /// is stopped for its argv to be judged.
    pub fn add_command(&mut self, hash: u64) -> Result<()> {
        update(self.commands.insert(hash, 1, 0), "the command map")
    }

    /// Lets process `pid` use `classes` with its provider's hosts until it
    /// execs or exits (a command judged to only read, or approved).
    pub fn grant_command(&mut self, pid: u32, classes: u64) -> Result<()> {
        update(
            self.command_grants.insert(pid, classes, 0),
            "the command-grant map",
        )
    }

    /// Entries in the maps that can fill up, against their capacity.
    pub fn fill(&self) -> Vec<MapFill> {
        fn entries<K: aya::Pod, V: aya::Pod>(handle: &HashMap<MapData, K, V>) -> usize {
            handle.keys().filter_map(Result::ok).count()
        }
        let counts = [
            entries(&self.procs),
            entries(&self.sessions),
            entries(&self.creds),
            entries(&self.infra4),
            entries(&self.infra6),
            entries(&self.env_classes),
        ];
        FILLED
            .iter()
            .zip(counts)
            .map(|((map, _), entries)| MapFill {
                map,
                entries,
                capacity: self.capacities.get(map).copied().unwrap_or(0),
            })
            .collect()
    }

    /// Writes the run-time settings; whether the first-write programs are
    /// attached is kept from [`Self::set_first_write`].
    pub fn set_config(&mut self, config: Config) -> Result<()> {
        let config = Config {
            first_write: u32::from(self.first_write),
            max_sockets: self.max_sockets,
            ..config
        };
        update(self.config.set(0, config, 0), "the config map")
    }

    /// Tells the connect hooks that shared addresses may wait for the name
    /// of their first write.
    pub fn set_first_write(&mut self, attached: bool) -> Result<()> {
        self.first_write = attached;
        let config = self.config.get(&0, 0).context("reading the config map")?;
        self.set_config(config)
    }

    /// Takes a socket whose first write named a harmless host out of the
    /// sockhash: its writes then cost nothing. Gone already is fine.
    pub fn forget_socket(&mut self, key: &SocketKey) {
        let _ = self.sockets.remove(key);
        let _ = self.socket_states.remove(key);
    }

    pub fn counters(&self) -> Result<KernelCounters> {
        let sum = |index: u32| -> Result<u64> { Ok(self.counters.get(&index, 0)?.iter().sum()) };
        let mut counters = KernelCounters::default();
        for code in 0..Kind::COUNT {
            counters.lost[code as usize] = sum(counter::LOST_BASE + code)?;
        }
        counters.procs_full = sum(counter::PROCS_FULL)?;
        counters.pending_full = sum(counter::PENDING_FULL)?;
        counters.read_failed = sum(counter::READ_FAILED)?;
        counters.infra_full = sum(counter::INFRA_FULL)?;
        counters.dns_malformed = sum(counter::DNS_MALFORMED)?;
        counters.dns_tcp_unfollowed = sum(counter::DNS_TCP_UNFOLLOWED)?;
        counters.env_truncated = sum(counter::ENV_TRUNCATED)?;
        counters.held_full = sum(counter::HELD_FULL)?;
        counters.socket_marks_full = sum(counter::SOCKET_MARKS_FULL)?;
        counters.socket_uninspectable = sum(counter::SOCKET_UNINSPECTABLE)?;
        counters.socket_state_lost = sum(counter::SOCKET_STATE_LOST)?;
        counters.mptcp_refused = sum(counter::MPTCP_REFUSED)?;
        counters.fast_open = sum(counter::FAST_OPEN)?;
        counters.named_writes = sum(counter::NAMED_WRITES)?;
        counters.nameless_writes = sum(counter::NAMELESS_WRITES)?;
        counters.write_unreadable = sum(counter::WRITE_UNREADABLE)?;
        counters.tls_writes_held = sum(counter::TLS_WRITES_HELD)?;
        counters.tls_writes_fenced = sum(counter::TLS_WRITES_FENCED)?;
        counters.opens_repeated = sum(counter::OPENS_REPEATED)?;
        counters.tls_writes_refused = sum(counter::TLS_WRITES_REFUSED)?;
        counters.tls_writes_unjudged = sum(counter::TLS_WRITES_UNJUDGED)?;
        counters.commands_held = sum(counter::COMMANDS_HELD)?;
        counters.commands_unjudged = sum(counter::COMMANDS_UNJUDGED)?;
        counters.tls_processes_held = sum(counter::TLS_PROCESSES_HELD)?;
        counters.tls_processes_unprobed = sum(counter::TLS_PROCESSES_UNPROBED)?;
        counters.iouring_unseen_opens = sum(counter::IOURING_UNSEEN_OPENS)?;
        Ok(counters)
    }
}
