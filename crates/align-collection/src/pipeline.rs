//! Listing, reading and decoding overlapped with the model: the stages of every pass over a
//! collection, joined by bounded channels so that memory does not grow with the collection.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use align_processor::{DecodeOptions, RgbImage, decode_bytes};
use rayon::prelude::*;

use crate::input::{Listed, Sample};
use crate::metadata::flatten_json;

/// The model, as a pass over a collection uses it.
pub trait Embedder {
    /// Embedding width.
    fn dim(&self) -> usize;
    /// L2-normalised embeddings of `images`, row-major `[images.len(), dim]`.
    fn embed_images(&self, images: &[RgbImage]) -> std::result::Result<Vec<f32>, String>;
    /// L2-normalised embeddings of `texts`, row-major `[texts.len(), dim]`.
    fn embed_texts(&self, texts: &[String]) -> std::result::Result<Vec<f32>, String>;
}

/// Counters a progress display can poll during a pass over a collection.
#[derive(Debug, Default)]
pub struct Progress {
    /// Samples to embed counted so far (by a listing of their own, ahead of the pipeline's).
    pub total: AtomicU64,
    /// Whether that count has finished (`total` is then the total).
    pub total_known: AtomicBool,
    /// Samples already done by an earlier run (`align index`: in OUT with the same
    /// fingerprint, embedded or failed).
    pub present: AtomicU64,
    /// Samples embedded so far.
    pub embedded: AtomicU64,
    /// Samples (and folders or archives) that could not be read or decoded so far.
    pub failed: AtomicU64,
}

/// A sample read and decoded.
#[derive(Debug)]
pub struct Decoded {
    pub image: RgbImage,
    /// The caption file's text, trimmed (none when absent or empty).
    pub caption: Option<String>,
    /// The sample's JSON, flattened (see [`flatten_json`]).
    pub json: BTreeMap<String, serde_json::Value>,
    /// The webdataset `cls` member's text, trimmed.
    pub cls: Option<String>,
}

/// One listed item with, for a sample, what reading and decoding it gave (an error is one
/// line naming the file).
pub type Item = (Listed, Option<Result<Decoded, String>>);

/// Runs `list` on a listing thread (it calls its argument with each item, in order, and stops
/// when that returns false), reads and decodes the samples on a second thread `batch_size` at a
/// time (a batch's images in parallel on rayon's pool), and calls `f` on the calling thread with
/// each batch in listing order while the next one is decoded. Returns what `list` returned, or
/// the first error of `f` (the other stages then stop).
///
/// `count` runs on a thread of its own, meant to count the work into [`Progress::total`]: the
/// pipeline's own listing is held back by its bounded channel, so only a listing of its own
/// knows the total early. It should return soon once its argument turns true (the pass is over).
pub fn run<R: Send, E>(
    list: impl FnOnce(&mut dyn FnMut(Listed) -> bool) -> R + Send,
    count: impl FnOnce(&AtomicBool) + Send,
    batch_size: usize,
    decode: &DecodeOptions,
    mut f: impl FnMut(Vec<Item>) -> Result<(), E>,
) -> Result<R, E> {
    let batch_size = batch_size.max(1);
    let (listed_tx, listed_rx) = sync_channel::<Listed>(4 * batch_size + 64);
    let (done_tx, done_rx) = sync_channel::<Vec<Item>>(1);
    let over = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| count(&over));
        let lister = scope.spawn(move || list(&mut |item| listed_tx.send(item).is_ok()));
        scope.spawn(move || decode_batches(listed_rx, done_tx, batch_size, decode));
        // On an error, dropping `done_rx` stops the decoder, whose end stops the lister.
        let result = done_rx.into_iter().try_for_each(&mut f);
        over.store(true, std::sync::atomic::Ordering::Relaxed);
        let listed = lister.join().expect("the listing thread does not panic");
        result.map(|()| listed)
    })
}

fn decode_batches(
    rx: Receiver<Listed>,
    tx: SyncSender<Vec<Item>>,
    batch_size: usize,
    decode: &DecodeOptions,
) {
    loop {
        let mut chunk = Vec::new();
        let mut samples = 0;
        while samples < batch_size {
            let Ok(item) = rx.recv() else { break };
            samples += usize::from(matches!(item, Listed::Sample(_)));
            chunk.push(item);
        }
        if chunk.is_empty() {
            return;
        }
        let done: Vec<Item> = chunk
            .into_par_iter()
            .map(|item| {
                let decoded = match &item {
                    Listed::Sample(s) => Some(load(s, decode)),
                    Listed::Unreadable { .. } => None,
                };
                (item, decoded)
            })
            .collect();
        if tx.send(done).is_err() {
            return;
        }
    }
}

/// Reads and decodes one sample: the image, its caption and `cls` (trimmed; empty is none)
/// and its JSON.
pub fn load(s: &Sample, decode: &DecodeOptions) -> Result<Decoded, String> {
    let bytes = s.image.read()?;
    let image = decode_bytes(&bytes, &s.image_path, decode).map_err(|e| e.to_string())?;
    let text = |loc: &Option<crate::input::Location>| -> Result<Option<String>, String> {
        let Some(loc) = loc else { return Ok(None) };
        let text = String::from_utf8_lossy(&loc.read()?).trim().to_string();
        Ok((!text.is_empty()).then_some(text))
    };
    let json = match &s.json {
        Some(loc) => {
            let value: serde_json::Value = serde_json::from_slice(&loc.read()?)
                .map_err(|e| format!("{}: sidecar JSON: {e}", s.image_path))?;
            flatten_json(value)
        }
        None => Default::default(),
    };
    Ok(Decoded {
        image,
        caption: text(&s.caption)?,
        json,
        cls: text(&s.cls)?,
    })
}
