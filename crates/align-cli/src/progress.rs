//! Progress of a pass over a collection on stderr, from [`align_collection::Progress`].

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use align_collection::Progress;

/// A progress bar on a terminal (done / total, rate, ETA; the total as counted so far, marked
/// until the count is over), else a plain line every 10 s.
fn show(progress: &Progress, finished: &AtomicBool, start: Instant) {
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let done = || load(&progress.embedded) + load(&progress.failed);
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::no_length().with_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {pos}/{len} images [{elapsed_precise}] ETA {eta} {msg}",
            )
            .expect("a valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    let mut last_line = Instant::now();
    while !finished.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        let counted = progress.total_known.load(Ordering::Relaxed);
        // Until the count is over, the total shown is what has been counted so far.
        let total = match counted {
            true => load(&progress.total).to_string(),
            false => format!("{}+", load(&progress.total)),
        };
        let rate = load(&progress.embedded) as f64 / start.elapsed().as_secs_f64().max(1e-9);
        let status = format!(
            "{rate:.1} images/s, {} failed, {} already present",
            load(&progress.failed),
            load(&progress.present)
        );
        if let Some(bar) = &bar {
            bar.set_length(load(&progress.total).max(done()));
            bar.set_position(done());
            bar.set_message(if counted {
                status
            } else {
                format!("(counting) {status}")
            });
        } else if last_line.elapsed() >= Duration::from_secs(10) {
            last_line = Instant::now();
            eprintln!("{}/{total} images, {status}", done());
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

/// Runs `f` with a progress display on stderr.
pub fn with_progress<T>(f: impl FnOnce(&Progress) -> T) -> T {
    let progress = Progress::default();
    let finished = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| show(&progress, &finished, Instant::now()));
        let result = f(&progress);
        finished.store(true, Ordering::Relaxed);
        result
    })
}
