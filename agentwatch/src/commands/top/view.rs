//! Drawing the model. Basic 16 colours and no mouse, so it works over SSH and
//! in any terminal; usable from 80x24 up (side by side from 120 columns).

use std::iter::once;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use agentwatch_common::names::Action;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Clear, List, ListItem, ListState, Paragraph, Row, Table, TableState, Wrap,
};

use super::model::{Detail, KEYS, Model, Pane, process_tree};

const BOLD: Style = Style::new().add_modifier(Modifier::BOLD);
const DIM: Style = Style::new().fg(Color::DarkGray);
const SELECTED: Style = Style::new().add_modifier(Modifier::REVERSED);
/// Most pending requests shown before the pane scrolls.
const PENDING_ROWS: u16 = 5;

pub fn draw(frame: &mut Frame, model: &Model, now: Instant) {
    let [header_area, body, footer_area] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let (sessions_area, right) = if body.width >= 120 {
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(40), Constraint::Fill(1)]).areas(body);
        (left, right)
    } else {
        let [top, rest] =
            Layout::vertical([Constraint::Percentage(40), Constraint::Fill(1)]).areas(body);
        (top, rest)
    };
    // Pending requests get a pane of their own whenever there are any, so a
    // session waiting for a human is never hidden behind a tab.
    let pending_height = if model.pending.is_empty() && model.focus != Pane::Pending {
        0
    } else {
        model.pending.len().clamp(1, PENDING_ROWS as usize) as u16 + 3
    };
    let [pending_area, history_area] =
        Layout::vertical([Constraint::Length(pending_height), Constraint::Fill(1)]).areas(right);

    header(frame, header_area, model);
    sessions(frame, sessions_area, model);
    if pending_height > 0 {
        pending(frame, pending_area, model, now);
    }
    history(frame, history_area, model);
    footer(frame, footer_area, model, now);
    if model.help_open {
        help(frame, body);
    } else if let Some(detail) = model.detail(now) {
        details(frame, body, &detail);
    }
}

/// A box in the middle of `area` holding `lines` (wrapped), cleared underneath.
fn overlay(frame: &mut Frame, area: Rect, title: String, lines: Vec<Line<'static>>) {
    let width = area.width.saturating_sub(4).max(3);
    let inner = usize::from(width - 2);
    let rows: usize = lines.iter().map(|l| l.width().div_ceil(inner).max(1)).sum();
    let height = (rows as u16).saturating_add(2).min(area.height);
    let [row] = Layout::vertical([Constraint::Length(height)])
        .flex(ratatui::layout::Flex::Center)
        .areas(area);
    let [box_area] = Layout::horizontal([Constraint::Length(width)])
        .flex(ratatui::layout::Flex::Center)
        .areas(row);
    let block = Block::bordered()
        .title(Line::from(format!(" {title} ")).bold())
        .border_style(Style::new().fg(Color::Cyan));
    frame.render_widget(Clear, box_area);
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        box_area,
    );
}

fn help(frame: &mut Frame, area: Rect) {
    let width = KEYS
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let lines = KEYS
        .iter()
        .map(|(keys, what)| {
            Line::from(vec![
                Span::styled(format!("{keys:>width$}  "), BOLD.fg(Color::Cyan)),
                Span::raw(*what),
            ])
        })
        .collect();
    overlay(frame, area, "keys (any key closes)".into(), lines);
}

/// Every field in full, wrapped: what the tables cut.
fn details(frame: &mut Frame, area: Rect, detail: &Detail) {
    let width = detail
        .fields
        .iter()
        .map(|(label, _)| label.len())
        .max()
        .unwrap_or(0);
    let lines = detail
        .fields
        .iter()
        .map(|(label, value)| {
            Line::from(vec![
                Span::styled(format!("{label:>width$}  "), BOLD),
                // Control characters (scripts in `sh -c`) would glue words together.
                Span::raw(value.replace(char::is_control, " ")),
            ])
        })
        .collect();
    overlay(
        frame,
        area,
        format!("{} (Enter or Esc closes)", detail.title),
        lines,
    );
}

