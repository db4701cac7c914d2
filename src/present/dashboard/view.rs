//! Dashboard view: pure functions from [`State`] to a ratatui frame. Small pieces, one
//! per panel; no state changes here.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Cell, Clear, Gauge, Paragraph, Row, Sparkline, Table, Wrap,
};

use super::state::{Density, ServerPane, State};
use crate::analysis::PhasePoint;
use crate::present::clock;
use crate::vocab::Phase;

/// Draws the whole dashboard.
pub fn draw(f: &mut Frame, s: &State) {
    let area = f.area();
    let Some(pane) = s.pane() else {
        f.render_widget(Paragraph::new("no servers"), area);
        return;
    };
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(8),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(f, header, s, pane);
    match s.density {
        Density::Compact => draw_compact(f, body, pane),
        Density::Full => draw_full(f, body, pane),
    }
    draw_footer(f, footer, s);
    if s.help {
        draw_help(f, area);
    }
}

fn phase_style(p: Option<Phase>) -> Style {
    match p {
        Some(Phase::Saturated) => Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        Some(Phase::QueuePressure) => Style::default()
            .fg(Color::Yellow)
            .add_modifier(Modifier::BOLD),
        Some(Phase::KvPressureRising) => Style::default().fg(Color::Magenta),
        Some(Phase::Healthy) => Style::default().fg(Color::Green),
        Some(Phase::Idle | Phase::NoData) | None => Style::default().fg(Color::DarkGray),
    }
}

fn kv_color(kv: f64) -> Color {
    if kv >= 95.0 {
        Color::Red
    } else if kv >= 80.0 {
        Color::Yellow
    } else {
        Color::Green
    }
}

fn draw_header(f: &mut Frame, area: Rect, s: &State, p: &ServerPane) {
    let model = p
        .latest()
        .first()
        .map(|r| r.model_name.clone())
        .unwrap_or_default();
    let phase = p.phase();
    let conds = p.active_conditions();
    let mut line1 = vec![
        Span::styled("KVScope ", Style::default().add_modifier(Modifier::BOLD)),
        Span::raw(format!(
            "{} ({}/{}) ",
            p.label,
            s.selected + 1,
            s.panes.len()
        )),
        Span::styled(model, Style::default().fg(Color::Cyan)),
    ];
    if s.paused {
        line1.push(Span::styled("  PAUSED", Style::default().fg(Color::Yellow)));
    }
    if let Some(dir) = &s.recording {
        line1.push(Span::styled(
            format!("  ● REC {dir}"),
            Style::default().fg(Color::Red),
        ));
    }
    let mut line2 = vec![
        Span::raw("phase "),
        Span::styled(phase.map_or("—", Phase::as_str), phase_style(phase)),
    ];
    if !conds.is_empty() {
        line2.push(Span::styled(
            format!(
                "  [{}]",
                conds
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Style::default().fg(Color::Yellow),
        ));
    }
    if let Some(err) = &p.last_error {
        let since = p
            .last_ok_ts
            .map(crate::record::rfc3339)
            .map(|t| clock(&t))
            .unwrap_or_else(|| "start".into());
        line2.push(Span::styled(
            format!("  no data since {since}: {err}"),
            Style::default().fg(Color::Red),
        ));
    }
    f.render_widget(
        Paragraph::new(vec![Line::from(line1), Line::from(line2)]),
        area,
    );
}

fn spark(f: &mut Frame, area: Rect, title: String, data: &[u64], color: Color) {
    let width = area.width.saturating_sub(2) as usize;
    let tail = &data[data.len().saturating_sub(width)..];
    f.render_widget(
        Sparkline::default()
            .block(Block::default().borders(Borders::ALL).title(title))
            .data(tail)
            .style(Style::default().fg(color)),
        area,
    );
}

fn series(units: &[PhasePoint], f: impl Fn(&PhasePoint) -> Option<f64>, scale: f64) -> Vec<u64> {
    units
        .iter()
        .map(|u| f(u).map(|v| (v * scale).max(0.0) as u64).unwrap_or(0))
        .collect()
}

fn draw_compact(f: &mut Frame, area: Rect, p: &ServerPane) {
    let units = p.units();
    let last = units.iter().rev().find(|u| u.scrape_ok);
    let [kv_row, sparks, events] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Min(6),
        Constraint::Length(6),
    ])
    .areas(area);
    let kv = last.and_then(|u| u.kv_max_pct).unwrap_or(0.0);
    let count = |f: fn(&PhasePoint) -> Option<f64>| {
        last.and_then(f).map_or("—".into(), |v| format!("{v:.0}"))
    };
    let [gauge, counts] =
        Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(kv_row);
    f.render_widget(
        Gauge::default()
            .block(Block::default().borders(Borders::ALL).title("KV cache"))
            .gauge_style(Style::default().fg(kv_color(kv)))
            .percent(kv.clamp(0.0, 100.0).round() as u16)
            .label(format!("{kv:.1}%")),
        gauge,
    );
    f.render_widget(
        Paragraph::new(format!(
            "running {}  waiting {}",
            count(|u| u.running),
            count(|u| u.waiting)
        ))
        .block(Block::default().borders(Borders::ALL).title("scheduler")),
        counts,
    );
    let [a, b] =
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(sparks);
    let [a1, a2] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(a);
    let [b1, b2] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(b);
    spark(
        f,
        a1,
        format!("KV % {kv:.0}"),
        &series(units, |u| u.kv_max_pct, 1.0),
        kv_color(kv),
    );
    spark(
        f,
        a2,
        format!("waiting {}", count(|u| u.waiting)),
        &series(units, |u| u.waiting, 1.0),
        Color::Yellow,
    );
    // TTFT is observed only when first tokens arrive: show the latest known value.
    let ttft = units.iter().rev().find_map(|u| u.ttft_p95_s).unwrap_or(0.0);
    spark(
        f,
        b1,
        format!("TTFT p95 {ttft:.2}s"),
        &series(units, |u| u.ttft_p95_s, 1000.0),
        if ttft >= 2.0 { Color::Red } else { Color::Cyan },
    );
    spark(
        f,
        b2,
        format!("gen tok/s {}", count(|u| u.generation_tokens_per_s)),
        &series(units, |u| u.generation_tokens_per_s, 1.0),
        Color::Green,
    );
    draw_events(f, events, p);
}

