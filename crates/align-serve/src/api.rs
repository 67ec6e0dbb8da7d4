//! The routes (see the crate docs). Request bodies are read here with the server's own size
//! limit, so that every rejection is a JSON error, and parsed leniently as clip-back does:
//! unknown fields are ignored, `null` is absent.

use std::sync::Arc;
use std::time::Instant;

use align_search::{Collection, Method, Modality, dedup};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State as Shared};
use axum::http::{HeaderValue, Method as HttpMethod, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::error::ApiError;
use crate::{EncodeError, Encoder, State, thumbnail};

const PAGE: &str = include_str!("page.html");

/// clip-back's default when `num_images` is absent.
const DEFAULT_RESULTS: usize = 40;

pub fn router(state: Arc<State>) -> Router {
    let cors = cors(&state.options.cors_origins);
    Router::new()
        .route("/", get(page))
        .route("/indices-list", get(indices_list))
        .route("/knn-service", post(knn_service))
        .route("/metadata", post(metadata))
        .route("/image/{name}/{id}", get(image))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .fallback(not_found)
        // Bodies are read with `read_body` (a JSON 413), not axum's limit (plain text).
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(cors)
        .with_state(state)
}

/// Cross-origin access for `origins` only (`*`: any); none when empty.
fn cors(origins: &[String]) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([HttpMethod::GET, HttpMethod::POST])
        .allow_headers([header::CONTENT_TYPE]);
    if origins.iter().any(|o| o == "*") {
        layer.allow_origin(AllowOrigin::any())
    } else {
        layer.allow_origin(AllowOrigin::list(
            origins.iter().filter_map(|o| o.parse::<HeaderValue>().ok()),
        ))
    }
}

/// Counts every request and its latency under its route.
async fn observe(Shared(state): Shared<Arc<State>>, request: Request, next: Next) -> Response {
    let route = match request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
    {
        Some("/") => "/",
        Some("/indices-list") => "/indices-list",
        Some("/knn-service") => "/knn-service",
        Some("/metadata") => "/metadata",
        Some("/image/{name}/{id}") => "/image",
        Some("/metrics") => "/metrics",
        Some("/health") => "/health",
        _ => "other",
    };
    let start = Instant::now();
    let response = next.run(request).await;
    state.metrics.observe(
        route,
        response.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    response
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn indices_list(Shared(state): Shared<Arc<State>>) -> Json<Vec<String>> {
    Json(state.indices.iter().map(|(n, _)| n.clone()).collect())
}

async fn health() -> Json<&'static str> {
    Json("ok")
}

async fn metrics(Shared(state): Shared<Arc<State>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

/// The body, or a 413 past the limit.
async fn read_body(state: &State, body: Body) -> Result<Bytes, ApiError> {
    let limit = state.options.body_bytes;
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("request body larger than {limit} bytes"),
        })
}

fn parse_json<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))
}

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("worker failed: {e}")))?
}

/// Runs the model on the blocking pool, one query at a time.
async fn encode(
    state: &Arc<State>,
    f: impl FnOnce(&mut dyn Encoder) -> Result<Vec<f32>, EncodeError> + Send + 'static,
) -> Result<Vec<f32>, ApiError> {
    let state = state.clone();
    blocking(move || {
        let mut encoder = state.encoder.lock().unwrap_or_else(|p| p.into_inner());
        Ok(f(encoder.as_mut())?)
    })
    .await
}

/// clip-back's `/knn-service` body. `use_mclip`, `use_safety_model`, `use_violence_detector`,
/// `aesthetic_score` and `aesthetic_weight` are accepted and not honoured (ALIGN has no safety
/// model or aesthetic embeddings; clip-back ignores them too when those are not loaded).
#[derive(Debug, Deserialize)]
struct KnnRequest {
    text: Option<String>,
    image: Option<String>,
    image_url: Option<String>,
    embedding_input: Option<Vec<f64>>,
    indice_name: Option<String>,
    modality: Option<String>,
    num_images: Option<i64>,
    num_result_ids: Option<i64>,
    deduplicate: Option<bool>,
}

enum Query {
    Text(String),
    Image(Vec<u8>),
    Embedding(Vec<f32>),
}

fn count(name: &str, value: i64, max: usize) -> Result<usize, ApiError> {
    if value < 1 || value as u64 > max as u64 {
        return Err(ApiError::bad_request(format!(
            "{name} {value}: must be between 1 and {max}"
        )));
    }
    Ok(value as usize)
}