fn header(frame: &mut Frame, area: Rect, model: &Model) {
    let mut spans = vec![Span::styled(" agentwatch ", BOLD.reversed())];
    if !model.connected() {
        spans.push(" daemon disconnected — retrying ".red().bold().reversed());
    }
    match &model.status {
        Some(status) => {
            spans.push(Span::raw(format!(
                " mode {}  sessions {}  procs {}  alerts {}  ",
                status.mode,
                status.sessions.len(),
                status.tracked_processes,
                status.alerts
            )));
            let lost = format!("lost {}", status.events_lost);
            spans.push(if status.events_lost > 0 {
                lost.red().bold()
            } else {
                lost.into()
            });
        }
        None => spans.push(" connecting…".into()),
    }
    if !model.pending.is_empty() {
        spans.push(format!("  {} pending", model.pending.len()).yellow().bold());
    }
    frame.render_widget(Line::from(spans), area);
}

fn footer(frame: &mut Frame, area: Rect, model: &Model, now: Instant) {
    let line = match (model.confirm, model.message(now)) {
        (Some(confirm), _) => {
            Line::from(format!(" {} ", confirm.prompt()).yellow().bold().reversed())
        }
        (None, Some(m)) if m.error => Line::from(format!(" {}", m.text).red().bold()),
        (None, Some(m)) => Line::from(format!(" {}", m.text).green()),
        (None, None) => {
            // The essentials; `?` lists every key.
            let keys = [
                ("q", "quit"),
                ("?", "help"),
                ("Tab", "pane"),
                ("a", "approve"),
                ("d", "deny"),
                ("Enter", "details"),
                ("s", "filter session"),
            ];
            Line::from(
                keys.into_iter()
                    .flat_map(|(k, what)| {
                        [format!(" {k}").cyan().bold(), format!(" {what} ").into()]
                    })
                    .collect::<Vec<_>>(),
            )
        }
    };
    frame.render_widget(line, area);
}

