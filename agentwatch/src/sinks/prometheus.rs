//! Prometheus metrics of the daemon, served over HTTP at `/metrics`, and
//! its health at `/healthz`.
//!
//! Every series whose label values are known in advance exists from the
//! start at zero, as the Prometheus conventions ask: a rate, an alert rule
//! on `== 0` or an `absent()` works before the first event.

use std::{
    fmt,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    str::FromStr,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use agentwatch_common::names::{Action, Kind, OperationClass, Verdict};
use anyhow::{Context as _, Result};
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use prometheus::{
    Encoder as _, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder, process_collector::ProcessCollector,
};
use tokio::net::{TcpListener, TcpSocket};
use tracing::warn;

use crate::{
    engine::Losses,
    event::{Alert, Body, OperationCall, OperationDecision, OperationSeen},
    kernel::maps::MapFill,
    sinks::{desktop, event_log::LogFailures},
};

/// The `provider` of an alert that named none.
pub const NO_PROVIDER: &str = "none";

/// `/healthz` fails once the event loop has not ticked (once a second) for
/// this long; well inside the unit's 30 s watchdog, so a probe sees a stall first.
const HEALTHY_WITHIN: Duration = Duration::from_secs(10);

pub struct Metrics {
    registry: Registry,
    pub events: IntCounterVec,
    alerts: IntCounterVec,
    operations: IntCounterVec,
    requests_resolved: IntCounterVec,
    config_last_reload_successful: IntGauge,
    config_last_reload_success_timestamp: Gauge,
    pub sessions_active: IntGauge,
    pub tracked_processes: IntGauge,
    pub pending_requests: IntGauge,
    pub syscall_probes_attached: IntGauge,
    events_lost: IntCounterVec,
    kernel_drops: IntCounterVec,
    content_scans: IntCounterVec,
    first_writes: IntCounterVec,
    tls_writes_stopped: IntCounterVec,
    opens_repeated: IntCounter,
    map_entries: IntGaugeVec,
    map_capacity: IntGaugeVec,
    probe_attach_failures: IntGaugeVec,
    pub decision_latency: Histogram,
    event_log_failures: IntCounterVec,
    desktop_notifications: IntCounterVec,
    /// Totals already exported, so counters advance by the difference.
    exported: Losses,
    /// When the event loop last ticked; `None` until it first does.
    loop_alive_at: Option<Instant>,
    exported_log_failures: LogFailures,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let metric = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

impl Metrics {
    /// The daemon's metrics, every series known in advance at zero but
    /// those of alerts' providers ([`Metrics::know_providers`]) and of
    /// the kernel programs ([`Metrics::record_attach`]).
    pub fn new() -> Self {
        let registry = Registry::new();
        registry
            .register(Box::new(ProcessCollector::for_self()))
            .expect("unique metric");
        gauge_vec(
            &registry,
            "agentwatch_build_info",
            "Always 1; the labels say which agentwatch is running",
            &["version"],
        )
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
        let decision_latency = Histogram::with_opts(
            HistogramOpts::new(
                "agentwatch_decision_latency_seconds",
                "Time from a kernel event to its handling in user space",
            )
            .buckets(vec![
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 1.0,
            ]),
        )
        .expect("valid histogram");
        registry
            .register(Box::new(decision_latency.clone()))
            .expect("unique metric");
        let mut metrics = Self {
            events: counter(
                &registry,
                "agentwatch_events_total",
                "Events handled, by kind",
                &["kind"],
            ),
            alerts: counter(
                &registry,
                "agentwatch_alerts_total",
                "Alerts, by action taken and the provider whose infrastructure was called",
                &["action", "provider"],
            ),
            operations: counter(
                &registry,
                "agentwatch_operations_total",
                "Calls of tainted sessions judged by what they do (a TLS request at SSL_write, a \
                 cataloged command at exec), by where, class and decision",
                &["seen", "class", "decision"],
            ),
            requests_resolved: counter(
                &registry,
                "agentwatch_requests_resolved_total",
                "Ask-mode requests closed, by verdict: approve, deny (by a human, or the daemon \
                 stopping), timeout (nobody answered: denied)",
                &["verdict"],
            ),
            config_last_reload_successful: gauge(
                &registry,
                "agentwatch_config_last_reload_successful",
                "1 if the last policy load (start or SIGHUP) succeeded, 0 if it failed",
            ),
            config_last_reload_success_timestamp: {
                let metric = Gauge::new(
                    "agentwatch_config_last_reload_success_timestamp_seconds",
                    "When the policy was last loaded successfully (Unix time)",
                )
                .expect("valid metric");
                registry
                    .register(Box::new(metric.clone()))
                    .expect("unique metric");
                metric
            },
            sessions_active: gauge(
                &registry,
                "agentwatch_sessions_active",
                "Agent sessions being watched",
            ),
            tracked_processes: gauge(
                &registry,
                "agentwatch_tracked_processes",
                "Processes in watched sessions",
            ),
            pending_requests: gauge(
                &registry,
                "agentwatch_pending_requests",
                "Sessions stopped, waiting for a human to approve or deny",
            ),
            syscall_probes_attached: gauge(
                &registry,
                "agentwatch_syscall_probes_attached",
                "1 while the syscall tracepoints are attached (some session exists)",
            ),
            events_lost: counter(
                &registry,
                "agentwatch_events_lost_total",
                "Events the kernel could not hand over because the ring buffer was full, by kind",
                &["kind"],
            ),
            kernel_drops: counter(
                &registry,
                "agentwatch_kernel_drops_total",
                "Things the kernel programs could not do, by reason",
                &["reason"],
            ),
            content_scans: counter(
                &registry,
                "agentwatch_content_scans_total",
                "Files read by sessions and scanned for credentials, by result",
                &["result"],
            ),
            first_writes: counter(
                &registry,
                "agentwatch_first_writes_total",
                "Sessions' TCP sockets judged at their first write: by the name it asked for, \
                 or by address (it named nothing, or could not be read)",
                &["by"],
            ),
            tls_writes_stopped: counter(
                &registry,
                "agentwatch_tls_writes_stopped_total",
                "Sessions' TLS writes stopped before encryption: to judge their operation \
                 (a tainted session), or until the content scans of what the session read \
                 were done (pending_scans)",
                &["reason"],
            ),
            opens_repeated: {
                let metric = IntCounter::new(
                    "agentwatch_opens_repeated_total",
                    "Opens of a file a session's process had reported already with the same \
                     flags: judged like any open (a credential's still taints), counted here, \
                     not sent again",
                )
                .expect("valid metric");
                registry
                    .register(Box::new(metric.clone()))
                    .expect("unique metric");
                metric
            },
            map_entries: gauge_vec(
                &registry,
                "agentwatch_kernel_map_entries",
                "Entries in kernel maps",
                &["map"],
            ),
            map_capacity: gauge_vec(
                &registry,
                "agentwatch_kernel_map_capacity",
                "Capacity of kernel maps",
                &["map"],
            ),
            probe_attach_failures: gauge_vec(
                &registry,
                "agentwatch_probe_attach_failures",
                "1 for each kernel program that could not be attached",
                &["program"],
            ),
            decision_latency,
            event_log_failures: counter(
                &registry,
                "agentwatch_event_log_failures_total",
                "Events the event log lost, by reason: the file could not be written, or its \
                 writer fell too far behind",
                &["reason"],
            ),
            desktop_notifications: counter(
                &registry,
                "agentwatch_desktop_notifications_total",
                "Desktop notifications of ask-mode requests, by outcome: delivered to a user's \
                 session bus, failed there (refused, or no answer), or no_session_bus (nobody \
                 logged in has one)",
                &["outcome"],
            ),
            registry,
            exported: Losses::default(),
            loop_alive_at: None,
            exported_log_failures: LogFailures::default(),
        };
        for kind in Body::KINDS {
            metrics.events.with_label_values(&[kind]);
        }
        for seen in OperationSeen::ALL {
            for class in OperationClass::ALL {
                for decision in OperationDecision::all() {
                    metrics.operations.with_label_values(&[
                        seen.name(),
                        class.name(),
                        decision.name(),
                    ]);
                }
            }
        }
        for verdict in Verdict::ALL {
            metrics
                .requests_resolved
                .with_label_values(&[verdict.name()]);
        }
        for outcome in desktop::Outcome::ALL {
            metrics
                .desktop_notifications
                .with_label_values(&[outcome.name()]);
        }
        // Every loss counter, at zero; a log that never failed says so.
        metrics.update_losses(Losses::default());
        metrics.update_log_failures(LogFailures::default());
        metrics
    }

    /// Brings the event log's counter up to its writer's totals.
    pub fn update_log_failures(&mut self, failures: LogFailures) {
        let before = self.exported_log_failures;
        advance(
            &self.event_log_failures,
            &[
                ("write_failed", failures.write_failed, before.write_failed),
                ("queue_full", failures.queue_full, before.queue_full),
            ],
        );
        self.exported_log_failures = failures;
    }

    /// Alerts of every action against each of `providers` (and none), at
    /// zero; again after a reload, for the providers it adds.
    pub fn know_providers<'a>(&self, providers: impl IntoIterator<Item = &'a str>) {
        for provider in providers.into_iter().chain([NO_PROVIDER]) {
            for action in Action::ALL {
                self.alerts.with_label_values(&[action.name(), provider]);
            }
        }
    }

    pub fn count_alert(&self, alert: &Alert) {
        let provider = alert.provider.as_deref().unwrap_or(NO_PROVIDER);
        self.alerts
            .with_label_values(&[alert.action.name(), provider])
            .inc();
    }

    pub fn count_operation(&self, call: &OperationCall) {
        self.operations
            .with_label_values(&[
                call.seen.name(),
                call.operation.class.name(),
                call.decision.name(),
            ])
            .inc();
    }

    pub fn count_resolved(&self, verdict: Verdict) {
        self.requests_resolved
            .with_label_values(&[verdict.name()])
            .inc();
    }

    pub fn count_notification(&self, outcome: desktop::Outcome) {
        self.desktop_notifications
            .with_label_values(&[outcome.name()])
            .inc();
    }

    /// 0 for each of `programs`, 1 for those in `failed`.
    pub fn record_attach<'a>(
        &self,
        programs: impl IntoIterator<Item = &'a str>,
        failed: impl IntoIterator<Item = &'a str>,
    ) {
        for program in programs {
            self.probe_attach_failures
                .with_label_values(&[program])
                .set(0);
        }
        for program in failed {
            self.probe_attach_failures
                .with_label_values(&[program])
                .set(1);
        }
    }

    /// The outcome of loading the policy, at start or on SIGHUP.
    pub fn record_config_load(&self, loaded: bool) {
        self.config_last_reload_successful.set(i64::from(loaded));
        if loaded {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            self.config_last_reload_success_timestamp
                .set(now.as_secs_f64());
        }
    }

    /// The event loop is running (called at every tick).
    pub fn loop_alive(&mut self) {
        self.loop_alive_at = Some(Instant::now());
    }

    /// `/healthz`: healthy once the programs are attached (the server
    /// answers only after) and while the event loop ticks.
    fn health(&self) -> (StatusCode, String) {
        match self.loop_alive_at.map(|at| at.elapsed()) {
            None => (
                StatusCode::SERVICE_UNAVAILABLE,
                "starting: the event loop has not run yet\n".into(),
            ),
            Some(idle) if idle > HEALTHY_WITHIN => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the event loop has not run for {} s\n", idle.as_secs()),
            ),
            Some(_) => (StatusCode::OK, "ok\n".into()),
        }
    }

    /// Brings the loss counters up to the engine's totals.
    pub fn update_losses(&mut self, losses: Losses) {
        for kind in Kind::ALL {
            let index = kind.code() as usize;
            let delta = losses.kernel.lost[index].saturating_sub(self.exported.kernel.lost[index]);
            self.events_lost
                .with_label_values(&[kind.name()])
                .inc_by(delta);
        }
        let (now, before) = (&losses.kernel, &self.exported.kernel);
        let drops = [
            ("process_map_full", now.procs_full, before.procs_full),
            ("pending_map_full", now.pending_full, before.pending_full),
            ("kernel_read_failed", now.read_failed, before.read_failed),
            ("infrastructure_map_full", now.infra_full, before.infra_full),
            ("dns_malformed", now.dns_malformed, before.dns_malformed),
            (
                "dns_tcp_unfollowed",
                now.dns_tcp_unfollowed,
                before.dns_tcp_unfollowed,
            ),
            (
                "environment_truncated",
                now.env_truncated,
                before.env_truncated,
            ),
            ("held_map_full", now.held_full, before.held_full),
            (
                "socket_mark_map_full",
                now.socket_marks_full,
                before.socket_marks_full,
            ),
            (
                "socket_uninspectable",
                now.socket_uninspectable,
                before.socket_uninspectable,
            ),
            (
                "socket_state_lost",
                now.socket_state_lost,
                before.socket_state_lost,
            ),
            ("mptcp_refused", now.mptcp_refused, before.mptcp_refused),
            (
                "fast_open_judged_by_address",
                now.fast_open,
                before.fast_open,
            ),
            (
                "undecodable_record",
                losses.decode_errors,
                self.exported.decode_errors,
            ),
        ];
        advance(&self.kernel_drops, &drops);
        let unjudged = [
            (
                "tls_write_refused_unjudged",
                now.tls_writes_unjudged,
                before.tls_writes_unjudged,
            ),
            (
                "command_killed_unjudged",
                now.commands_unjudged,
                before.commands_unjudged,
            ),
            (
                "io_uring_open_unseen",
                now.iouring_unseen_opens,
                before.iouring_unseen_opens,
            ),
            (
                "tls_process_unprobed",
                losses.tls_unprobed_total(),
                self.exported.tls_unprobed_total(),
            ),
        ];
        advance(&self.kernel_drops, &unjudged);
        advance(
            &self.first_writes,
            &[
                ("name", now.named_writes, before.named_writes),
                ("address", now.nameless_writes, before.nameless_writes),
                ("unreadable", now.write_unreadable, before.write_unreadable),
            ],
        );
        advance(
            &self.tls_writes_stopped,
            &[
                (
                    "judge_operation",
                    now.tls_writes_held,
                    before.tls_writes_held,
                ),
                (
                    "pending_scans",
                    now.tls_writes_fenced,
                    before.tls_writes_fenced,
                ),
            ],
        );
        self.opens_repeated
            .inc_by(now.opens_repeated.saturating_sub(before.opens_repeated));
        let (now, before) = (&losses.scans, &self.exported.scans);
        advance(
            &self.content_scans,
            &[
                ("scanned", now.scanned, before.scanned),
                ("credential_found", now.hits, before.hits),
                ("dropped_queue_full", now.dropped, before.dropped),
                ("unreadable", now.failed, before.failed),
            ],
        );
        self.exported = losses;
    }

    pub fn update_fill(&self, fill: &[MapFill]) {
        for map in fill {
            self.map_entries
                .with_label_values(&[map.map])
                .set(map.entries as i64);
            self.map_capacity
                .with_label_values(&[map.map])
                .set(i64::from(map.capacity));
        }
    }

    fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            warn!("encoding metrics: {error}");
        }
        out
    }
}

