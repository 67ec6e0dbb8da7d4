//! `align_rs`: the Python package of ALIGN on burn (PyO3, built by maturin; see
//! `crates/align-py/README.md`).
//!
//! One class, [`Align`], over [`align_model::Align`]: images (paths, encoded bytes, PIL images,
//! `HxWx3` uint8 arrays) and texts in, NumPy arrays out, computed as the `align` command line
//! computes them. Python arguments are turned into owned Rust values while the GIL is held;
//! decoding, preprocessing and the model then run with the GIL released (`Python::detach`).
//! The model sits behind a mutex: calls from several Python threads decode and preprocess side
//! by side and take turns for the forward passes (each of which uses every core already).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use align_processor::{DecodeOptions, ImageProcessor, RgbImage, TextTokenizer};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, FloatDType};
use numpy::ndarray::{Array2, Array3, ArrayD, IxDyn};
use numpy::{
    IntoPyArray, PyArray2, PyArray3, PyArrayDyn, PyArrayMethods, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{
    PyFileNotFoundError, PyNotADirectoryError, PyOSError, PyRuntimeError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyString};
use rayon::prelude::*;

/// Backends compiled into this extension (Cargo features), as `align devices` lists them.
const COMPILED: &[&str] = &[
    #[cfg(feature = "flex")]
    "flex",
];

/// Images per forward pass when `batch_size` is not given: the CLI's default on flex.
const DEFAULT_IMAGE_BATCH: usize = 8;

/// Texts per forward pass of `embed_texts` (the CLI's `embed-texts` default).
const TEXT_BATCH: usize = 32;

/// An error as the CLI prints it: the message, then each source's, joined by `": "` (anyhow's
/// `{:#}`), on one line.
fn message(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg.replace('\n', " ")
}

/// Python exception for an `align-processor` error: missing files are `FileNotFoundError`,
/// other I/O errors `OSError`, undecodable images and bad texts `ValueError`, broken processor
/// files `RuntimeError`.
fn processor_error(e: &align_processor::Error) -> PyErr {
    use align_processor::Error as E;
    let msg = message(e);
    match e {
        E::Io { error, .. } if error.0.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(msg)
        }
        E::Io { .. } => PyOSError::new_err(msg),
        E::Missing { .. } => PyFileNotFoundError::new_err(msg),
        E::Decode { .. } | E::BatchShape { .. } | E::Tokenizer { .. } => PyValueError::new_err(msg),
        E::Json { .. } | E::Config { .. } => PyRuntimeError::new_err(msg),
    }
}

/// Python exception for an `align-model` error: missing files / models are
/// `FileNotFoundError` (a hub failure `OSError`, as in transformers), bad arguments
/// `ValueError`, everything the model itself reports `RuntimeError`.
fn model_error(e: &align_model::Error) -> PyErr {
    use align_model::{CheckpointError, Error as E};
    // A model file that cannot be read, from whichever crate reports it.
    let unreadable = match e {
        E::Checkpoint(c)
        | E::Text(bert::Error::Checkpoint(c))
        | E::Vision(efficientnet::Error::Checkpoint(c)) => match c {
            CheckpointError::Io { source, .. } => Some(source),
            _ => None,
        },
        E::Io { source, .. } => Some(source),
        _ => None,
    };
    match e {
        // Transparent: the same message.
        E::Processor(inner) => processor_error(inner),
        _ if unreadable.is_some_and(|s| s.kind() == std::io::ErrorKind::NotFound) => {
            PyFileNotFoundError::new_err(message(e))
        }
        _ if unreadable.is_some() => PyOSError::new_err(message(e)),
        E::MissingFile { .. } => PyFileNotFoundError::new_err(message(e)),
        E::Write { .. } | E::Hub { .. } => PyOSError::new_err(message(e)),
        E::Mismatch(_) | E::Unsupported(_) => PyValueError::new_err(message(e)),
        _ => PyRuntimeError::new_err(message(e)),
    }
}

/// Runs `f`, turning a panic into a `RuntimeError` (the interpreter keeps running).
fn guarded<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        Err(PyRuntimeError::new_err(format!("internal error: {what}")))
    })
}