fn pane(title: Line<'static>, focused: bool) -> Block<'static> {
    let block = Block::bordered().title(title);
    if focused {
        block.border_style(Style::new().fg(Color::Cyan))
    } else {
        block.border_style(DIM)
    }
}

fn sessions(frame: &mut Frame, area: Rect, model: &Model) {
    let width = area.width.saturating_sub(2) as usize;
    let mut items = Vec::new();
    let mut selected = None;
    for s in model.sessions() {
        if model.selected_session == Some(s.id) {
            selected = Some(items.len());
        }
        let mut head = vec![
            Span::styled(format!("#{} {}", s.id, s.agent), BOLD),
            Span::raw(format!(" [{}]", s.action)),
        ];
        if s.stopped {
            head.push(" STOPPED".yellow().bold());
        }
        if !s.credentials.is_empty() {
            head.push(format!(" holds {}", s.credentials.join(",")).magenta());
        }
        if model.filter == Some(s.id) {
            head.push(" (filter)".cyan());
        }
        items.push(ListItem::new(Line::from(head)));
        for (depth, p) in process_tree(&s.processes, s.root_pid) {
            let lead = format!("{}{} ", "  ".repeat(depth + 1), p.pid);
            let used = lead.chars().count() + p.comm.chars().count() + 1;
            // Control characters (scripts in `sh -c`) would be dropped by the
            // renderer and glue words together.
            let argv = p.argv.join(" ").replace(char::is_control, " ");
            items.push(ListItem::new(Line::from(vec![
                Span::raw(lead),
                Span::styled(p.comm.clone(), BOLD),
                Span::raw(" "),
                Span::styled(truncate(&argv, width.saturating_sub(used)), DIM),
            ])));
        }
    }
    if items.is_empty() {
        items.push(ListItem::new(Span::styled("no agent sessions", DIM)));
    }
    let list = List::new(items)
        .block(pane(" Sessions ".into(), model.focus == Pane::Sessions))
        .highlight_style(SELECTED);
    frame.render_stateful_widget(
        list,
        area,
        &mut ListState::default().with_selected(selected),
    );
}

fn pending(frame: &mut Frame, area: Rect, model: &Model, now: Instant) {
    let title = Line::from(vec![
        " Pending ".into(),
        format!("{} ", model.pending.len()).yellow().bold(),
    ]);
    let widths = [
        Constraint::Length(6),
        Constraint::Length(3),
        Constraint::Length(12),
        Constraint::Fill(1),
        Constraint::Fill(1),
        Constraint::Length(7),
    ];
    let cols = columns(area, &widths);
    let rows = model.pending.iter().map(|p| {
        let r = &p.request;
        let left = Model::expires_in(p, now);
        let expires = format!("{left}s");
        Row::new(vec![
            r.id.to_string().into(),
            r.session.to_string().into(),
            truncate(&r.agent, cols[2]).into(),
            truncate(&r.credential, cols[3]).into(),
            truncate(&r.target(), cols[4]).into(),
            if left < 10 {
                expires.red().bold()
            } else {
                expires.into()
            },
        ])
    });
    let selected = model
        .pending
        .iter()
        .position(|p| Some(p.request.id) == model.selected_pending);
    let table = Table::new(rows, widths)
        .header(Row::new(["ID", "S", "AGENT", "CREDENTIAL", "CALL", "EXPIRES"]).style(BOLD))
        .block(pane(title, model.focus == Pane::Pending))
        // Always visible: `a` and `d` act on it from any pane.
        .row_highlight_style(SELECTED);
    frame.render_stateful_widget(
        table,
        area,
        &mut TableState::default().with_selected(selected),
    );
}

fn history(frame: &mut Frame, area: Rect, model: &Model) {
    let mut title = vec![Span::raw(" ")];
    for (tab, name) in [
        (Pane::Alerts, "Alerts"),
        (Pane::Connections, "Connections"),
        (Pane::Reads, "Credential reads"),
    ] {
        title.push(if tab == model.tab {
            Span::styled(name, BOLD.reversed())
        } else {
            Span::styled(name, DIM)
        });
        title.push(" ".into());
    }
    if let Some(id) = model.filter {
        title.push(format!("· session {id} only ").cyan());
    }
    let focused = model.focus == model.tab;
    let block = pane(Line::from(title), focused);
    let selected = model.selected_row(model.tab).filter(|_| focused);
    // Rows past the pane's height (scrolled to the selection) are never
    // seen: don't build them.
    let shown = area.height.saturating_sub(3) as usize + selected.unwrap_or(0);
    let (header, widths, rows): (_, Vec<Constraint>, Vec<Row>) = match model.tab {
        Pane::Alerts => {
            let widths = vec![
                Constraint::Length(8),
                Constraint::Length(3),
                Constraint::Length(7),
                Constraint::Length(9),
                Constraint::Fill(2),
                Constraint::Length(8),
                Constraint::Fill(1),
            ];
            let cols = columns(area, &widths);
            let rows = model.alerts().take(shown).map(|a| {
                Row::new(vec![
                    clock(a.ts).into(),
                    a.session.to_string().into(),
                    action(a.action),
                    truncate(&a.comm, cols[3]).into(),
                    truncate(&a.dest, cols[4]).into(),
                    truncate(&a.provider, cols[5]).into(),
                    truncate_left(a.source(), cols[6]).into(),
                ])
            });
            let header = vec!["UTC", "S", "ACTION", "COMM", "HOST", "PROVIDER", "SOURCE"];
            (header, widths, rows.collect())
        }
        Pane::Connections => {
            let widths = vec![
                Constraint::Length(8),
                Constraint::Length(3),
                Constraint::Length(15),
                Constraint::Fill(1),
                Constraint::Length(12),
            ];
            let cols = columns(area, &widths);
            let rows = model.connections().take(shown).map(|c| {
                Row::new(vec![
                    clock(c.ts).into(),
                    c.session.to_string().into(),
                    truncate(&c.comm, cols[2]).into(),
                    truncate(&c.dest, cols[3]).into(),
                    result(c.ret),
                ])
            });
            let header = vec!["UTC", "S", "COMM", "DESTINATION", "RESULT"];
            (header, widths, rows.collect())
        }
        _ => {
            let widths = vec![
                Constraint::Length(8),
                Constraint::Length(3),
                Constraint::Length(15),
                Constraint::Fill(1),
                Constraint::Length(16),
            ];
            let cols = columns(area, &widths);
            let rows = model.reads().take(shown).map(|r| {
                Row::new(vec![
                    clock(r.ts).into(),
                    r.session.to_string().into(),
                    truncate(&r.comm, cols[2]).into(),
                    truncate_left(&r.path, cols[3]).into(),
                    truncate(&r.credentials.join(","), cols[4]).magenta(),
                ])
            });
            let header = vec!["UTC", "S", "COMM", "PATH", "CREDENTIALS"];
            (header, widths, rows.collect())
        }
    };
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(BOLD))
        .block(block)
        .row_highlight_style(SELECTED);
    frame.render_stateful_widget(
        table,
        area,
        &mut TableState::default().with_selected(selected),
    );
}

