//! `kvscope dashboard`: a live terminal view of vLLM servers.
//!
//! Pieces kept apart (after bottom and tokio-console): [`state`] (what is known),
//! [`view`] (pure drawing), the event loop here (one [`Ev`] enum through one
//! `tokio::select!`) and a terminal guard that restores the screen on drop and on panic.
//! Scrapes go through the same parser, adapter and analysis SQL as `record`/`analyze`;
//! `r` records the same stream through the same [`Pipeline`], so the files are identical.

pub mod state;
pub mod view;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{self, Event as CtEvent, KeyCode, KeyEventKind};

use crate::adapter::{self, Normalizer};
use crate::analysis::{self, Thresholds};
use crate::record::{Pipeline, Target, now_us, session_id};
use crate::source::{prom, scrape};
use crate::store::{Metadata, RecorderSettings, SessionWriter, SourceInfo};
use state::{Density, ServerPane, State};

/// Errors of the dashboard.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("the dashboard needs a terminal; use --once for a text snapshot")]
    NotATerminal,
    #[error("terminal: {0}")]
    Terminal(#[from] std::io::Error),
    #[error(transparent)]
    Scrape(#[from] scrape::ScrapeError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Dashboard settings.
#[derive(Debug, Clone)]
pub struct DashboardConfig {
    pub targets: Vec<Target>,
    pub interval: Duration,
    pub timeout: Duration,
    pub density: Density,
    /// Seconds of history kept and analysed.
    pub window_s: f64,
    /// Where `r` writes sessions.
    pub sessions_dir: PathBuf,
    pub bearer: Option<String>,
}

/// Scrapes, normalizes and analyses; owns the optional recording.
pub struct Live {
    cfg: DashboardConfig,
    client: reqwest::Client,
    normalizers: Vec<Normalizer>,
    recording: Option<Pipeline>,
    thresholds: Thresholds,
    pub state: State,
}

impl Live {
    pub fn new(cfg: DashboardConfig) -> Result<Self, DashboardError> {
        let client = scrape::client(cfg.timeout)?;
        let panes = cfg
            .targets
            .iter()
            .map(|t| ServerPane::new(&t.label, &t.redacted_url()))
            .collect();
        Ok(Self {
            normalizers: cfg.targets.iter().map(|_| Normalizer::new()).collect(),
            state: State::new(panes, cfg.density),
            client,
            recording: None,
            thresholds: Thresholds::default(),
            cfg,
        })
    }

    /// One scrape of every server, then the window analysis of each.
    pub async fn round(&mut self) -> Result<(), DashboardError> {
        let tick = now_us();
        let results = futures::future::join_all(self.cfg.targets.iter().map(|t| {
            scrape::scrape(
                &self.client,
                &t.url,
                self.cfg.bearer.as_deref(),
                self.cfg.timeout,
            )
        }))
        .await;
        let t0 = self
            .state
            .panes
            .iter()
            .flat_map(|p| p.rows.front())
            .map(|r| r.ts)
            .min()
            .unwrap_or(tick);
        for (i, res) in results.into_iter().enumerate() {
            let (Some(t), Some(n), Some(pane)) = (
                self.cfg.targets.get(i),
                self.normalizers.get_mut(i),
                self.state.panes.get_mut(i),
            ) else {
                continue;
            };
            match res {
                Ok(page) => {
                    let ts = page.sim_time.map(|s| (s * 1e6) as i64).unwrap_or(tick);
                    let ms = page.elapsed.as_secs_f64() * 1e3;
                    let reading = adapter::read(&prom::parse(&page.body));
                    let t_rel = (ts - t0) as f64 / 1e6;
                    let rows = if reading.engines.is_empty() {
                        let mut rows = n.failed(&t.label, ts, t_rel, Some(ms));
                        for r in &mut rows {
                            r.scrape_error = Some("not vLLM metrics".into());
                        }
                        rows
                    } else {
                        n.normalize(&t.label, ts, t_rel, Some(ms), &reading).samples
                    };
                    pane.push(rows, self.cfg.window_s);
                    if let Some(p) = &mut self.recording {
                        p.ingest_text(&t.label, ts, Some(ms), &page.body)?;
                    }
                }
                Err(e) => {
                    let mut rows = n.failed(&t.label, tick, (tick - t0) as f64 / 1e6, None);
                    for r in &mut rows {
                        r.scrape_error = Some(e.to_string());
                    }
                    pane.push(rows, self.cfg.window_s);
                    if let Some(p) = &mut self.recording {
                        p.ingest_failure(&t.label, tick, None, &e.to_string())?;
                    }
                }
            }
        }
        for pane in &mut self.state.panes {
            let rows: Vec<_> = pane.rows.iter().cloned().collect();
            pane.analysis = analysis::analyze_rows(rows, &self.thresholds).await.ok();
        }
        Ok(())
    }

    /// Starts or stops recording (key `r`).
    pub fn toggle_recording(&mut self) -> Result<(), DashboardError> {
        if let Some(p) = self.recording.take() {
            let dir = p.finish(now_us())?;
            self.state.recording = None;
            self.state.status = Some(format!("saved {}", dir.display()));
            return Ok(());
        }
        let label = self
            .cfg
            .targets
            .first()
            .map(|t| t.label.replace(':', "-"))
            .unwrap_or_default();
        let id = session_id(chrono::Utc::now(), &label);
        let dir = self.cfg.sessions_dir.join(&id);
        let meta = Metadata::new(
            &id,
            &crate::record::rfc3339(now_us()),
            SourceInfo {
                kind: "scrape".into(),
                urls: self.cfg.targets.iter().map(Target::redacted_url).collect(),
                scenario: None,
                seed: None,
            },
            RecorderSettings {
                interval_s: self.cfg.interval.as_secs_f64(),
                timeout_s: self.cfg.timeout.as_secs_f64(),
                duration_s: None,
            },
        );
        self.recording = Some(Pipeline::new(SessionWriter::create(&dir, meta)?));
        self.state.recording = Some(dir.display().to_string());
        self.state.status = None;
        Ok(())
    }

    /// Finalizes a recording in progress.
    pub fn finish(&mut self) -> Result<Option<PathBuf>, DashboardError> {
        match self.recording.take() {
            Some(p) => Ok(Some(p.finish(now_us())?)),
            None => Ok(None),
        }
    }
}

/// Renders `state` into a `width × height` text snapshot (no colours).
pub fn render_text(state: &State, width: u16, height: u16) -> String {
    let Ok(mut term) = Terminal::new(TestBackend::new(width, height));
    let _ = term.draw(|f| view::draw(f, state));
    let buf = term.backend().buffer();
    let mut out = String::new();
    for y in 0..buf.area.height {
        let mut line = String::new();
        for x in 0..buf.area.width {
            line.push_str(buf.cell((x, y)).map(|c| c.symbol()).unwrap_or(" "));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `--once`: two rounds an interval apart (so rates exist), then one text snapshot.
pub async fn once(cfg: DashboardConfig) -> Result<String, DashboardError> {
    let (w, h) = match cfg.density {
        Density::Compact => (80, 24),
        Density::Full => (120, 40),
    };
    let interval = cfg.interval;
    let mut live = Live::new(cfg)?;
    live.round().await?;
    tokio::time::sleep(interval).await;
    live.round().await?;
    Ok(render_text(&live.state, w, h))
}

/// Everything the event loop reacts to.
#[derive(Debug)]
enum Ev {
    Tick,
    Key(KeyCode),
    Redraw,
}

/// Restores the terminal when dropped (ratatui's init also restores on panic).
struct TermGuard;

impl Drop for TermGuard {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// Runs the full-screen dashboard until `q`.
pub async fn run(cfg: DashboardConfig) -> Result<Option<PathBuf>, DashboardError> {
    if !std::io::stdout().is_terminal() {
        return Err(DashboardError::NotATerminal);
    }
    let interval = cfg.interval;
    let mut live = Live::new(cfg)?;
    let mut terminal = ratatui::init();
    let _guard = TermGuard;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let keys_tx = tx.clone();
    std::thread::spawn(move || {
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            if event::poll(Duration::from_millis(100)).unwrap_or(false) {
                let ev = match event::read() {
                    Ok(CtEvent::Key(k)) if k.kind == KeyEventKind::Press => Ev::Key(k.code),
                    Ok(CtEvent::Resize(..)) => Ev::Redraw,
                    _ => continue,
                };
                if keys_tx.send(ev).is_err() {
                    break;
                }
            }
        }
    });
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let result = loop {
        let ev = tokio::select! {
            _ = ticker.tick() => Ev::Tick,
            Some(ev) = rx.recv() => ev,
        };
        match ev {
            Ev::Tick if !live.state.paused => {
                if let Err(e) = live.round().await {
                    live.state.status = Some(e.to_string());
                }
            }
            Ev::Tick | Ev::Redraw => {}
            Ev::Key(KeyCode::Char('q') | KeyCode::Esc) => break Ok(()),
            Ev::Key(KeyCode::Char('p')) => live.state.paused = !live.state.paused,
            Ev::Key(KeyCode::Char('d')) => live.state.toggle_density(),
            Ev::Key(KeyCode::Char('?')) => live.state.help = !live.state.help,
            Ev::Key(KeyCode::Right | KeyCode::Tab) => live.state.next(),
            Ev::Key(KeyCode::Left | KeyCode::BackTab) => live.state.prev(),
            Ev::Key(KeyCode::Char('r')) => {
                if let Err(e) = live.toggle_recording() {
                    live.state.status = Some(e.to_string());
                }
            }
            Ev::Key(_) => {}
        }
        if let Err(e) = terminal.draw(|f| view::draw(f, &live.state)) {
            break Err(DashboardError::Terminal(e));
        }
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(tx);
    let saved = live.finish()?;
    result.map(|_| saved)
}