/// One image as given by Python, owned so that it can be decoded without the GIL.
enum Source {
    /// A file path (str or os.PathLike).
    Path(PathBuf),
    /// An encoded file (JPEG, PNG, ...) and its position in the list, for error messages.
    Bytes(Vec<u8>, usize),
    /// Decoded RGB pixels (a PIL image or an `HxWx3` uint8 array).
    Pixels(RgbImage),
}

impl Source {
    /// Reads one element of an image list.
    fn extract(obj: &Bound<'_, PyAny>, index: usize) -> PyResult<Self> {
        if let Ok(b) = obj.cast::<PyBytes>() {
            return Ok(Self::Bytes(b.as_bytes().to_vec(), index));
        }
        if let Ok(b) = obj.cast::<PyByteArray>() {
            return Ok(Self::Bytes(b.to_vec(), index));
        }
        if obj.is_instance_of::<PyString>() {
            return Ok(Self::Path(obj.extract()?));
        }
        if let Ok(array) = obj.cast::<PyUntypedArray>() {
            return array_pixels(array, index).map(Self::Pixels);
        }
        if is_pil_image(obj)? {
            return pil_pixels(obj, index).map(Self::Pixels);
        }
        if obj.hasattr("__fspath__")? {
            return Ok(Self::Path(obj.extract()?));
        }
        Err(PyTypeError::new_err(format!(
            "images[{index}]: expected a path (str or os.PathLike), bytes, a PIL image or an \
             HxWx3 uint8 numpy array, got {}",
            obj.get_type().name()?
        )))
    }

    /// Decoded pixels, exactly as the processor decodes files (`decode_path` /
    /// `decode_bytes` with the model's decoding options).
    fn decode(self, opts: &DecodeOptions) -> Result<RgbImage, align_processor::Error> {
        match self {
            Self::Path(p) => align_processor::decode_path(&p, opts),
            Self::Bytes(b, i) => align_processor::decode_bytes(&b, &format!("images[{i}]"), opts),
            Self::Pixels(img) => Ok(img),
        }
    }
}

