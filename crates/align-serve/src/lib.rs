//! clip-back's HTTP API over collections written by `align index`, so that clip-retrieval's
//! `ClipClient` and front-end work against it unchanged:
//!
//! | route | what |
//! |---|---|
//! | `GET /` | a self-contained search page |
//! | `GET /indices-list` | the index names |
//! | `POST /knn-service` | nearest rows to a text, an image (base64) or an embedding |
//! | `POST /metadata` | the metadata rows of ids |
//! | `GET /image/NAME/ID` | a row's image as a JPEG thumbnail (longest side <= 512) |
//! | `GET /metrics`, `GET /health` | Prometheus metrics, liveness |
//!
//! The model runs on the blocking pool (one query at a time: it uses every core itself),
//! searches on the blocking pool too; the async threads only move bytes. Bad requests get a
//! 4xx with `{"error": "..."}`.

mod api;
mod error;
mod metrics;
mod thumbnail;

use std::sync::{Arc, Mutex};

use align_search::Collection;

pub use api::router;
pub use error::ApiError;

/// Why a query could not be embedded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The client's fault (not an image, too large): a 400.
    #[error("{0}")]
    BadInput(String),
    /// The model failed: a 500.
    #[error("{0}")]
    Model(String),
}

/// The model as the server sees it: L2-normalised query embeddings.
pub trait Encoder: Send {
    fn text(&mut self, text: &str) -> Result<Vec<f32>, EncodeError>;
    /// An encoded image file (JPEG, PNG, ...).
    fn image(&mut self, bytes: &[u8]) -> Result<Vec<f32>, EncodeError>;
}

/// What clients may ask and who may ask from a browser.
#[derive(Debug, Clone)]
pub struct Options {
    /// Largest request body in bytes.
    pub body_bytes: usize,
    /// Most results (`num_images`, `num_result_ids`) one query may ask for.
    pub results: usize,
    /// Web origins whose pages may call the API from a browser (CORS), e.g. a clip-front
    /// hosted elsewhere; `*` for any. None by default: a page on another site must not read
    /// a private collection through the user's browser.
    pub cors_origins: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            body_bytes: 16 << 20,
            results: 2_000,
            cors_origins: Vec::new(),
        }
    }
}

/// What the handlers share.
pub struct State {
    /// Index names and their collections, in the order given.
    pub indices: Vec<(String, Arc<Collection>)>,
    pub encoder: Mutex<Box<dyn Encoder>>,
    pub options: Options,
    /// Decoding of query images and thumbnails.
    pub decode: align_processor::DecodeOptions,
    metrics: metrics::Metrics,
}

impl State {
    pub fn new(
        indices: Vec<(String, Collection)>,
        encoder: Box<dyn Encoder>,
        options: Options,
        decode: align_processor::DecodeOptions,
    ) -> Self {
        Self {
            indices: indices.into_iter().map(|(n, c)| (n, Arc::new(c))).collect(),
            encoder: Mutex::new(encoder),
            options,
            decode,
            metrics: metrics::Metrics::default(),
        }
    }

    /// The collection of index `name`; without a name, the first index's.
    fn index(&self, name: Option<&str>) -> Result<&Arc<Collection>, ApiError> {
        let Some(name) = name else {
            return Ok(&self.indices[0].1);
        };
        self.indices
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c)
            .ok_or_else(|| {
                let names: Vec<&str> = self.indices.iter().map(|(n, _)| n.as_str()).collect();
                ApiError::not_found(format!(
                    "unknown index {name:?}; this server has {}",
                    names.join(", ")
                ))
            })
    }
}

/// Serves `state` on `listener` until Ctrl-C or SIGTERM.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<State>) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown())
        .await
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
