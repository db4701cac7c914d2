//! `kvscope dashboard`: a live terminal view of vLLM servers.
//!
//! Pieces kept apart (after bottom and tokio-console): [`state`] (what is known),
//! [`view`] (pure drawing), [`Live`] (the work) and the UI loop here.
//!
//! One recording pipeline: [`Live`] scrapes with `record`'s [`Scraper`] and normalizes
//! with `record`'s [`Pipeline`]; `r` attaches a session to that same pipeline, so the
//! window and the files hold the very same rows. Relative time runs from the
//! dashboard's start (the pipeline's), never from the window's edge. Each pane's window
//! is analysed by a [`WindowAnalyzer`] (the SQL catalog planned once, executed per
//! tick). Scraping and analysis run on their own task; the UI task only draws the
//! latest snapshot and answers keys, so a key never waits for a scrape.

pub mod state;
pub mod view;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{self, Event as CtEvent, KeyCode, KeyEventKind};

use crate::analysis::{Thresholds, WindowAnalyzer};
use crate::record::{Pipeline, Scraper, Target, now_us, session_id};
use crate::source::scrape;
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
    #[error(transparent)]
    Analysis(#[from] crate::analysis::AnalysisError),
    #[error("the dashboard's worker stopped: {0}")]
    Worker(String),
}

/// Dashboard settings.
#[derive(Debug, Clone)]
pub struct DashboardConfig {
    pub targets: Vec<Target>,
    /// GPU exporters scraped in the same rounds (`Target::gpu_for` names their server).
    pub gpu_targets: Vec<Target>,
    pub interval: Duration,
    pub timeout: Duration,
    pub density: Density,
    /// Seconds of history kept and analysed.
    pub window_s: f64,
    /// Where `r` writes sessions.
    pub sessions_dir: PathBuf,
    pub bearer: Option<String>,
}

/// Scrapes, normalizes and analyses through the recorder's pipeline; owns the optional
/// recording.
pub struct Live {
    cfg: DashboardConfig,
    scraper: Scraper,
    pipe: Pipeline,
    analyzers: Vec<WindowAnalyzer>,
    pub state: State,
}

impl Live {
    pub async fn new(cfg: DashboardConfig) -> Result<Self, DashboardError> {
        let client = scrape::client(cfg.timeout)?;
        let panes = cfg
            .targets
            .iter()
            .map(|t| ServerPane::new(&t.label, &t.redacted_url()))
            .collect();
        let thresholds = Thresholds::default();
        let mut analyzers = Vec::new();
        for _ in &cfg.targets {
            analyzers.push(WindowAnalyzer::new(&thresholds).await?);
        }
        Ok(Self {
            // GPU exporters first: a round's GPU page joins its server's page of the round.
            scraper: Scraper::new(
                client,
                cfg.gpu_targets
                    .iter()
                    .chain(&cfg.targets)
                    .cloned()
                    .collect(),
                cfg.bearer.clone(),
                cfg.timeout,
            ),
            pipe: Pipeline::in_memory(),
            analyzers,
            state: State::new(panes, cfg.density),
            cfg,
        })
    }

    /// One scrape of every server through the pipeline, then the window analysis of each.
    pub async fn round(&mut self) -> Result<(), DashboardError> {
        let round = self.scraper.round().await;
        for s in round.scraped {
            let (server, got) = self.pipe.ingest(s)?;
            let rows = got.samples;
            if rows.is_empty() {
                continue; // a GPU exporter's page: it joins the server's rows
            }
            if let Some(pane) = self.state.panes.iter_mut().find(|p| p.label == server) {
                pane.push(rows, self.cfg.window_s);
            }
        }
        for (pane, analyzer) in self.state.panes.iter_mut().zip(&mut self.analyzers) {
            let rows: Vec<_> = pane.rows.iter().cloned().collect();
            pane.analysis = analyzer.analyze(&rows).await.ok();
        }
        Ok(())
    }

    /// Starts or stops recording (key `r`).
    pub fn toggle_recording(&mut self) -> Result<(), DashboardError> {
        if let Some(dir) = self.pipe.detach(now_us())? {
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
                ..Default::default()
            },
            RecorderSettings {
                interval_s: self.cfg.interval.as_secs_f64(),
                timeout_s: self.cfg.timeout.as_secs_f64(),
                duration_s: None,
            },
        );
        self.pipe.attach(SessionWriter::create(&dir, meta)?);
        self.state.recording = Some(dir.display().to_string());
        self.state.status = None;
        Ok(())
    }

    /// Finalizes a recording in progress.
    pub fn finish(&mut self) -> Result<Option<PathBuf>, DashboardError> {
        Ok(self.pipe.detach(now_us())?)
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
    let mut live = Live::new(cfg).await?;
    live.round().await?;
    tokio::time::sleep(interval).await;
    live.round().await?;
    Ok(render_text(&live.state, w, h))
}

