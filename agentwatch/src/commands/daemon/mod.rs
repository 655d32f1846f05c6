//! `agentwatch daemon`: watches every agent on the machine. Sessions open
//! by themselves for agent processes (in the kernel at exec, or from a /proc
//! scan at start), end when their last process exits, and are judged like
//! `run`'s; `ask` stops a session until a human answers on the control socket.
//! Every event goes to the event log (`sinks::event_log`) and to the control
//! socket's clients; alerts also to stderr, at warning priority in the journal.

mod ask;
pub mod discovery;
mod requests;
pub mod saved;
mod service;
mod sessions;
pub mod shared;
mod status;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use agentwatch_common::{
    event::agent::{HELD, PAUSED},
    maps::{DEFAULT_MAX_SOCKETS, DEFAULT_RING_BUFFER_BYTES},
    names::{FoundBy, Verdict},
};
use anyhow::{Context as _, Result};
use nix::{
    sys::signal::{Signal, kill},
    unistd::{Group, Pid},
};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use tracing::{info, warn};

use crate::{
    control::{authorize::Authority, listener},
    engine::{Engine, EngineOptions},
    event::{Body, Event},
    kernel::probes,
    policy::{Action, Policy},
    privileges::require_privileges,
    respond::{Responder, stopped::StoppedSessions},
    sinks::{
        alert_line::alert_line,
        desktop,
        event_log::{EventLog, LogOptions},
        journal,
        prometheus::{self, ListenAddr, Metrics},
    },
    sys::{state, users},
};
use discovery::Agents;
use requests::Requests;
use saved::SavedSessions;
use service::ServiceManager;
use shared::{Handler, ToLoop};

pub const DEFAULT_METRICS: &str = "127.0.0.1:9464";

/// Seconds without a session before the syscall tracepoints are detached:
/// short enough that an idle machine pays nothing, long enough that an
/// agent restarting in a loop is not paused at every exec.
const IDLE_TICKS: u32 = 5;

/// `agentwatch daemon`'s options, as the command line gives them.
#[derive(clap::Args)]
pub struct DaemonOptions {
    /// Policy file extending the built-in catalog, with the drop-ins in
    /// policy.d beside it (default /etc/agentwatch/policy.toml, if present;
    /// reloaded on SIGHUP).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// observe, alert, block, kill or ask (default: the policy's).
    #[arg(long, value_name = "MODE")]
    pub mode: Option<Action>,
    /// Where Prometheus scrapes /metrics (and probes /healthz): HOST:PORT,
    /// or :PORT for every interface.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_METRICS)]
    pub metrics: ListenAddr,
    #[arg(long, value_name = "PATH", default_value = crate::control::protocol::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Where sessions (and those stopped awaiting approval) are saved for
    /// the next daemon; it must outlive the daemon, unlike the socket's.
    #[arg(long, value_name = "DIR", default_value = state::DEFAULT_DIR)]
    pub state_dir: PathBuf,
    #[command(flatten)]
    pub log: LogOptions,
    /// Group whose members may approve and deny, besides root.
    #[arg(long, value_name = "GROUP")]
    pub admin_group: Option<String>,
    /// Home directory whose `~/` credentials count, besides those of
    /// root and login users in the user database (repeatable).
    #[arg(long = "home", value_name = "DIR")]
    pub homes: Vec<PathBuf>,
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_RING_BUFFER_BYTES, value_parser = crate::parse_ring_buffer_size)]
    pub ring_buffer_size: u32,
    /// Processes the kernel can track in sessions at once [default: as
    /// many as the kernel can run: the smaller of kernel.pid_max and
    /// kernel.threads-max]. Fewer, and a session's new process beyond them
    /// runs untracked (counted and reported).
    #[arg(long, value_name = "N")]
    pub max_processes: Option<u32>,
    /// Sessions' TCP sockets watched for the name of their first write at
    /// once; beyond that they are judged by address as they send.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_SOCKETS, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_sockets: u32,
}

