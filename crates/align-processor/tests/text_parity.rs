//! Token id parity with transformers' `BertTokenizer` (padding="max_length", max_length=64,
//! truncation=True) on the committed corpus.

use std::path::{Path, PathBuf};

use align_processor::TextTokenizer;
use serde_json::Value;

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/processor"
);

fn fixture(p: &str) -> PathBuf {
    Path::new(FIXTURES).join(p)
}

fn load() -> (Vec<String>, Vec<Vec<i64>>, Vec<Vec<i64>>) {
    let corpus: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(fixture("text_corpus.json")).unwrap())
            .unwrap();
    let ids: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("text_ids.json")).unwrap()).unwrap();
    let rows = |k: &str| -> Vec<Vec<i64>> { serde_json::from_value(ids[k].clone()).unwrap() };
    (corpus, rows("input_ids"), rows("attention_mask"))
}

fn check(dir: &str) {
    let (corpus, want_ids, want_mask) = load();
    assert!(corpus.len() >= 300);
    let tok = TextTokenizer::from_dir(fixture(dir)).unwrap();
    let got = tok.encode_batch(&corpus).unwrap();
    assert_eq!((got.batch, got.seq_len), (corpus.len(), 64));
    let mut bad = Vec::new();
    for i in 0..corpus.len() {
        if got.row(&got.input_ids, i) != &want_ids[i][..]
            || got.row(&got.attention_mask, i) != &want_mask[i][..]
        {
            bad.push(i);
        }
    }
    println!(
        "{dir}: {} / {} texts identical",
        corpus.len() - bad.len(),
        corpus.len()
    );
    for &i in bad.iter().take(5) {
        println!(
            "  {i}: {:?}\n   got  {:?}\n   want {:?}",
            corpus[i],
            got.row(&got.input_ids, i),
            want_ids[i]
        );
    }
    assert!(bad.is_empty(), "{dir}: {} texts differ", bad.len());
    assert!(got.token_type_ids.iter().all(|&t| t == 0));
}

#[test]
fn ids_match_from_vocab_txt() {
    check("vocab");
}

#[test]
fn ids_match_from_tokenizer_json_with_baked_128_overridden() {
    check("tokenizer_json");
}

#[test]
fn long_texts_are_truncated_keeping_sep_last() {
    let tok = TextTokenizer::from_dir(fixture("vocab")).unwrap();
    let long = "word ".repeat(1000);
    let b = tok
        .encode_batch(&[long.as_str(), "a photo of a cat"])
        .unwrap();
    let row = b.row(&b.input_ids, 0);
    assert_eq!((row[0], row[63]), (101, 102));
    assert!(b.row(&b.attention_mask, 0).iter().all(|&m| m == 1));
    assert_eq!(
        &b.row(&b.input_ids, 1)[..7],
        &[101, 1037, 6302, 1997, 1037, 4937, 102]
    );
    assert_eq!(b.row(&b.attention_mask, 1).iter().sum::<i64>(), 7);
}

#[test]
fn spec_example() {
    let tok = TextTokenizer::from_dir(fixture("tokenizer_json")).unwrap();
    let b = tok
        .encode_batch(&["A PHOTO of two Dogs playing in the snow, naïve café!"])
        .unwrap();
    assert_eq!(
        &b.input_ids[..15],
        &[
            101, 1037, 6302, 1997, 2048, 6077, 2652, 1999, 1996, 4586, 1010, 15743, 7668, 999, 102
        ]
    );
    assert!(b.input_ids[15..].iter().all(|&t| t == 0));
}

#[test]
fn missing_tokenizer_is_an_error_naming_the_directory() {
    let e = TextTokenizer::from_dir(fixture("images")).unwrap_err();
    assert!(e.to_string().contains("images"), "{e}");
}
