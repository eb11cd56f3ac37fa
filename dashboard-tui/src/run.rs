//! The event loop: terminal input on a thread of its own, fetches as background tasks,
//! a refresh tick, and a redraw after each of them. Input never waits for the network.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ratatui::backend::Backend;
use ratatui::crossterm::event::{self, Event};
use ratatui::Terminal;
use tokio::sync::mpsc;

use crate::app::{Action, App};
use crate::client::{Client, Fetch, Fetched};
use crate::clipboard;
use crate::state::input::Edit;
use crate::view;

/// How often the input thread checks whether the dashboard has quit.
const INPUT_POLL: Duration = Duration::from_millis(200);

/// Run the dashboard on `terminal` until the user quits or SIGTERM / SIGHUP arrives.
pub async fn run<B: Backend>(
    terminal: &mut Terminal<B>,
    mut app: App,
    client: Client,
) -> io::Result<()>
where
    B::Error: Into<io::Error>,
{
    let stop = Arc::new(AtomicBool::new(false));
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<io::Result<Event>>();
    let input = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("input".into())
            .spawn(move || input_thread(ev_tx, stop))?
    };
    let (res_tx, mut res_rx) = mpsc::unbounded_channel::<(Fetched, Duration)>();
    let spawn = |fetches: Vec<Fetch>| {
        for f in fetches {
            let c = client.clone();
            let tx = res_tx.clone();
            tokio::spawn(async move {
                tracing::debug!(fetch = ?f, "fetching");
                let answer = c.fetch(f).await;
                if let Some(e) = answer.0.error() {
                    tracing::warn!(error = %e, "request to the collector failed");
                }
                let _ = tx.send(answer);
            });
        }
    };
    spawn(app.start());
    let mut tick = tokio::time::interval(app.refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tick.tick().await;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;

    let result = loop {
        if let Some(text) = app.clipboard.take() {
            copy(&text);
        }
        if let Err(e) = terminal.draw(|f| view::draw(f, &app)) {
            break Err(e.into());
        }
        tokio::select! {
            ev = ev_rx.recv() => match ev {
                Some(Ok(ev)) => spawn(on_event(&mut app, ev)),
                Some(Err(e)) => break Err(e),
                None => break Ok(()),
            },
            Some((answer, took)) = res_rx.recv() => spawn(app.on_fetched(answer, took)),
            _ = tick.tick() => {
                let mut due = app.tick();
                // A view with nothing to refresh still probes a collector that is down
                // (or not a collector).
                if due.is_empty() && app.conn.is_bad() {
                    due.push(app.services_fetch());
                }
                spawn(due)
            }
            _ = term.recv() => break Ok(()),
            _ = hup.recv() => break Ok(()),
        }
        // Take every key already typed before drawing again.
        while let Ok(ev) = ev_rx.try_recv() {
            match ev {
                Ok(ev) => spawn(on_event(&mut app, ev)),
                Err(e) => return Err(e),
            }
        }
        if app.quit {
            break Ok(());
        }
    };
    // Not joined: when the terminal hangs up, crossterm's read loop spins on the dead tty
    // and never returns; the thread ends with the process.
    stop.store(true, Ordering::Relaxed);
    drop(ev_rx);
    drop(input);
    result
}

/// Put `text` on the terminal's clipboard: OSC 52 written between two frames, which
/// moves nothing on the screen.
fn copy(text: &str) {
    use std::io::Write;
    let mut out = io::stdout();
    let written = out
        .write_all(clipboard::osc52(text).as_bytes())
        .and_then(|()| out.flush());
    if let Err(e) = written {
        tracing::warn!(error = %e, "cannot write to the terminal's clipboard");
    }
}

fn on_event(app: &mut App, ev: Event) -> Vec<Fetch> {
    match ev {
        Event::Key(k) => app.key(k),
        Event::Paste(text) if app.editing() => {
            let mut out = Vec::new();
            for c in text.chars().filter(|c| !c.is_control()) {
                out.extend(app.update(Action::Edit(Edit::Char(c))));
            }
            out
        }
        // Resize and the rest: the loop redraws.
        _ => Vec::new(),
    }
}

fn input_thread(tx: mpsc::UnboundedSender<io::Result<Event>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match event::poll(INPUT_POLL) {
            Ok(false) => continue,
            Ok(true) => {
                if tx.send(event::read()).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
}