/// Whether `obj` looks like a PIL image (duck-typed: PIL is not a dependency).
fn is_pil_image(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    for attr in ["mode", "size", "convert", "tobytes"] {
        if !obj.hasattr(attr)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The pixels of `img.convert("RGB")`.
fn pil_pixels(obj: &Bound<'_, PyAny>, index: usize) -> PyResult<RgbImage> {
    let mode: String = obj.getattr("mode")?.extract()?;
    let rgb = if mode == "RGB" {
        obj.clone()
    } else {
        obj.call_method1("convert", ("RGB",))?
    };
    let (width, height): (usize, usize) = rgb.getattr("size")?.extract()?;
    let data = rgb.call_method0("tobytes")?;
    let data = data.cast::<PyBytes>()?.as_bytes().to_vec();
    RgbImage::new(width, height, data).ok_or_else(|| {
        PyValueError::new_err(format!(
            "images[{index}]: a {width}x{height} PIL image (mode {mode}) has no pixels to embed"
        ))
    })
}

/// The pixels of an `HxWx3` uint8 array (any strides), row-major RGB.
fn array_pixels(array: &Bound<'_, PyUntypedArray>, index: usize) -> PyResult<RgbImage> {
    let shape = array.shape().to_vec();
    let bad = || {
        PyValueError::new_err(format!(
            "images[{index}]: expected an HxWx3 uint8 array (RGB), got shape {shape:?} and dtype {}",
            array.dtype()
        ))
    };
    if shape.len() != 3 || shape[2] != 3 {
        return Err(bad());
    }
    let typed = array.as_any().cast::<PyArray3<u8>>().map_err(|_| bad())?;
    let data: Vec<u8> = typed.readonly().as_array().iter().copied().collect();
    RgbImage::new(shape[1], shape[0], data).ok_or_else(|| {
        PyValueError::new_err(format!(
            "images[{index}]: an empty {}x{}x3 array has no pixels to embed",
            shape[0], shape[1]
        ))
    })
}

/// Reads an image list (any iterable but a single str, bytes or path).
fn extract_images(images: &Bound<'_, PyAny>) -> PyResult<Vec<Source>> {
    if images.is_instance_of::<PyString>()
        || images.is_instance_of::<PyBytes>()
        || images.is_instance_of::<PyByteArray>()
        || images.hasattr("__fspath__")?
    {
        return Err(PyTypeError::new_err(
            "images: expected a list of images, got a single one (wrap it in a list)",
        ));
    }
    if let Ok(array) = images.cast::<PyUntypedArray>()
        && array.ndim() != 4
    {
        return Err(PyTypeError::new_err(format!(
            "images: expected a list of images or an NxHxWx3 array, got an array of shape {:?}",
            array.shape()
        )));
    }
    images
        .try_iter()?
        .enumerate()
        .map(|(i, item)| Source::extract(&item?, i))
        .collect()
}

/// Decodes `sources` (in parallel, as the CLI decodes a batch); the first failure in list
/// order is the error.
fn decode_all(sources: Vec<Source>, opts: &DecodeOptions) -> PyResult<Vec<RgbImage>> {
    let decoded: Vec<_> = sources.into_par_iter().map(|s| s.decode(opts)).collect();
    decoded
        .into_iter()
        .map(|r| r.map_err(|e| processor_error(&e)))
        .collect()
}

/// Consecutive batches of at most `size` sources, in order.
fn batches(sources: Vec<Source>, size: usize) -> Vec<Vec<Source>> {
    let mut out = Vec::new();
    let mut it = sources.into_iter().peekable();
    while it.peek().is_some() {
        out.push(it.by_ref().take(size).collect());
    }
    out
}

/// A float32 `[rows, cols]` NumPy array.
type Array2Py<'py> = Bound<'py, PyArray2<f32>>;

/// A float32 `[rows, cols]` array.
fn array2<'py>(
    py: Python<'py>,
    rows: usize,
    cols: usize,
    data: Vec<f32>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    Array2::from_shape_vec((rows, cols), data)
        .map(|a| a.into_pyarray(py))
        .map_err(|e| PyRuntimeError::new_err(format!("internal error: result shape: {e}")))
}

/// The device for `device=`: `"auto"` (`BURN_DEVICE` if set, validated, else the first
/// compiled backend) or a compiled backend's name; anything else is a `ValueError` with the
/// CLI's message.
fn choose_device(name: &str) -> PyResult<(Device, &'static str)> {
    let backend = |name: &str| -> Result<&'static str, String> {
        COMPILED
            .iter()
            .copied()
            .find(|&b| b == name)
            .ok_or_else(|| {
                format!(
                    "unknown or not compiled backend {name:?}; compiled: {}",
                    COMPILED.join(", ")
                )
            })
    };
    let name = name.trim().to_ascii_lowercase();
    let chosen = if name == "auto" {
        match std::env::var("BURN_DEVICE") {
            Ok(env) => backend(&env.to_ascii_lowercase()).map_err(|e| {
                PyValueError::new_err(format!("environment variable BURN_DEVICE: {e}"))
            })?,
            Err(_) => COMPILED
                .first()
                .copied()
                .ok_or_else(|| PyValueError::new_err("built without any backend feature"))?,
        }
    } else {
        backend(&name).map_err(|e| PyValueError::new_err(format!("device: {e}")))?
    };
    match chosen {
        #[cfg(feature = "flex")]
        "flex" => Ok((Device::flex(), "flex")),
        other => Err(PyValueError::new_err(format!(
            "device: {other:?} is not available"
        ))),
    }
}

/// ALIGN (kakaobrain/align-base) with its image processor and tokenizer, on burn.
///
/// Create it with `Align.from_pretrained(name_or_dir)`. Every method takes lists and returns
/// NumPy arrays; embeddings are float32, L2-normalised, one row per input in input order,
/// equal to what the `align` command line writes for the same inputs. Methods release the
/// GIL while they compute and may be called from several threads at once.
#[pyclass(frozen, module = "align_rs", name = "Align")]
struct Align {
    // The Rust values are boxed: some of burn's are aligned to 64 bytes, more than Python's
    // allocator gives the object that holds them (pyo3 would panic on the misaligned write).
    /// The model: one forward pass at a time.
    model: Mutex<Box<align_model::Align>>,
    /// Copies of the processor halves (decoding, preprocessing, tokenising need no lock).
    images: Box<ImageProcessor>,
    tokenizer: Box<TextTokenizer>,
    dim: usize,
    device: &'static str,
    name: String,
}

