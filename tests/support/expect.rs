//! Matching events by kind and fields, with a report a failing test can be
//! read from: each expected field of the closest event, found or missing
//! (after pulsar's test runner).

use std::fmt::Write as _;

use serde_json::Value;

/// One expected field: a `/`-separated path into the event (`credential/class`)
/// and the value it must hold.
pub struct Field {
    pub path: &'static str,
    pub value: Value,
}

/// The first event of `kind` in `events` whose fields all match; otherwise
/// panics with a per-field report of the closest event of that kind.
///
/// ```text
/// let alert = expect_event!(watched.events, "alert", {
///     "action" => "block",
///     "credential/class" => "railway",
/// });
/// ```
#[macro_export]
macro_rules! expect_event {
    ($events:expr, $kind:expr, { $($path:literal => $value:expr),* $(,)? }) => {
        $crate::expect::find_event(
            &$events,
            $kind,
            &[$($crate::expect::Field { path: $path, value: serde_json::json!($value) }),*],
        )
    };
}

pub fn find_event<'a>(events: &'a [Value], kind: &str, fields: &[Field]) -> &'a Value {
    let candidates: Vec<&Value> = events.iter().filter(|e| e["kind"] == kind).collect();
    if let Some(found) = candidates
        .iter()
        .find(|event| fields.iter().all(|field| matches(event, field)))
    {
        return found;
    }
    let closest = candidates
        .iter()
        .max_by_key(|event| fields.iter().filter(|field| matches(event, field)).count());
    panic!(
        "{}",
        report(kind, fields, closest.copied(), candidates.len())
    );
}

fn lookup<'a>(event: &'a Value, path: &str) -> Option<&'a Value> {
    event.pointer(&format!("/{path}"))
}

fn matches(event: &Value, field: &Field) -> bool {
    lookup(event, field.path) == Some(&field.value)
}

fn report(kind: &str, fields: &[Field], closest: Option<&Value>, candidates: usize) -> String {
    let mut out = format!("no {kind} event matches");
    let Some(event) = closest else {
        let _ = write!(out, ": there is no {kind} event at all");
        return out;
    };
    let _ = writeln!(out, "; the closest of {candidates}:");
    for field in fields {
        let _ = match lookup(event, field.path) {
            Some(found) if *found == field.value => {
                writeln!(out, "  ok       {} = {found}", field.path)
            }
            Some(found) => writeln!(
                out,
                "  WRONG    {} = {found}, expected {}",
                field.path, field.value
            ),
            None => writeln!(out, "  MISSING  {}, expected {}", field.path, field.value),
        };
    }
    let _ = write!(out, "event: {event}");
    out
}

/// The numbers a helper printed one per line (aw-probe's system call
/// results), skipping every other line.
pub fn results(stdout: &[u8]) -> Vec<i64> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn events() -> Vec<Value> {
        vec![
            json!({"kind": "open", "path": "/etc/hostname"}),
            json!({"kind": "alert", "action": "block", "credential": {"class": "aws"}}),
            json!({"kind": "alert", "action": "kill", "credential": {"class": "railway"}}),
        ]
    }

    #[test]
    fn finds_the_event_whose_fields_all_match_nested_ones_included() {
        let events = events();
        let found = crate::expect_event!(events, "alert", {
            "action" => "kill",
            "credential/class" => "railway",
        });
        assert_eq!(found, &events[2]);
    }

    #[test]
    fn the_report_names_each_field_of_the_closest_event() {
        let events = events();
        let fields = [
            Field {
                path: "action",
                value: json!("block"),
            },
            Field {
                path: "credential/class",
                value: json!("railway"),
            },
            Field {
                path: "host",
                value: json!("backboard.railway.app"),
            },
        ];
        let candidates: Vec<&Value> = events.iter().filter(|e| e["kind"] == "alert").collect();
        let text = report("alert", &fields, Some(candidates[0]), candidates.len());
        assert!(text.contains("ok       action = \"block\""), "{text}");
        assert!(
            text.contains("WRONG    credential/class = \"aws\", expected \"railway\""),
            "{text}"
        );
        assert!(
            text.contains("MISSING  host, expected \"backboard.railway.app\""),
            "{text}"
        );
        let none = report("exec", &fields, None, 0);
        assert!(none.contains("there is no exec event at all"), "{none}");
    }

    #[test]
    fn results_are_the_numeric_lines() {
        assert_eq!(results(b"-1\nconnected\n 0 \n"), [-1, 0]);
    }
}