async fn knn_service(Shared(state): Shared<Arc<State>>, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(&state, body).await?;
    let req: KnnRequest = parse_json(&bytes)?;
    let collection = state.index(req.indice_name.as_deref())?.clone();
    let modality = match req.modality.as_deref() {
        None => Modality::Image,
        Some(m) => Modality::parse(m).ok_or_else(|| {
            ApiError::bad_request(format!("modality {m:?}: expected \"image\" or \"text\""))
        })?,
    };
    if !collection.has(modality) {
        return Err(ApiError::bad_request(
            "modality \"text\": this index was built without captions (align index --text)",
        ));
    }
    let max = state.options.results;
    let num_images = count(
        "num_images",
        req.num_images.unwrap_or(DEFAULT_RESULTS as i64),
        max,
    )?;
    let num_result_ids = count(
        "num_result_ids",
        req.num_result_ids.unwrap_or(num_images as i64),
        max,
    )?
    .max(num_images);

    let query = if let Some(text) = req.text.filter(|t| !t.trim().is_empty()) {
        Query::Text(text)
    } else if let Some(b64) = req.image.filter(|i| !i.is_empty()) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| ApiError::bad_request(format!("image: not base64 ({e})")))?;
        Query::Image(bytes)
    } else if req.image_url.is_some_and(|u| !u.is_empty()) {
        return Err(ApiError::bad_request(
            "image_url: this server does not fetch URLs; send the image's bytes as `image` (base64)",
        ));
    } else if let Some(e) = req.embedding_input {
        Query::Embedding(e.into_iter().map(|x| x as f32).collect())
    } else {
        return Err(ApiError::bad_request(
            "empty query: give `text`, `image` (base64) or `embedding_input`",
        ));
    };
    let vector = match query {
        Query::Embedding(v) => align_search::query::normalize(v)?,
        Query::Text(text) => encode(&state, move |e| e.text(&text)).await?,
        Query::Image(bytes) => encode(&state, move |e| e.image(&bytes)).await?,
    };
    let deduplicate = req.deduplicate.unwrap_or(false);
    let results = blocking(move || {
        knn(
            &collection,
            &vector,
            modality,
            num_images,
            num_result_ids,
            deduplicate,
        )
    })
    .await?;
    Ok(Json(results).into_response())
}

/// clip-back's answer: `num_result_ids` candidates, near-duplicates dropped, the first
/// `num_images` with their image path, caption (and url, where the metadata has one).
fn knn(
    collection: &Collection,
    query: &[f32],
    modality: Modality,
    num_images: usize,
    num_result_ids: usize,
    deduplicate: bool,
) -> Result<Vec<Value>, ApiError> {
    let mut hits = collection.search(query, num_result_ids, modality, Method::Auto)?;
    if deduplicate {
        let vectors = hits
            .iter()
            .map(|h| collection.vector(h.id, modality))
            .collect::<Result<Vec<_>, _>>()?;
        let keep = dedup::keep(&vectors);
        let mut i = 0;
        hits.retain(|_| {
            i += 1;
            keep[i - 1]
        });
    }
    hits.truncate(num_images);
    let ids: Vec<u64> = hits.iter().map(|h| h.id).collect();
    let rows = collection.metadata(&ids)?;
    Ok(hits
        .iter()
        .zip(rows)
        .map(|(hit, row)| {
            let mut out = Map::new();
            out.insert("id".into(), json!(hit.id));
            out.insert("similarity".into(), json!(hit.similarity));
            for column in ["image_path", "caption", "url"] {
                if let Some(v) = row.get(column) {
                    out.insert(column.into(), v.clone());
                }
            }
            Value::Object(out)
        })
        .collect())
}

#[derive(Debug, Deserialize)]
struct MetadataRequest {
    indice_name: Option<String>,
    ids: Vec<i64>,
}

async fn metadata(Shared(state): Shared<Arc<State>>, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(&state, body).await?;
    let req: MetadataRequest = parse_json(&bytes)?;
    let collection = state.index(req.indice_name.as_deref())?.clone();
    if req.ids.len() > state.options.results {
        return Err(ApiError::bad_request(format!(
            "{} ids: at most {} at once",
            req.ids.len(),
            state.options.results
        )));
    }
    let ids = req
        .ids
        .iter()
        .map(|&id| {
            u64::try_from(id).map_err(|_| ApiError::bad_request(format!("id {id}: not a row id")))
        })
        .collect::<Result<Vec<u64>, _>>()?;
    let rows = blocking(move || Ok(collection.metadata(&ids)?)).await?;
    let out: Vec<Value> = req
        .ids
        .iter()
        .zip(rows)
        .map(|(id, row)| json!({ "id": id, "metadata": row }))
        .collect();
    Ok(Json(out).into_response())
}

async fn image(
    Shared(state): Shared<Arc<State>>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let collection = state.index(Some(&name))?.clone();
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("id {id:?}: not a row id")))?;
    let decode = state.decode;
    let jpeg = blocking(move || {
        let row = collection
            .metadata(&[id])
            .map_err(|e| match e {
                align_search::Error::Query(m) => ApiError::not_found(m),
                other => ApiError::internal(other.to_string()),
            })?
            .pop()
            .expect("one id, one row");
        let path = row
            .get("image_path")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::internal(format!("row {id} has no image_path")))?
            .to_string();
        let bytes = thumbnail::read_image(&path).map_err(ApiError::not_found)?;
        thumbnail::thumbnail(&bytes, &path, &decode).map_err(ApiError::internal)
    })
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        jpeg,
    )
        .into_response())
}