impl Align {
    fn model(&self) -> MutexGuard<'_, Box<align_model::Align>> {
        // A panic inside a forward pass (reported as a RuntimeError) leaves the model as it
        // was: the weights are only read.
        self.model
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The processor's pixel values of a batch of images (decoded first).
    fn pixels(
        &self,
        sources: Vec<Source>,
        opts: &DecodeOptions,
    ) -> PyResult<burn::tensor::TensorData> {
        let images = decode_all(sources, opts)?;
        self.images
            .preprocess_images(&images)
            .map_err(|e| processor_error(&e))
    }

    /// L2-normalised embeddings of decoded images, `batch` per forward pass. As in the CLI,
    /// the next batch is decoded and preprocessed while the model runs on this one.
    fn embed_sources(&self, sources: Vec<Source>, batch: usize) -> PyResult<(usize, Vec<f32>)> {
        let opts = self.images.decode_options();
        let mut rows = Vec::with_capacity(sources.len() * self.dim);
        let mut n = 0;
        std::thread::scope(|scope| {
            // A rendezvous channel: at most two batches of pixels in memory.
            let (pixels_tx, pixels_rx) = std::sync::mpsc::sync_channel(0);
            scope.spawn(move || {
                for chunk in batches(sources, batch) {
                    let count = chunk.len();
                    if pixels_tx.send((count, self.pixels(chunk, opts))).is_err() {
                        // The model failed: nothing more is wanted.
                        break;
                    }
                }
            });
            for (count, pixels) in pixels_rx {
                let embeds = self
                    .model()
                    .image_embeds(pixels?)
                    .map_err(|e| model_error(&e))?;
                rows.extend(align_model::to_vec(embeds).map_err(|e| model_error(&e))?);
                n += count;
            }
            Ok((n, rows))
        })
    }
}

#[pymethods]
impl Align {
    /// Loads a model: `name_or_dir` is a directory (a Hugging Face checkpoint with
    /// model.safetensors or pytorch_model.bin and the processor files, or one written by
    /// `align convert-weights`) or a hub model id such as "kakaobrain/align-base", taken from
    /// the hub cache (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub) or
    /// downloaded into it unless HF_HUB_OFFLINE is set.
    ///
    /// device: "auto" (the BURN_DEVICE environment variable if set, else flex) or "flex" (the
    /// backend compiled into this package). dtype: "f32" or "f16" (half precision where the
    /// device supports it; embeddings are float32 either way).
    ///
    /// Raises FileNotFoundError for a missing directory or model file, OSError when the hub
    /// cannot provide the model, ValueError for a bad device or dtype, RuntimeError for a
    /// broken checkpoint.
    ///
    /// The vision tower's fused copy (folded, packed weights) is made by the first image call,
    /// so a model used for texts alone never holds it.
    #[staticmethod]
    #[pyo3(signature = (name_or_dir, device = "auto", dtype = "f32"))]
    fn from_pretrained(
        py: Python<'_>,
        name_or_dir: &Bound<'_, PyAny>,
        device: &str,
        dtype: &str,
    ) -> PyResult<Self> {
        let (dev, device_name) = choose_device(device)?;
        let dtype = match dtype.trim().to_ascii_lowercase().as_str() {
            "f32" | "float32" => FloatDType::F32,
            "f16" | "float16" => FloatDType::F16,
            other => {
                return Err(PyValueError::new_err(format!(
                    "dtype: expected \"f32\" or \"f16\", got {other:?}"
                )));
            }
        };
        // A path object, or a string that can only be a path, must name a local directory;
        // any other string that is not a directory is a hub id.
        let is_str = name_or_dir.is_instance_of::<PyString>();
        let path: PathBuf = name_or_dir.extract().map_err(|_| {
            PyTypeError::new_err("name_or_dir: expected a str (directory or hub id) or os.PathLike")
        })?;
        let name = path.to_string_lossy().into_owned();
        let looks_local = !is_str
            || path.is_absolute()
            || name.starts_with('.')
            || name.starts_with('~')
            || path.exists();
        if looks_local && !path.is_dir() {
            let msg = format!("{name}: not a directory");
            return Err(if path.exists() {
                PyNotADirectoryError::new_err(msg)
            } else {
                PyFileNotFoundError::new_err(msg)
            });
        }
        let id = name.clone();
        let align = py.detach(move || {
            guarded(|| {
                let align =
                    align_model::Align::from_pretrained(&id, &dev).map_err(|e| model_error(&e))?;
                let align = match dtype {
                    FloatDType::F32 => align,
                    _ => align.with_float_dtype(dtype).map_err(|e| model_error(&e))?,
                };
                Ok(Box::new(align))
            })
        })?;
        Ok(Self {
            images: Box::new(align.images.clone()),
            tokenizer: Box::new(align.tokenizer.clone()),
            dim: align.config.projection_dim,
            device: device_name,
            name,
            model: Mutex::new(align),
        })
    }

