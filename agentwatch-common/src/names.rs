//! Every name and code the kernel programs and user space share: each enum
//! here is the one place its codes (on the wire, in maps) and its names (in
//! events, policies, metrics and the control protocol) are written down.
//!
//! Codes stay plain integers in `#[repr(C)]` structs so that a corrupt record
//! cannot produce an invalid Rust enum; they become enums through `TryFrom`,
//! which refuses a code it does not know rather than guessing.

/// A code no variant of the enum has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownCode(pub u32);

/// A name no variant of the enum has (parsing policies and command lines).
#[cfg(feature = "user")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownName {
    pub what: &'static str,
    pub name: String,
    pub expected: &'static [&'static str],
}

#[cfg(feature = "user")]
impl core::fmt::Display for UnknownName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "unknown {} {:?} (expected one of {})",
            self.what,
            self.name,
            self.expected.join(", ")
        )
    }
}

#[cfg(feature = "user")]
impl std::error::Error for UnknownName {}

/// Declares an enum with a code and a name per variant, and the conversions
/// between them (and, in user space, serde and `FromStr` through the names).
macro_rules! named_codes {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: $repr:ty, $what:literal {
            $($(#[$variant_meta:meta])* $variant:ident = $code:literal => $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[repr($repr)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$variant_meta])* $variant = $code,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            pub const fn code(self) -> $repr {
                self as $repr
            }
        }

        impl TryFrom<$repr> for $name {
            type Error = UnknownCode;

            fn try_from(code: $repr) -> Result<Self, UnknownCode> {
                match code {
                    $($code => Ok($name::$variant),)+
                    other => Err(UnknownCode(other as u32)),
                }
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(self.name())
            }
        }

        #[cfg(feature = "user")]
        impl core::str::FromStr for $name {
            type Err = UnknownName;

            fn from_str(text: &str) -> Result<Self, UnknownName> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|value| value.name() == text)
                    .ok_or_else(|| UnknownName {
                        what: $what,
                        name: text.into(),
                        expected: Self::NAMES,
                    })
            }
        }

        #[cfg(feature = "user")]
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.name())
            }
        }

        #[cfg(feature = "user")]
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse()
                    .map_err(|_| serde::de::Error::unknown_variant(&text, Self::NAMES))
            }
        }
    };
}

named_codes! {
    /// What a session does when it connects to an infrastructure host holding
    /// a credential that counts against it (`SessionState::action`,
    /// `AlertEvent::action`, a policy's `action`).
    #[derive(Default)]
    pub enum Action: u32, "action" {
        /// Record the connection only.
        Observe = 0 => "observe",
        /// Allow it and raise an alert.
        Alert = 1 => "alert",
        /// Refuse it (EPERM) and raise an alert.
        #[default]
        Block = 2 => "block",
        /// Refuse it, kill every process of the session, raise an alert.
        Kill = 3 => "kill",
        /// Refuse it, stop the session and ask a human.
        Ask = 4 => "ask",
    }
}

named_codes! {
    /// `EventHeader::kind`: which record struct follows the header.
    pub enum Kind: u32, "event kind" {
        Open = 1 => "open",
        Connect = 2 => "connect",
        Exec = 3 => "exec",
        Fork = 4 => "fork",
        Exit = 5 => "exit",
        /// A connection to an infrastructure host by a session holding a
        /// credential that counts against it (sent by the cgroup hook).
        Alert = 6 => "alert",
        /// A DNS response seen on the host (no process context).
        Dns = 7 => "dns",
        /// What a watched TCP socket's first write named (sent by sk_msg).
        Name = 8 => "name",
        /// The plaintext of a tainted session's TLS write, its writer
        /// stopped before encryption until user space judges it (uprobe).
        TlsWrite = 9 => "tls-write",
        /// A session's process started using probed OpenSSL; it is stopped
        /// until user space has put the `SSL_write` probes on it (uprobe).
        TlsProcess = 10 => "tls-process",
    }
}

impl Kind {
    /// One past the highest code; sizes per-kind counters (at most 16:
    /// `counter::PROCS_FULL` follows them).
    pub const COUNT: u32 = 11;
}