fn draw_events(f: &mut Frame, area: Rect, p: &ServerPane) {
    let lines: Vec<Line> = p
        .recent_events(area.height.saturating_sub(2) as usize)
        .into_iter()
        .map(|e| {
            let what = match e.kind.as_str() {
                "phase_transition" => format!(
                    "{} → {}",
                    e.from.as_deref().unwrap_or("?"),
                    e.to.as_deref().unwrap_or("?")
                ),
                _ => format!(
                    "{} {}",
                    e.event.as_deref().unwrap_or("?"),
                    e.value.map(|v| format!("{v}")).unwrap_or_default()
                ),
            };
            Line::from(format!("{} {what}", clock(&e.ts)))
        })
        .collect();
    f.render_widget(
        Paragraph::new(lines)
            .block(
                Block::default()
                    .borders(Borders::ALL)
                    .title("recent transitions and events"),
            )
            .wrap(Wrap { trim: true }),
        area,
    );
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "—".into())
}

fn draw_full(f: &mut Frame, area: Rect, p: &ServerPane) {
    let [top, bottom] =
        Layout::vertical([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(area);
    draw_compact(f, top, p);
    let [lat, counters, engines] = Layout::horizontal([
        Constraint::Percentage(40),
        Constraint::Percentage(30),
        Constraint::Percentage(30),
    ])
    .areas(bottom);
    let latest = p.latest();
    let worst = |g: fn(&crate::store::schema::Sample) -> Option<f64>| {
        latest
            .iter()
            .filter_map(|r| g(r))
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
    };
    let rows = vec![
        Row::new(vec![
            Cell::from("TTFT"),
            Cell::from(fmt(worst(|r| r.ttft_p50_s), 3)),
            Cell::from(fmt(worst(|r| r.ttft_p95_s), 3)),
            Cell::from(fmt(worst(|r| r.ttft_p99_s), 3)),
        ]),
        Row::new(vec![
            Cell::from("ITL"),
            Cell::from(fmt(worst(|r| r.itl_p50_s), 3)),
            Cell::from(fmt(worst(|r| r.itl_p95_s), 3)),
            Cell::from("—"),
        ]),
        Row::new(vec![
            Cell::from("E2E"),
            Cell::from(fmt(worst(|r| r.e2e_p50_s), 2)),
            Cell::from(fmt(worst(|r| r.e2e_p95_s), 2)),
            Cell::from(fmt(worst(|r| r.e2e_p99_s), 2)),
        ]),
        Row::new(vec![
            Cell::from("queue"),
            Cell::from(fmt(worst(|r| r.queue_time_mean_s), 2)),
            Cell::from(fmt(worst(|r| r.queue_time_p95_s), 2)),
            Cell::from("—"),
        ]),
        Row::new(vec![
            Cell::from("prefill"),
            Cell::from("—"),
            Cell::from(fmt(worst(|r| r.prefill_time_p95_s), 2)),
            Cell::from("—"),
        ]),
    ];
    f.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Length(8),
            ],
        )
        .header(
            Row::new(vec!["s", "p50", "p95", "p99"])
                .style(Style::default().add_modifier(Modifier::BOLD)),
        )
        .block(
            Block::default()
                .borders(Borders::ALL)
                .title("latency (last interval; queue p50 = mean)"),
        ),
        lat,
    );
    let sum = |g: fn(&crate::store::schema::Sample) -> Option<i64>| {
        latest.iter().filter_map(|r| g(r)).sum::<i64>()
    };
    let hit = latest
        .iter()
        .filter_map(|r| r.prefix_cache_hit_rate_pct)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    let text = vec![
        Line::from(format!(
            "prompt tokens   {}",
            sum(|r| r.prompt_tokens_total)
        )),
        Line::from(format!(
            "gen tokens      {}",
            sum(|r| r.generation_tokens_total)
        )),
        Line::from(format!(
            "finished        {}",
            sum(|r| r.requests_finished_total)
        )),
        Line::from(format!("preemptions     {}", sum(|r| r.preemptions_total))),
        Line::from(format!("prefix hit %    {}", fmt(hit, 1))),
    ];
    f.render_widget(
        Paragraph::new(text).block(Block::default().borders(Borders::ALL).title("counters")),
        counters,
    );
    let erows: Vec<Row> = latest
        .iter()
        .map(|r| {
            Row::new(vec![
                Cell::from(r.engine.clone()),
                Cell::from(fmt(r.kv_cache_usage_pct, 1)),
                Cell::from(r.requests_running.map_or("—".into(), |v| v.to_string())),
                Cell::from(r.requests_waiting.map_or("—".into(), |v| v.to_string())),
            ])
        })
        .collect();
    f.render_widget(
        Table::new(
            erows,
            [
                Constraint::Length(4),
                Constraint::Length(7),
                Constraint::Length(5),
                Constraint::Length(5),
            ],
        )
        .header(
            Row::new(vec!["eng", "KV %", "run", "wait"])
                .style(Style::default().add_modifier(Modifier::BOLD)),
        )
        .block(Block::default().borders(Borders::ALL).title("engines")),
        engines,
    );
}

fn draw_footer(f: &mut Frame, area: Rect, s: &State) {
    let msg = s.status.clone().unwrap_or_default();
    f.render_widget(
        Paragraph::new(format!(
            "q quit  p pause  d density  r record  ←/→ server  ? help  {msg}"
        ))
        .style(Style::default().fg(Color::DarkGray)),
        area,
    );
}

fn draw_help(f: &mut Frame, area: Rect) {
    let w = area.width.min(60);
    let h = area.height.min(12);
    let r = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(vec![
            Line::from("q / Esc   quit"),
            Line::from("p         pause / resume scraping"),
            Line::from("d         compact ↔ full"),
            Line::from("r         start / stop recording a session"),
            Line::from("← → Tab   switch server"),
            Line::from("?         this help"),
            Line::from(""),
            Line::from("Phases and events use the same SQL as `kvscope analyze`."),
        ])
        .block(Block::default().borders(Borders::ALL).title("help")),
        r,
    );
}