/// A session the daemon knows about; its id is its root process's pid.
struct Session {
    agent: String,
    started: SystemTime,
    action: Action,
    found_by: FoundBy,
    /// The pending request it is stopped for.
    stopped_for: Option<u64>,
}

struct Daemon {
    engine: Engine,
    policy_path: Option<PathBuf>,
    mode: Option<Action>,
    action: Action,
    ask_timeout: Duration,
    agents: Agents,
    sessions: BTreeMap<u32, Session>,
    requests: Requests,
    responder: Responder,
    saved: SavedSessions,
    /// Seconds without any session; the tracepoints detach at IDLE_TICKS.
    idle_ticks: u32,
    handler: Arc<Handler>,
    metrics: Arc<Mutex<Metrics>>,
    log: EventLog,
    alerts: u64,
    service: ServiceManager,
}

/// The control socket's file, removed however the daemon ends, so a daemon
/// that fails to start leaves nothing for clients to block on.
struct SocketFile<'a>(&'a Path);

impl Drop for SocketFile<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

pub async fn daemon(options: DaemonOptions) -> Result<i32> {
    require_privileges("agentwatch daemon")?;
    // Handlers first: a SIGHUP or SIGTERM that comes while the programs load
    // (seconds, on a slow machine) is acted on once the loop starts, instead
    // of killing the daemon by the signal's default action.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let policy = Policy::load_config(options.config.as_deref())?;
    let action = options.mode.unwrap_or(policy.action);
    let admin_gid = match &options.admin_group {
        Some(name) => Some(
            Group::from_name(name)?
                .with_context(|| format!("no group named {name}"))?
                .gid
                .as_raw(),
        ),
        None => None,
    };
    // Every bind first: a second daemon, or a metrics port in use, stops
    // here, before the kernel programs load.
    let listener = listener::bind(&options.socket, admin_gid)?;
    let _socket_file = SocketFile(&options.socket);
    let metrics_listener = prometheus::bind(options.metrics).await?;
    state::create_dir(&options.state_dir)
        .with_context(|| format!("creating {}", options.state_dir.display()))?;
    let stopped = StoppedSessions::in_dir(&options.state_dir);
    let denied = stopped.deny_leftovers();
    if denied > 0 {
        journal::warning(format!(
            "agentwatch: killed {denied} processes an earlier daemon left stopped awaiting approval (no answer means deny)"
        ));
    }
    let log = EventLog::start(options.log.clone()).context("starting the event log")?;
    let agents = Agents::new(policy.agents.clone());
    let ask_timeout = policy.ask_timeout;
    let metrics = Metrics::new();
    metrics.know_providers(provider_ids(&policy));
    metrics.record_config_load(true);
    let engine = Engine::start(EngineOptions {
        ring_buffer_bytes: options.ring_buffer_size,
        max_processes: options
            .max_processes
            .unwrap_or_else(probes::kernel_process_capacity),
        max_sockets: options.max_sockets,
        policy,
        homes: user_homes().into_iter().chain(options.homes).collect(),
    })
    .await?;
    metrics.record_attach(
        probes::programs_attached_at_load(),
        engine.probes().attach_failures.iter().map(|f| f.program),
    );
    let metrics_addr = metrics_listener.local_addr()?;
    let metrics = Arc::new(Mutex::new(metrics));
    prometheus::serve(metrics_listener, metrics.clone());
    let (to_loop, mut from_clients) = mpsc::channel(64);
    let handler = Arc::new(Handler::new(to_loop, action));
    tokio::spawn(listener::serve(
        listener,
        Arc::new(Authority { admin_gid }),
        handler.clone(),
    ));
    let mut daemon = Daemon {
        engine,
        policy_path: options.config,
        mode: options.mode,
        action,
        ask_timeout,
        agents,
        sessions: BTreeMap::new(),
        requests: Requests::default(),
        responder: Responder::new(Some(stopped)),
        saved: SavedSessions::in_dir(&options.state_dir),
        idle_ticks: 0,
        handler,
        metrics,
        log,
        alerts: 0,
        service: ServiceManager::new(),
    };
    daemon.enable_discovery()?;
    daemon.adopt_running_agents()?;
    if daemon.sessions.is_empty() {
        daemon.set_watching(false)?;
    }
    let watching = format!(
        "daemon watching agents (mode {action}); metrics on http://{metrics_addr}/metrics, control socket {}, event log {}",
        options.socket.display(),
        options.log.path.display()
    );
    journal::info(format!("agentwatch: {watching}"));
    daemon.service.ready(&watching);

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut events = Vec::new();
    loop {
        tokio::select! {
            stepped = daemon.engine.step(&mut events) => {
                if let Err(error) = stepped {
                    warn!("{error:#}");
                }
            }
            Some(message) = from_clients.recv() => match message {
                ToLoop::Decision(decision) => daemon.decide(decision),
                ToLoop::Run(request) => daemon.open_run(request).await,
            },
            _ = tick.tick() => daemon.tick().await,
            _ = hangup.recv() => daemon.reload(),
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
        for event in events.drain(..) {
            daemon.handle(event);
        }
        daemon.sweep().await;
    }
    daemon.service.stopping();
    daemon.shutdown().await;
    Ok(0)
}

fn provider_ids(policy: &Policy) -> impl Iterator<Item = &str> {
    policy.providers.iter().map(|provider| provider.id.as_str())
}

/// Home directories of root and of login users (uid ≥ 1000).
fn user_homes() -> Vec<PathBuf> {
    users::all()
        .into_iter()
        .filter(|user| user.uid == 0 || (1000..65534).contains(&user.uid))
        .map(|user| user.home)
        .filter(|home| home.is_dir())
        .collect()
}

impl Daemon {
    fn enable_discovery(&mut self) -> Result<()> {
        self.agents.load_into(&mut self.engine)?;
        self.engine.configure_discovery(self.action)
    }

    /// Attaches the syscall tracepoints (a session exists) or detaches them
    /// (none has for a while).
    fn set_watching(&mut self, on: bool) -> Result<()> {
        if on == self.engine.probes().syscalls_attached() {
            return Ok(());
        }
        self.engine.set_syscalls_attached(on, self.action)?;
        self.metrics
            .lock()
            .expect("metrics")
            .syscall_probes_attached
            .set(i64::from(on));
        info!(
            "syscall tracepoints {}",
            if on {
                "attached"
            } else {
                "detached: no session to watch"
            }
        );
        Ok(())
    }

    fn handle(&mut self, mut event: Event) {
        {
            let metrics = self.metrics.lock().expect("metrics");
            let kind = event.body.kind();
            metrics.events.with_label_values(&[kind]).inc();
            if let Ok(age) = SystemTime::now().duration_since(event.ts) {
                metrics.decision_latency.observe(age.as_secs_f64());
            }
        }
        match &mut event.body {
            Body::Exec(exec) if exec.agent_id & HELD != 0 => {
                let matched = self.release_held(event.pid, &exec.argv);
                let Some(agent) = matched else {
                    return;
                };
                exec.agent = Some(self.agents.name(agent));
                event.session = event.pid;
            }
            Body::Exec(exec)
                if exec.agent_id != 0 && !self.sessions.contains_key(&event.session) =>
            {
                let agent = exec.agent_id & !PAUSED;
                exec.agent = Some(self.agents.name(agent));
                if let Err(error) = self.open_session(event.session, agent, FoundBy::Exec) {
                    warn!("session {}: {error:#}", event.session);
                }
                if exec.agent_id & PAUSED != 0 {
                    // Stopped at exec while the tracepoints were detached;
                    // open_session has attached them.
                    let _ = kill(Pid::from_raw(event.pid as i32), Signal::SIGCONT);
                }
            }
            Body::Alert(alert) => {
                let alert = alert.clone();
                self.alerts += 1;
                self.metrics.lock().expect("metrics").count_alert(&alert);
                if let Some(line) = alert_line(&event, self.engine.tables()) {
                    journal::warning(line);
                }
                self.on_alert(&event, &alert);
            }
            Body::Operation(call) => {
                self.metrics.lock().expect("metrics").count_operation(call);
            }
            _ => {}
        }
        self.publish(event);
    }

    /// Kills what is left of sessions the kernel or a denial killed.
    async fn sweep(&mut self) {
        self.responder.sweep(&mut self.engine).await;
    }

    /// Once a second: sessions that ended, unanswered requests, metrics and
    /// the status the control socket serves.
    async fn tick(&mut self) {
        self.service.keep_alive();
        self.metrics.lock().expect("metrics").loop_alive();
        for id in self.requests.expired(Instant::now()) {
            let _ = self.resolve(id, Verdict::Timeout);
        }
        let mut members: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (pid, session) in self.engine.tracked_processes() {
            members.entry(session).or_default().push(pid);
        }
        let ended: Vec<u32> = self
            .sessions
            .keys()
            .filter(|id| !members.contains_key(id))
            .copied()
            .collect();
        for session in ended {
            self.end_session(session);
        }
        let kill_sessions = self.sessions.values().any(|s| s.action == Action::Kill);
        self.responder
            .disarm_unless(&mut self.engine, kill_sessions);
        self.adopt_unknown_sessions(&members);
        self.release_lost_holds();
        if self.sessions.is_empty() {
            self.idle_ticks += 1;
            if self.idle_ticks == IDLE_TICKS
                && let Err(error) = self.set_watching(false)
            {
                warn!("detaching the syscall tracepoints: {error:#}");
            }
        } else {
            self.idle_ticks = 0;
        }
        self.refresh_status(&members);
    }

    /// SIGHUP: a new policy replaces the old only if it is valid.
    fn reload(&mut self) {
        self.service.reloading();
        let (loaded, status) = self.replace_policy();
        self.metrics
            .lock()
            .expect("metrics")
            .record_config_load(loaded);
        self.service.ready(&status);
    }

    /// Loads the policy again and puts it in force; returns whether it is
    /// wholly in force, and what happened.
    fn replace_policy(&mut self) -> (bool, String) {
        let policy = match Policy::load_config(self.policy_path.as_deref()) {
            Ok(policy) => policy,
            Err(error) => {
                journal::warning(format!(
                    "agentwatch: policy reload failed, keeping the running policy:\n{error:#}"
                ));
                return (
                    false,
                    "policy reload failed, keeping the running policy".into(),
                );
            }
        };
        self.metrics
            .lock()
            .expect("metrics")
            .know_providers(provider_ids(&policy));
        self.action = self.mode.unwrap_or(policy.action);
        self.ask_timeout = policy.ask_timeout;
        self.agents = Agents::new(policy.agents.clone());
        let result = self
            .engine
            .replace_policy(policy)
            .and_then(|()| self.enable_discovery());
        let (loaded, status) = match result {
            Ok(()) => (true, format!("policy reloaded (mode {})", self.action)),
            Err(error) => (false, format!("policy reload incomplete: {error:#}")),
        };
        if loaded {
            journal::info(format!("agentwatch: {status}"));
        } else {
            journal::warning(format!("agentwatch: {status}"));
        }
        (loaded, status)
    }

    /// No answer means deny: sessions waiting for one are killed rather
    /// than left stopped with no daemon to resume them.
    async fn shutdown(&mut self) {
        for id in self.requests.ids() {
            let _ = self.resolve(id, Verdict::Deny);
        }
        self.sweep().await;
        let _ = self.engine.disable_discovery();
        self.log.close();
    }

    /// An ask-mode request: a warning in the journal, and on the desktops of
    /// the people who can answer it (`uid`'s, the agent's user, first).
    fn notify(&self, uid: u32, message: String) {
        journal::warning(format!("agentwatch: {message}"));
        desktop::notify(uid, message, self.ask_timeout, self.metrics.clone());
    }

    /// Into the event log, and to the control socket's clients.
    fn publish(&self, event: Event) {
        let event = Arc::new(event);
        self.log.write(event.clone());
        self.handler.publish(event);
    }
}
