//! The one-line account of an alert that `run` and the daemon write to stderr.

use agentwatch_common::names::Action;

use crate::{
    event::{Body, Event, OperationSeen},
    feed::tables::Tables,
};

/// One readable line for an alert, for stderr and logs.
pub fn alert_line(event: &Event, tables: &Tables) -> Option<String> {
    let Body::Alert(alert) = &event.body else {
        return None;
    };
    let verdict = match alert.action {
        Action::Observe => "OBSERVED",
        Action::Alert => "ALERT",
        Action::Block => "BLOCKED",
        Action::Kill => "KILLED",
        Action::Ask => "STOPPED, awaiting approval:",
    };
    let target = match &alert.host {
        Some(host) => format!("{host} ({}:{})", alert.addr, alert.port),
        None => format!("{}:{}", alert.addr, alert.port),
    };
    let provider = alert
        .provider
        .as_deref()
        .map_or("infrastructure", |id| tables.provider_name(id));
    let credential = match &alert.credential {
        Some(used) => {
            let ago = event
                .ts
                .duration_since(used.at)
                .map(|d| format!(", {:.1}s earlier", d.as_secs_f64()))
                .unwrap_or_default();
            let by = if used.pid == 0 {
                String::new()
            } else {
                format!(" by {} (pid {})", used.comm, used.pid)
            };
            format!(
                "{} credential {}{by}{ago}",
                tables.class_label(&used.class),
                used.source
            )
        }
        None => alert.credentials.join(", "),
    };
    let ancestry: Vec<String> = alert
        .ancestry
        .iter()
        .map(|a| {
            if a.argv.is_empty() {
                format!("{} (pid {})", a.comm, a.pid)
            } else {
                format!("`{}` (pid {})", a.argv.join(" "), a.pid)
            }
        })
        .collect();
    let what = match alert.judged() {
        // Judged by what it does: the request at SSL_write, or the command.
        Some((OperationSeen::Tls, operation)) => {
            format!("sending {} to {target}", operation.with_class())
        }
        Some((OperationSeen::Exec, operation)) => format!("running {}", operation.with_class()),
        None => format!("connecting to {provider} API {target}"),
    };
    Some(format!(
        "agentwatch: {verdict} {} (pid {}) {what}: session {} holds {credential}; via {}",
        event.comm,
        event.pid,
        event.session,
        ancestry.join(" <- ")
    ))
}
