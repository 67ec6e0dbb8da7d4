//! `align`: the ALIGN (kakaobrain/align-base) command line.
//!
//! Each subcommand is a variant of [`Command`] with its own `clap::Args` struct and a `run`
//! function in its own module; subcommands that run the model take the device from
//! [`device::resolve`]. Errors are printed as one line (`align: <message>`) with exit status 1;
//! usage errors are clap's (exit status 2).

mod classify;
mod convert;
mod device;
mod embed;
mod embedder;
mod eval;
mod hub;
mod images;
mod index;
mod npy;
mod preprocess;
mod progress;
mod query;
mod search;
mod serve;
mod tokenize;

use std::process::ExitCode;

/// mimalloc keeps the large activation buffers of a forward pass for reuse; with glibc's
/// allocator each one is a fresh mmap whose pages are faulted in and zeroed again on every
/// pass.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "align",
    version,
    about = "ALIGN (kakaobrain/align-base) image-text model on burn"
)]
struct Cli {
    /// Compute device: `auto` (the `BURN_DEVICE` environment variable, else the first compiled
    /// backend) or one of the compiled backends (see `align devices`).
    #[arg(long, global = true, default_value = "auto")]
    device: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Zero-shot classification: one JSON object per image with the labels' logits and
    /// probabilities (softmax over the labels).
    Classify(classify::Args),
    /// Image embeddings: f32 [N, dim], L2-normalised rows in argument order, to a .npy file.
    EmbedImages(embed::ImagesArgs),
    /// Text embeddings: f32 [N, dim], L2-normalised rows in argument order, to a .npy file.
    EmbedTexts(embed::TextsArgs),
    /// Embed a whole collection (folders, images, webdataset shards) into a folder in
    /// clip-retrieval's layout; resumable, incremental, shardable (see `align index --help`).
    Index(index::Args),
    Search(search::Args),
    Serve(serve::Args),
    /// Benchmarks as CLIP_benchmark runs them: zero-shot classification and image-text
    /// retrieval on local datasets (see `align eval zero-shot --help`, `align eval retrieval
    /// --help`).
    Eval(eval::Args),
    /// Convert an HF checkpoint into burn's Burnpack format (model.bpk + config and processor
    /// files), verified by loading it back and comparing a forward pass.
    ConvertWeights(convert::Args),
    /// Preprocess images as the model sees them; writes f32 [N, 3, H, W] (C order) to a .npy file.
    Preprocess(preprocess::Args),
    /// Tokenise texts as the model sees them; prints one JSON object per text.
    Tokenize(tokenize::Args),
    /// List the compiled backends and show which device `--device` selects.
    Devices,
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // Validate the flag up front, even for subcommands that run on the CPU without burn.
    let choice = device::Choice::parse(&cli.device)?;
    match cli.command {
        Command::Classify(args) => classify::run(&args, &device::resolve(&choice)?),
        Command::EmbedImages(args) => embed::images(&args, &device::resolve(&choice)?),
        Command::EmbedTexts(args) => embed::texts(&args, &device::resolve(&choice)?),
        Command::Index(args) => index::run(&args, &device::resolve(&choice)?),
        Command::Search(args) => search::run(&args, &device::resolve(&choice)?),
        Command::Serve(args) => serve::run(&args, &device::resolve(&choice)?),
        Command::Eval(args) => eval::run(&args, &device::resolve(&choice)?),
        Command::ConvertWeights(args) => convert::run(&args, &device::resolve(&choice)?),
        Command::Preprocess(args) => preprocess::run(&args),
        Command::Tokenize(args) => tokenize::run(&args),
        Command::Devices => {
            println!("compiled backends: {}", device::COMPILED.join(", "));
            let dev = device::resolve(&choice)?;
            println!("selected: {dev:?}");
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` joins the context chain on one line.
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("align: {msg}");
            ExitCode::FAILURE
        }
    }
}