/// Where `/metrics` is served: `HOST:PORT`, or `:PORT` for every
/// interface, IPv4 and IPv6, as Go exporters read `--web.listen-address`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    Socket(SocketAddr),
    AllInterfaces(u16),
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.strip_prefix(':') {
            Some(port) => port
                .parse()
                .map(ListenAddr::AllInterfaces)
                .map_err(|error| format!("port {port:?}: {error}")),
            None => text.parse().map(ListenAddr::Socket).map_err(|error| {
                format!("{error} (expected HOST:PORT, [HOST]:PORT for IPv6, or :PORT)")
            }),
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Socket(addr) => addr.fmt(f),
            ListenAddr::AllInterfaces(port) => write!(f, ":{port}"),
        }
    }
}

/// Binds the metrics address; apart from [`serve`] so that a port in use
/// fails the daemon before it loads any kernel program.
pub async fn bind(addr: ListenAddr) -> Result<TcpListener> {
    let bound = match addr {
        ListenAddr::Socket(addr) => TcpListener::bind(addr).await,
        // One dual-stack socket, as Go's `:PORT`; IPv4 alone where the
        // host has no IPv6.
        ListenAddr::AllInterfaces(port) => {
            bind_dual_stack(port).or_else(|error| match error.raw_os_error() {
                Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL) => {
                    std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).and_then(|l| {
                        l.set_nonblocking(true)?;
                        TcpListener::from_std(l)
                    })
                }
                _ => Err(error),
            })
        }
    };
    bound.with_context(|| format!("listening for metrics scrapes on {addr}"))
}

