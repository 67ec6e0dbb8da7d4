//! Progress of a pass over a collection on stderr, from [`align_collection::Progress`].

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use align_collection::Progress;

/// A progress bar on a terminal (done / total, rate, ETA; the total known once the listing
/// has finished), else a plain line every 10 s.
pub fn show(progress: &Progress, finished: &AtomicBool, start: Instant) {
    let done =
        || progress.embedded.load(Ordering::Relaxed) + progress.failed.load(Ordering::Relaxed);
    let terminal = std::io::stderr().is_terminal();
    let bar = terminal.then(|| {
        let bar = indicatif::ProgressBar::no_length().with_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {pos}/{len} images {per_sec} [{elapsed_precise}] ETA {eta} {msg}",
            )
            .expect("a valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    let mut last_line = Instant::now();
    while !finished.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        let listed = progress.listing_done.load(Ordering::Relaxed);
        let total = progress.to_do.load(Ordering::Relaxed);
        if let Some(bar) = &bar {
            if listed {
                bar.set_length(total);
            }
            bar.set_position(done());
            bar.set_message(format!(
                "({} already present)",
                progress.present.load(Ordering::Relaxed)
            ));
        } else if last_line.elapsed() >= Duration::from_secs(10) {
            last_line = Instant::now();
            let total = if listed {
                total.to_string()
            } else {
                format!("{total}+")
            };
            let secs = start.elapsed().as_secs_f64();
            eprintln!(
                "{}/{total} images, {} failed, {} already present, {:.1} images/s",
                done(),
                progress.failed.load(Ordering::Relaxed),
                progress.present.load(Ordering::Relaxed),
                progress.embedded.load(Ordering::Relaxed) as f64 / secs.max(1e-9),
            );
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}