/// The width each column gets inside a bordered `area`, as `Table` lays them out.
fn columns(area: Rect, widths: &[Constraint]) -> Vec<usize> {
    let inner = Block::bordered().inner(area);
    Layout::horizontal(widths.iter().copied())
        .spacing(1)
        .split(inner)
        .iter()
        .map(|r| r.width as usize)
        .collect()
}

fn action(action: Action) -> ratatui::text::Text<'static> {
    let name = action.name();
    let span = match action {
        Action::Block | Action::Kill => name.red().bold(),
        Action::Ask => name.yellow().bold(),
        Action::Observe | Action::Alert => name.into(),
    };
    span.into()
}

/// A connect's return value: "ok" or the errno's name.
fn result(ret: i64) -> ratatui::text::Text<'static> {
    let name = match -ret {
        0 => return "ok".green().into(),
        // Non-blocking connects: the kernel let it through.
        115 => return "EINPROGRESS".green().into(),
        1 => return "EPERM".red().bold().into(),
        13 => "EACCES".to_string(),
        101 => "ENETUNREACH".to_string(),
        110 => "ETIMEDOUT".to_string(),
        111 => "ECONNREFUSED".to_string(),
        113 => "EHOSTUNREACH".to_string(),
        n => format!("errno {n}"),
    };
    name.yellow().into()
}

/// `hh:mm:ss` UTC, as in the daemon's RFC 3339 times.
fn clock(ts: SystemTime) -> String {
    let secs = ts.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else if max == 0 {
        String::new()
    } else {
        s.chars().take(max - 1).chain(once('…')).collect()
    }
}