fn bind_dual_stack(port: u16) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v6()?;
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Ipv6V6Only, &false)?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))?;
    socket.listen(1024)
}

/// Serves `/metrics` and `/healthz` on `listener` until the process ends.
pub fn serve(listener: TcpListener, metrics: Arc<std::sync::Mutex<Metrics>>) {
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    warn!("metrics accept: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let metrics = metrics.clone();
                    async move { respond(request.uri().path(), &metrics) }
                });
                let connection =
                    http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                // A scraper that hangs up mid-response is its own business.
                let _ = tokio::time::timeout(Duration::from_secs(30), connection).await;
            });
        }
    });
}

fn respond(
    path: &str,
    metrics: &std::sync::Mutex<Metrics>,
) -> hyper::http::Result<Response<Full<Bytes>>> {
    let Ok(metrics) = metrics.lock() else {
        return Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .body(Full::new(Bytes::from_static(b"metrics poisoned\n")));
    };
    match path {
        "/metrics" => Response::builder()
            .header("content-type", TextEncoder::new().format_type())
            .body(Full::new(Bytes::from(metrics.render()))),
        "/healthz" => {
            let (status, body) = metrics.health();
            Response::builder()
                .status(status)
                .header("content-type", "text/plain; charset=utf-8")
                .body(Full::new(Bytes::from(body)))
        }
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"see /metrics or /healthz\n"))),
    }
}

