//! `align tokenize --model DIR TEXT...`

use std::io::Write;
use std::path::PathBuf;

use align_processor::TextTokenizer;
use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoint directory holding tokenizer.json or vocab.txt (+ tokenizer_config.json).
    #[arg(long)]
    model: PathBuf,
    /// Texts; each is padded / truncated to 64 tokens ([SEP] kept last).
    #[arg(required = true)]
    texts: Vec<String>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let tok = TextTokenizer::from_dir(&args.model)?;
    let batch = tok.encode_batch(&args.texts)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for i in 0..batch.batch {
        // Written by hand to keep the key order of the documentation.
        let ids = serde_json::to_string(batch.row(&batch.input_ids, i))?;
        let mask = serde_json::to_string(batch.row(&batch.attention_mask, i))?;
        writeln!(out, "{{\"input_ids\": {ids}, \"attention_mask\": {mask}}}").context("stdout")?;
    }
    Ok(())
}