named_codes! {
    /// `TLS_PROCS` values: whether a session process's TLS requests are
    /// read at `SSL_write`. The write probes are attached per process, so
    /// that no other process on the machine pays for them.
    pub enum TlsProbeState: u8, "TLS probe state" {
        /// Stopped at its first use of OpenSSL, awaiting its probes.
        Pending = 1 => "pending",
        /// Its `SSL_write` calls are probed: its requests are judged there.
        Probed = 2 => "probed",
        /// Its probes could not be attached: judged by host, as without TLS.
        Unprobed = 3 => "unprobed",
    }
}

named_codes! {
    /// Which system call an `OpenEvent` came from.
    pub enum OpenSyscall: u8, "open syscall" {
        Open = 1 => "open",
        Openat = 2 => "openat",
        Openat2 = 3 => "openat2",
        Creat = 4 => "creat",
        /// Not a syscall: a file open in `run` without close-on-exec, which
        /// the session's first process inherits (`3<FILE`).
        Inherited = 5 => "inherited",
        /// `open_by_handle_at` (root): no path, only the file handle.
        OpenByHandleAt = 6 => "open_by_handle_at",
        /// `IORING_OP_OPENAT`/`IORING_OP_OPENAT2` through an io_uring: no
        /// path, only the descriptor it gave.
        IoUring = 7 => "io_uring",
    }
}

named_codes! {
    /// What happened to a session (`kind: "session"` events).
    pub enum SessionTransition: u32, "session state" {
        Start = 1 => "start",
        End = 2 => "end",
    }
}

named_codes! {
    /// How the daemon found a session's agent.
    pub enum FoundBy: u32, "discovery" {
        /// The kernel matched the executable (or its environment) at exec.
        Exec = 1 => "exec",
        /// User space matched the argv of an interpreter the kernel held.
        Argv = 2 => "argv",
        /// Found running in /proc when the daemon started.
        Running = 3 => "running",
        /// The kernel opened it but its exec event was lost.
        LostEvent = 4 => "lost-event",
        /// `agentwatch run` asked for it, for the command it started.
        Run = 5 => "run",
    }
}

named_codes! {
    /// How an ask-mode request was answered.
    pub enum Verdict: u32, "verdict" {
        Approve = 1 => "approve",
        Deny = 2 => "deny",
        /// Nobody answered in time: treated as a denial.
        Timeout = 3 => "timeout",
    }
}

named_codes! {
    /// How the name of a connection's host was learned (`learned` in alerts
    /// and connect events; `HostClass::learned` in the address maps).
    pub enum NameSource: u32, "name source" {
        /// The server name of a TLS ClientHello, at the socket's first write.
        Sni = 1 => "sni",
        /// The `Host:` header (or absolute URI) of a plaintext HTTP request.
        Host = 2 => "host",
        /// The target of an HTTP proxy's `CONNECT host:port`.
        ConnectProxy = 3 => "connect-proxy",
        /// A DNS answer for the address (UDP or TCP, or the system resolver).
        Dns = 4 => "dns",
        /// An `/etc/hosts` entry for the address.
        HostsFile = 5 => "hosts-file",
        /// Nothing named the host: the address alone was judged.
        Address = 6 => "address",
    }
}

named_codes! {
    /// What a watched TCP socket's first write decided (`SocketState::judgment`).
    pub enum SocketJudgment: u32, "socket judgment" {
        /// Nothing written yet.
        Pending = 0 => "pending",
        /// It named an infrastructure host: every write is judged against
        /// the session's credentials at the time.
        Infrastructure = 1 => "infrastructure",
        /// It named another host: its writes pass, and user space takes it
        /// out of the sockhash so they cost nothing.
        Harmless = 2 => "harmless",
        /// A human approved its connect.
        Approved = 3 => "approved",
        /// It named an infrastructure host in a TLS ClientHello from a
        /// process whose libssl is probed: each request is judged by its
        /// operation at `SSL_write`, before encryption, and its writes pass
        /// unless that judgment refused the writing thread.
        TlsInspected = 4 => "tls-inspected",
    }
}

/// Held shared by each `run`'s teardown child until it has released its
/// last kernel object; a start takes it exclusively before attaching.
pub const DETACHING_LOCK: &str = "/run/agentwatch-detaching.lock";