/// Advances each labelled counter of `counter` from its exported total
/// (`before`) to the engine's (`now`).
fn advance(counter: &IntCounterVec, rows: &[(&str, u64, u64)]) {
    for &(label, now, before) in rows {
        counter
            .with_label_values(&[label])
            .inc_by(now.saturating_sub(before));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(metrics: &Metrics) -> String {
        String::from_utf8(metrics.render()).unwrap()
    }

    #[test]
    fn every_series_known_in_advance_is_there_at_zero() {
        let metrics = Metrics::new();
        metrics.know_providers(["railway"]);
        let text = render(&metrics);
        for series in [
            "agentwatch_alerts_total{action=\"ask\",provider=\"railway\"} 0",
            "agentwatch_alerts_total{action=\"block\",provider=\"none\"} 0",
            "agentwatch_events_total{kind=\"operation\"} 0",
            "agentwatch_events_lost_total{kind=\"tls-write\"} 0",
            "agentwatch_kernel_drops_total{reason=\"undecodable_record\"} 0",
            "agentwatch_content_scans_total{result=\"credential_found\"} 0",
            "agentwatch_first_writes_total{by=\"unreadable\"} 0",
            "agentwatch_tls_writes_stopped_total{reason=\"pending_scans\"} 0",
            "agentwatch_opens_repeated_total 0",
            "agentwatch_operations_total{class=\"destructive\",decision=\"kill\",seen=\"exec\"} 0",
            "agentwatch_requests_resolved_total{verdict=\"timeout\"} 0",
            "agentwatch_build_info{version=\"",
            "process_resident_memory_bytes ",
        ] {
            assert!(text.contains(series), "{series} in:\n{text}");
        }
    }

    #[test]
    fn an_alert_counts_against_its_provider_or_none() {
        let metrics = Metrics::new();
        let alert: Alert = serde_json::from_str(
            r#"{"action":"block","addr":"127.0.0.2","port":443,"provider":"railway","credentials":[],"ancestry":[]}"#,
        )
        .unwrap();
        metrics.count_alert(&alert);
        metrics.count_alert(&Alert {
            provider: None,
            ..alert
        });
        let text = render(&metrics);
        assert!(text.contains("agentwatch_alerts_total{action=\"block\",provider=\"railway\"} 1"));
        assert!(text.contains("agentwatch_alerts_total{action=\"block\",provider=\"none\"} 1"));
    }

    #[test]
    fn a_failed_reload_says_so_and_keeps_the_last_success_time() {
        let metrics = Metrics::new();
        metrics.record_config_load(true);
        let loaded_at = metrics.config_last_reload_success_timestamp.get();
        assert!(loaded_at > 0.0);
        metrics.record_config_load(false);
        let text = render(&metrics);
        assert!(
            text.contains("agentwatch_config_last_reload_successful 0"),
            "{text}"
        );
        assert_eq!(
            metrics.config_last_reload_success_timestamp.get(),
            loaded_at
        );
    }

    #[test]
    fn healthy_only_while_the_event_loop_ticks() {
        let mut metrics = Metrics::new();
        assert_eq!(metrics.health().0, StatusCode::SERVICE_UNAVAILABLE);
        metrics.loop_alive();
        assert_eq!(metrics.health().0, StatusCode::OK);
        metrics.loop_alive_at = Some(Instant::now() - HEALTHY_WITHIN - Duration::from_secs(1));
        assert_eq!(metrics.health().0, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn listen_addresses_take_a_port_alone_as_every_interface() {
        assert_eq!(":9464".parse(), Ok(ListenAddr::AllInterfaces(9464)));
        assert_eq!(
            "127.0.0.1:9464".parse(),
            Ok(ListenAddr::Socket("127.0.0.1:9464".parse().unwrap()))
        );
        assert_eq!(
            "[::1]:9464".parse(),
            Ok(ListenAddr::Socket("[::1]:9464".parse().unwrap()))
        );
        assert!("9464".parse::<ListenAddr>().is_err());
        assert!(":http".parse::<ListenAddr>().is_err());
        assert_eq!(ListenAddr::AllInterfaces(9464).to_string(), ":9464");
    }

    #[tokio::test]
    async fn every_interface_means_ipv4_and_ipv6() {
        let listener = bind(ListenAddr::AllInterfaces(0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        for host in ["127.0.0.1", "[::1]"] {
            tokio::net::TcpStream::connect(format!("{host}:{port}"))
                .await
                .unwrap_or_else(|error| panic!("{host}: {error}"));
        }
    }

    #[test]
    fn counters_follow_the_engines_totals_by_difference() {
        let mut metrics = Metrics::new();
        let mut losses = Losses::default();
        losses.kernel.lost[1] = 5;
        losses.scans.dropped = 2;
        metrics.update_losses(losses);
        losses.kernel.lost[1] = 7;
        metrics.update_losses(losses);
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(
            text.contains("agentwatch_events_lost_total{kind=\"open\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("agentwatch_content_scans_total{result=\"dropped_queue_full\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn event_log_failures_are_zero_from_the_start_then_follow_the_writer() {
        let mut metrics = Metrics::new();
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(
            text.contains("agentwatch_event_log_failures_total{reason=\"write_failed\"} 0"),
            "{text}"
        );
        metrics.update_log_failures(LogFailures {
            write_failed: 3,
            queue_full: 0,
        });
        metrics.update_log_failures(LogFailures {
            write_failed: 5,
            queue_full: 1,
        });
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(
            text.contains("agentwatch_event_log_failures_total{reason=\"write_failed\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("agentwatch_event_log_failures_total{reason=\"queue_full\"} 1"),
            "{text}"
        );
    }
}
