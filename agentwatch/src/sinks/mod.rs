//! Where events go: JSON lines (`run --events`), the daemon's rotated event
//! log, the alert line on stderr (a warning in the journal), Prometheus
//! metrics and desktop notifications of ask-mode requests (the daemon). The daemon's control socket, which streams events
//! to `events` and `top`, is `crate::control`.

pub mod alert_line;
pub mod desktop;
pub mod event_log;
pub mod journal;
pub mod json_lines;
pub mod prometheus;