    /// Embedding size (the model's projection_dim; 640 for align-base).
    #[getter]
    fn dim(&self) -> usize {
        self.dim
    }

    /// The burn backend the model runs on ("flex").
    #[getter]
    fn device(&self) -> &'static str {
        self.device
    }

    fn __repr__(&self) -> String {
        format!(
            "Align({:?}, device={:?}, dim={})",
            self.name, self.device, self.dim
        )
    }

    /// The RGB pixels the processor decodes from each image: a list of uint8 [H, W, 3]
    /// arrays, one per image in list order (EXIF orientation applied, as for embedding;
    /// PIL images and arrays come back as given, converted to RGB). `embed_images` on these
    /// arrays gives the same embeddings as on the images themselves.
    ///
    /// Raises as `embed_images` does (FileNotFoundError, ValueError, TypeError).
    fn decode<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
    ) -> PyResult<Vec<Bound<'py, PyArray3<u8>>>> {
        let sources = extract_images(images)?;
        let opts = self.images.decode_options();
        let decoded = py.detach(|| guarded(|| decode_all(sources, opts)))?;
        decoded
            .into_iter()
            .map(|img| {
                Array3::from_shape_vec((img.height, img.width, 3), img.data)
                    .map(|a| a.into_pyarray(py))
                    .map_err(|e| PyRuntimeError::new_err(format!("internal error: pixels: {e}")))
            })
            .collect()
    }

    /// L2-normalised image embeddings, float32 [N, dim], one row per image in list order.
    ///
    /// images: a list of paths (str or os.PathLike), of bytes (encoded JPEG, PNG, WebP, GIF,
    /// BMP or TIFF files), of PIL images (their `convert("RGB")` pixels) or of HxWx3 uint8 RGB
    /// arrays, in any mix. Files are decoded as the processor decodes them (EXIF orientation
    /// applied, as transformers' `load_image` does); pixels are used as given.
    /// batch_size: images per forward pass (default 8).
    ///
    /// Raises FileNotFoundError for a missing file, ValueError for an image that cannot be
    /// decoded or an array of the wrong shape or dtype, TypeError for anything else.
    #[pyo3(signature = (images, batch_size = None))]
    fn embed_images<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
        batch_size: Option<usize>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let batch = batch_size.unwrap_or(DEFAULT_IMAGE_BATCH);
        if batch == 0 {
            return Err(PyValueError::new_err("batch_size: must be at least 1"));
        }
        let sources = extract_images(images)?;
        let (n, rows) = py.detach(|| guarded(|| self.embed_sources(sources, batch)))?;
        array2(py, n, self.dim, rows)
    }

    /// L2-normalised text embeddings, float32 [N, dim], one row per text in list order.
    ///
    /// Texts longer than 64 tokens are truncated, keeping [SEP] last. Texts of similar
    /// lengths are embedded together, 32 per forward pass.
    fn embed_texts<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        if texts.is_empty() {
            return array2(py, 0, self.dim, Vec::new());
        }
        let n = texts.len();
        let rows = py.detach(|| {
            guarded(|| {
                let embeds = self
                    .model()
                    .embed_texts_batched(&texts, TEXT_BATCH)
                    .map_err(|e| model_error(&e))?;
                align_model::to_vec(embeds).map_err(|e| model_error(&e))
            })
        })?;
        array2(py, n, self.dim, rows)
    }

    /// Zero-shot classification: `(logits, probs)`, float32 [N images, K labels] each.
    ///
    /// logits = cosine similarity of image and label embeddings / the model's temperature;
    /// probs = their softmax over the labels (what `align classify` prints). images: as for
    /// `embed_images`.
    #[pyo3(signature = (images, labels, batch_size = None))]
    fn zero_shot<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
        labels: Vec<String>,
        batch_size: Option<usize>,
    ) -> PyResult<(Array2Py<'py>, Array2Py<'py>)> {
        let batch = batch_size.unwrap_or(DEFAULT_IMAGE_BATCH);
        if batch == 0 {
            return Err(PyValueError::new_err("batch_size: must be at least 1"));
        }
        if labels.is_empty() {
            return Err(PyValueError::new_err(
                "zero-shot classification needs at least one label",
            ));
        }
        let sources = extract_images(images)?;
        let k = labels.len();
        let (n, logits, probs) = py.detach(|| {
            guarded(|| {
                // As `align classify`: the labels embedded once, then each batch of images.
                let text_embeds = self
                    .model()
                    .embed_texts(&labels)
                    .map_err(|e| model_error(&e))?;
                let opts = self.images.decode_options();
                let (mut n, mut logits, mut probs) = (0, Vec::new(), Vec::new());
                for chunk in batches(sources, batch) {
                    let count = chunk.len();
                    let pixels = self.pixels(chunk, opts)?;
                    let model = self.model();
                    let image_embeds = model.image_embeds(pixels).map_err(|e| model_error(&e))?;
                    let l = model
                        .model
                        .logits_per_image(image_embeds, text_embeds.clone());
                    let p = softmax(l.clone(), 1);
                    drop(model);
                    logits.extend(align_model::to_vec(l).map_err(|e| model_error(&e))?);
                    probs.extend(align_model::to_vec(p).map_err(|e| model_error(&e))?);
                    n += count;
                }
                Ok((n, logits, probs))
            })
        })?;
        Ok((array2(py, n, k, logits)?, array2(py, n, k, probs)?))
    }

    /// The pixel values the model sees: float32 [N, 3, H, W] (289x289 for align-base),
    /// equal to AlignProcessor's `pixel_values` (what `align preprocess` writes). images: as
    /// for `embed_images`.
    fn preprocess<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let sources = extract_images(images)?;
        let (shape, values) = py.detach(|| {
            guarded(|| {
                let images = decode_all(sources, self.images.decode_options())?;
                let data = self
                    .images
                    .preprocess_images(&images)
                    .map_err(|e| processor_error(&e))?;
                let shape = data.shape().to_vec();
                let values = data.try_into_vec::<f32>().map_err(|e| {
                    PyRuntimeError::new_err(format!("internal error: pixel data: {e:?}"))
                })?;
                Ok((shape, values))
            })
        })?;
        ArrayD::from_shape_vec(IxDyn(&shape), values)
            .map(|a| a.into_pyarray(py))
            .map_err(|e| PyRuntimeError::new_err(format!("internal error: pixel shape: {e}")))
    }

    /// The token ids the model sees, as AlignProcessor returns them: a dict of int64 arrays
    /// [N, 64] (`input_ids`, `attention_mask`, `token_type_ids`), padded to 64 tokens and
    /// truncated to 64 keeping [SEP] last (what `align tokenize` prints).
    fn tokenize<'py>(&self, py: Python<'py>, texts: Vec<String>) -> PyResult<Bound<'py, PyDict>> {
        let (rows, cols, fields) = if texts.is_empty() {
            let cols = self.tokenizer.max_length();
            (0, cols, [Vec::new(), Vec::new(), Vec::new()])
        } else {
            let batch = py.detach(|| {
                guarded(|| {
                    self.tokenizer
                        .encode_batch(&texts)
                        .map_err(|e| processor_error(&e))
                })
            })?;
            let fields = [batch.input_ids, batch.attention_mask, batch.token_type_ids];
            (batch.batch, batch.seq_len, fields)
        };
        let dict = PyDict::new(py);
        let keys = ["input_ids", "attention_mask", "token_type_ids"];
        for (key, values) in keys.into_iter().zip(fields) {
            let array = Array2::from_shape_vec((rows, cols), values)
                .map_err(|e| PyRuntimeError::new_err(format!("internal error: {key}: {e}")))?;
            dict.set_item(key, array.into_pyarray(py))?;
        }
        Ok(dict)
    }
}

/// ALIGN (kakaobrain/align-base) image and text embeddings and zero-shot classification, on
/// the burn framework (the `align` command line's code, as a Python module).
#[pymodule]
fn align_rs(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Align>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DEVICES", COMPILED.to_vec())?;
    Ok(())
}