/// Names of the maps in the kernel object, for `#[map]` statics (whose
/// identifiers are these names) and for user space's lookups. A test in
/// agentwatch checks that every one is in the built object.
pub mod map_name {
    pub const PROCS: &str = "PROCS";
    pub const SPAWNERS: &str = "SPAWNERS";
    pub const SESSIONS: &str = "SESSIONS";
    pub const USER_TAINT: &str = "USER_TAINT";
    pub const SCANS_OWED: &str = "SCANS_OWED";
    pub const SCANS_PAID: &str = "SCANS_PAID";
    pub const REPORTED_OPENS: &str = "REPORTED_OPENS";
    pub const CREDS: &str = "CREDS";
    pub const DOMAINS: &str = "DOMAINS";
    pub const INFRA4: &str = "INFRA4";
    pub const INFRA6: &str = "INFRA6";
    pub const ENV_NAMES: &str = "ENV_NAMES";
    pub const ENV_CLASSES: &str = "ENV_CLASSES";
    pub const AGENT_COMMS: &str = "AGENT_COMMS";
    pub const AGENT_MARKERS: &str = "AGENT_MARKERS";
    pub const AGENT_DIRS: &str = "AGENT_DIRS";
    pub const HELD: &str = "HELD";
    pub const ALLOW_ONCE: &str = "ALLOW_ONCE";
    pub const SOCKET_MARKS: &str = "SOCKET_MARKS";
    pub const SOCKETS: &str = "SOCKETS";
    pub const SOCKET_STATES: &str = "SOCKET_STATES";
    pub const CONFIG: &str = "CONFIG";
    pub const COUNTERS: &str = "COUNTERS";
    pub const EVENTS: &str = "EVENTS";
    pub const TLS_PROCS: &str = "TLS_PROCS";
    pub const REFUSED_WRITERS: &str = "REFUSED_WRITERS";
    pub const COMMANDS: &str = "COMMANDS";
    pub const COMMAND_GRANTS: &str = "COMMAND_GRANTS";
    /// Every name user space looks up.
    pub const ALL: &[&str] = &[
        PROCS,
        SPAWNERS,
        SESSIONS,
        USER_TAINT,
        SCANS_OWED,
        SCANS_PAID,
        REPORTED_OPENS,
        CREDS,
        DOMAINS,
        INFRA4,
        INFRA6,
        ENV_NAMES,
        ENV_CLASSES,
        AGENT_COMMS,
        AGENT_MARKERS,
        AGENT_DIRS,
        HELD,
        ALLOW_ONCE,
        SOCKET_MARKS,
        SOCKETS,
        SOCKET_STATES,
        CONFIG,
        COUNTERS,
        EVENTS,
        TLS_PROCS,
        REFUSED_WRITERS,
        COMMANDS,
        COMMAND_GRANTS,
    ];
}

named_codes! {
    /// What an operation (an API call, a command) does to a provider's
    /// infrastructure. Declared from least to most severe: the most severe
    /// part of a call (one field of a batched GraphQL mutation) judges it.
    #[derive(PartialOrd, Ord)]
    pub enum OperationClass: u32, "operation class" {
        /// Only reads (a GraphQL query, `GET`, `terraform plan`).
        Reads = 0 => "reads",
        /// Changes something that can be changed back (a deploy, a restart).
        Changes = 1 => "changes",
        /// What the call does could not be seen (a body cut before its
        /// operation, curl's `-d @file`). Never a catalog entry's class.
        Unknown = 2 => "unknown",
        /// Destroys something (`volumeDelete`, `terraform destroy`).
        Destructive = 3 => "destructive",
    }
}

named_codes! {
    /// How an operation was named.
    pub enum OperationKind: u32, "operation kind" {
        GraphqlMutation = 1 => "graphql-mutation",
        GraphqlQuery = 2 => "graphql-query",
        /// A REST call: method and path.
        Http = 3 => "http",
        /// An AWS query (`Action=`) or JSON (`X-Amz-Target`) protocol action.
        AwsAction = 4 => "aws-action",
        /// A command line (argv) of a cataloged tool.
        Command = 5 => "command",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names_round_trip() {
        for action in Action::ALL {
            assert_eq!(Action::try_from(action.code()), Ok(*action));
        }
        for kind in Kind::ALL {
            assert!(kind.code() < Kind::COUNT);
            assert_eq!(Kind::try_from(kind.code()), Ok(*kind));
        }
        assert_eq!(Action::try_from(5), Err(UnknownCode(5)));
        assert_eq!(Kind::try_from(0), Err(UnknownCode(0)));
        assert_eq!(OpenSyscall::try_from(9), Err(UnknownCode(9)));
        assert_eq!(FoundBy::LostEvent.name(), "lost-event");
    }
}