/// Keeps the end, where a path's file name is.
fn truncate_left(s: &str, max: usize) -> String {
    let count = s.chars().count();
    if count <= max {
        s.to_string()
    } else if max == 0 {
        String::new()
    } else {
        once('…').chain(s.chars().skip(count - (max - 1))).collect()
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::commands::top::model::tests::{alert_event, open_event, pending_request, status};
    use crate::control::protocol::Response;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use ratatui::buffer::Buffer;
    use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

    /// The screen as text, one line per row.
    pub fn screen(buffer: &Buffer) -> String {
        buffer
            .content()
            .chunks(buffer.area.width as usize)
            .map(|row| row.iter().map(|c| c.symbol()).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn render(model: &Model, now: Instant, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| draw(f, model, now)).unwrap();
        screen(terminal.backend().buffer())
    }

    fn model(now: Instant) -> Model {
        let mut m = Model::default();
        m.apply(Response::Status(status()), now);
        m.apply(
            Response::Pending {
                pending: vec![pending_request(4242, 30)],
            },
            now,
        );
        m.apply(open_event(1, "cat"), now);
        m.apply(alert_event(1), now);
        m
    }

    #[test]
    fn renders_everything_at_80x24() {
        let now = Instant::now();
        let m = model(now);
        let text = render(&m, now, 80, 24);
        for want in [
            "Claude Code",
            "STOPPED",
            "bash -c cat ~/.railway/config.json",
            "102 cat",
            "4242",
            "30s",
            "backboard.railway.app",
            "block",
            "lost 3",
            "1 pending",
            "q quit",
            "? help",
            "a approve",
            "d deny",
            "Enter details",
            "s filter session",
        ] {
            assert!(text.contains(want), "{want:?} missing from\n{text}");
        }
        // The wide layout shows the same.
        let wide = render(&m, now, 160, 40);
        assert!(wide.contains("backboard.railway.app:443"), "{wide}");
    }

    #[test]
    fn tabs_disconnection_and_messages() {
        let now = Instant::now();
        let mut m = model(now);
        for _ in 0..4 {
            m.key(KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE), now);
        }
        assert_eq!(m.tab, Pane::Reads);
        let text = render(&m, now, 80, 24);
        assert!(
            text.contains("…/.railway/config.json")
                || text.contains("/home/u/.railway/config.json")
        );
        assert!(text.contains("railway"), "{text}");
        m.link(super::super::model::Link::Poll, false);
        m.say("request 4242 approved", false, now);
        let text = render(&m, now, 80, 24);
        assert!(text.contains("daemon disconnected — retrying"), "{text}");
        assert!(text.contains("request 4242 approved"), "{text}");
        // Never panics on a tiny terminal.
        render(&m, now, 10, 3);
        render(&Model::default(), now, 80, 24);
    }

    #[test]
    fn the_prompt_help_and_details_show_at_80x24() {
        let now = Instant::now();
        let mut m = model(now);
        let press = |m: &mut Model, code| m.key(KeyEvent::new(code, KeyModifiers::NONE), now);
        press(&mut m, KeyCode::Char('d'));
        let text = render(&m, now, 80, 24);
        assert!(text.contains("deny request 4242? y/n"), "{text}");

        press(&mut m, KeyCode::Char('n'));
        press(&mut m, KeyCode::Char('?'));
        let text = render(&m, now, 80, 24);
        for (keys, what) in KEYS {
            assert!(
                text.contains(keys) && text.contains(what),
                "{keys} {what}:\n{text}"
            );
        }

        press(&mut m, KeyCode::Char('?'));
        press(&mut m, KeyCode::Tab);
        press(&mut m, KeyCode::Tab);
        press(&mut m, KeyCode::Enter);
        let text = render(&m, now, 80, 24);
        for want in [
            "alert in session 1",
            "backboard.railway.app:443 (127.0.0.2)",
            "railway: /home/u/.railway/config.json",
            "101 bash: bash -c deploy",
        ] {
            assert!(text.contains(want), "{want:?} missing from\n{text}");
        }
    }

    #[test]
    fn helpers() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
        assert_eq!(truncate_left("/a/b/c.json", 7), "…c.json");
        let ts = humantime::parse_rfc3339("2026-11-27T15:06:03.45Z").unwrap();
        assert_eq!(clock(ts), "15:06:03");
        let text = |ret| result(ret).to_string();
        assert_eq!(text(0), "ok");
        assert_eq!(text(-1), "EPERM");
        assert_eq!(text(-111), "ECONNREFUSED");
        assert_eq!(text(-99), "errno 99");
    }
}
