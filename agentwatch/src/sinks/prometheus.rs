//! Prometheus metrics of the daemon, served over HTTP at `/metrics`.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use agentwatch_common::names::Kind;
use anyhow::{Context as _, Result};
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use prometheus::{
    Encoder as _, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use tokio::net::TcpListener;
use tracing::warn;

use crate::{engine::Losses, kernel::maps::MapFill, sinks::event_log::LogFailures};

pub struct Metrics {
    registry: Registry,
    pub events: IntCounterVec,
    pub alerts: IntCounterVec,
    pub operations: IntCounterVec,
    pub sessions_active: IntGauge,
    pub tracked_processes: IntGauge,
    pub pending_requests: IntGauge,
    pub syscall_probes_attached: IntGauge,
    events_lost: IntCounterVec,
    kernel_drops: IntCounterVec,
    content_scans: IntCounterVec,
    first_writes: IntCounterVec,
    map_entries: IntGaugeVec,
    map_capacity: IntGaugeVec,
    pub probe_attach_failures: IntGaugeVec,
    pub decision_latency: Histogram,
    event_log_failures: IntCounterVec,
    /// Totals already exported, so counters advance by the difference.
    exported: Losses,
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
    pub fn new() -> Self {
        let registry = Registry::new();
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
                "Alerts, by action taken",
                &["action"],
            ),
            operations: counter(
                &registry,
                "agentwatch_operations_total",
                "Calls of tainted sessions judged by what they do (a TLS request at SSL_write, a \
                 cataloged command at exec), by where, class and decision",
                &["seen", "class", "decision"],
            ),
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
            registry,
            exported: Losses::default(),
            exported_log_failures: LogFailures::default(),
        };
        // Present from the start: a log that never failed says so.
        metrics.update_log_failures(LogFailures::default());
        metrics
    }

    /// Brings the event log's counter up to its writer's totals.
    pub fn update_log_failures(&mut self, failures: LogFailures) {
        let before = self.exported_log_failures;
        for (reason, now, before) in [
            ("write_failed", failures.write_failed, before.write_failed),
            ("queue_full", failures.queue_full, before.queue_full),
        ] {
            self.event_log_failures
                .with_label_values(&[reason])
                .inc_by(now.saturating_sub(before));
        }
        self.exported_log_failures = failures;
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
        for (reason, now, before) in [
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
        ] {
            self.kernel_drops
                .with_label_values(&[reason])
                .inc_by(now.saturating_sub(before));
        }
        for (reason, now, before) in [
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
        ] {
            self.kernel_drops
                .with_label_values(&[reason])
                .inc_by(now.saturating_sub(before));
        }
        for (by, now, before) in [
            ("name", now.named_writes, before.named_writes),
            ("address", now.nameless_writes, before.nameless_writes),
            ("unreadable", now.write_unreadable, before.write_unreadable),
        ] {
            self.first_writes
                .with_label_values(&[by])
                .inc_by(now.saturating_sub(before));
        }
        let (now, before) = (&losses.scans, &self.exported.scans);
        for (result, now, before) in [
            ("scanned", now.scanned, before.scanned),
            ("credential_found", now.hits, before.hits),
            ("dropped_queue_full", now.dropped, before.dropped),
            ("unreadable", now.failed, before.failed),
        ] {
            self.content_scans
                .with_label_values(&[result])
                .inc_by(now.saturating_sub(before));
        }
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

/// Binds the metrics address; apart from [`serve`] so that a port in use
/// fails the daemon before it loads any kernel program.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening for metrics scrapes on {addr}"))
}

/// Serves `/metrics` on `listener` until the process ends.
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
                    async move {
                        if request.uri().path() == "/metrics" {
                            let body = metrics.lock().map(|m| m.render()).unwrap_or_default();
                            Response::builder()
                                .header("content-type", TextEncoder::new().format_type())
                                .body(Full::new(Bytes::from(body)))
                        } else {
                            Response::builder()
                                .status(StatusCode::NOT_FOUND)
                                .body(Full::new(Bytes::from_static(b"see /metrics\n")))
                        }
                    }
                });
                let connection =
                    http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                // A scraper that hangs up mid-response is its own business.
                let _ = tokio::time::timeout(Duration::from_secs(30), connection).await;
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

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
