//! The terminal progress bar of `check`: checked/total, alive, checks per second, ETA.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use proxy_checker::check::Progress;

pub struct Bar {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Bar {
    pub fn start(progress: Arc<Progress>) -> Self {
        // Until the first source is parsed the total is unknown: a spinner, not a full bar
        // at 0/0. The rate is whole checks per second.
        let waiting = ProgressStyle::with_template("{spinner} fetching sources · {msg}").expect("static template");
        let counting =
            ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} checked · {msg} · {rate}/s · ETA {eta}")
                .expect("static template")
                .with_key("rate", |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0}", s.per_sec());
                })
                .progress_chars("=> ");
        let bar = ProgressBar::new(0);
        bar.set_style(waiting);
        let mut counting = Some(counting);
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                let total = progress.total.load(Ordering::Relaxed);
                if total > 0
                    && let Some(style) = counting.take()
                {
                    bar.set_style(style);
                }
                bar.set_length(total);
                bar.set_position(progress.checked.load(Ordering::Relaxed));
                bar.set_message(format!(
                    "{} alive · {} in flight",
                    progress.alive.load(Ordering::Relaxed),
                    progress.in_flight.load(Ordering::Relaxed)
                ));
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut stopped => break,
                }
            }
            bar.finish_and_clear();
        });
        Self { stop, task }
    }

    pub async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