/// What the UI asks of the worker.
#[derive(Debug)]
enum Command {
    ToggleRecording,
    Pause(bool),
    Quit,
}

/// Everything the UI loop reacts to.
#[derive(Debug)]
enum Ev {
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

/// The worker: scrapes on the interval, analyses, publishes snapshots; answers commands.
/// Returns the session directory of a recording still running at quit.
async fn work(
    mut live: Live,
    interval: Duration,
    snapshots: tokio::sync::watch::Sender<State>,
    mut commands: tokio::sync::mpsc::UnboundedReceiver<Command>,
) -> Result<Option<PathBuf>, DashboardError> {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut paused = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if paused {
                    continue;
                }
                if let Err(e) = live.round().await {
                    live.state.status = Some(e.to_string());
                }
            }
            cmd = commands.recv() => match cmd {
                Some(Command::ToggleRecording) => {
                    if let Err(e) = live.toggle_recording() {
                        live.state.status = Some(e.to_string());
                    }
                }
                Some(Command::Pause(p)) => paused = p,
                Some(Command::Quit) | None => break,
            },
        }
        snapshots.send_replace(live.state.clone());
    }
    live.finish()
}

/// Runs the full-screen dashboard until `q`.
pub async fn run(cfg: DashboardConfig) -> Result<Option<PathBuf>, DashboardError> {
    if !std::io::stdout().is_terminal() {
        return Err(DashboardError::NotATerminal);
    }
    let interval = cfg.interval;
    let live = Live::new(cfg).await?;
    let mut ui = live.state.clone();
    let (snap_tx, mut snap_rx) = tokio::sync::watch::channel(ui.clone());
    let (cmd_tx, cmd_rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = tokio::spawn(work(live, interval, snap_tx, cmd_rx));
    let mut terminal = ratatui::init();
    let _guard = TermGuard;
    let (key_tx, mut key_rx) = tokio::sync::mpsc::unbounded_channel();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    std::thread::spawn(move || {
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            if event::poll(Duration::from_millis(50)).unwrap_or(false) {
                let ev = match event::read() {
                    Ok(CtEvent::Key(k)) if k.kind == KeyEventKind::Press => Ev::Key(k.code),
                    Ok(CtEvent::Resize(..)) => Ev::Redraw,
                    _ => continue,
                };
                if key_tx.send(ev).is_err() {
                    break;
                }
            }
        }
    });
    let send = |c: Command| {
        let _ = cmd_tx.send(c);
    };
    let result = loop {
        tokio::select! {
            changed = snap_rx.changed() => {
                if changed.is_err() {
                    break Ok(()); // the worker ended
                }
                // The worker's panes, status and recording; the UI's own selection,
                // density, help and pause.
                let snap = snap_rx.borrow_and_update().clone();
                ui.panes = snap.panes;
                ui.status = snap.status;
                ui.recording = snap.recording;
            }
            Some(ev) = key_rx.recv() => match ev {
                Ev::Redraw => {}
                Ev::Key(KeyCode::Char('q') | KeyCode::Esc) => break Ok(()),
                Ev::Key(KeyCode::Char('p')) => {
                    ui.paused = !ui.paused;
                    send(Command::Pause(ui.paused));
                }
                Ev::Key(KeyCode::Char('d')) => ui.toggle_density(),
                Ev::Key(KeyCode::Char('?')) => ui.help = !ui.help,
                Ev::Key(KeyCode::Right | KeyCode::Tab) => ui.next(),
                Ev::Key(KeyCode::Left | KeyCode::BackTab) => ui.prev(),
                Ev::Key(KeyCode::Char('r')) => send(Command::ToggleRecording),
                Ev::Key(_) => {}
            },
        }
        if let Err(e) = terminal.draw(|f| view::draw(f, &ui)) {
            break Err(DashboardError::Terminal(e));
        }
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    send(Command::Quit);
    let saved = worker
        .await
        .map_err(|e| DashboardError::Worker(e.to_string()))??;
    result.map(|_| saved)
}
