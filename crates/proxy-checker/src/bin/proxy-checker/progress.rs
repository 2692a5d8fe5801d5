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
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} checked · {msg} · {per_sec} · ETA {eta}")
                .expect("static template")
                .progress_chars("=> "),
        );
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                bar.set_length(progress.total.load(Ordering::Relaxed));
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
