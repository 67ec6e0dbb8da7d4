//! The `align` binary: output format, exit codes, one-line errors naming the file.

use std::path::{Path, PathBuf};
use std::process::Command;

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/processor"
);

fn fixture(p: &str) -> PathBuf {
    Path::new(FIXTURES).join(p)
}

fn align(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_align"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn tokenize_prints_one_json_object_per_text() {
    let model = fixture("tokenizer_json");
    let (code, out, _) = align(&[
        "tokenize",
        "--model",
        model.to_str().unwrap(),
        "a photo of a cat",
        "",
    ]);
    assert_eq!(code, 0);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let ids: Vec<i64> = serde_json::from_value(lines[0]["input_ids"].clone()).unwrap();
    assert_eq!(ids.len(), 64);
    assert_eq!(&ids[..7], &[101, 1037, 6302, 1997, 1037, 4937, 102]);
    let mask: Vec<i64> = serde_json::from_value(lines[1]["attention_mask"].clone()).unwrap();
    assert_eq!(mask.iter().sum::<i64>(), 2);
}

#[test]
fn preprocess_writes_npy_n_3_289_289() {
    let model = fixture("vocab");
    let out = std::env::temp_dir().join(format!("align-cli-test-{}.npy", std::process::id()));
    let imgs = [
        fixture("images/chelsea.png"),
        fixture("images/tiny_5x7.png"),
    ];
    let (code, _, err) = align(&[
        "preprocess",
        "--model",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        imgs[0].to_str().unwrap(),
        imgs[1].to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let (shape, v) = test_support::read_npy::<f32>(&out);
    std::fs::remove_file(&out).unwrap();
    assert_eq!(shape, [2, 3, 289, 289]);
    assert!(v.iter().all(|x| (-1.0..=1.0).contains(x)));
}

#[test]
fn errors_are_one_line_name_the_file_and_exit_non_zero() {
    let model = fixture("vocab");
    let not_image = fixture("vocab/vocab.txt");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "preprocess",
                "--model",
                model.to_str().unwrap(),
                "--out",
                "/tmp/x.npy",
                "/no/such/file.jpg",
            ],
            "/no/such/file.jpg",
        ),
        (
            vec![
                "preprocess",
                "--model",
                model.to_str().unwrap(),
                "--out",
                "/tmp/x.npy",
                not_image.to_str().unwrap(),
            ],
            "vocab.txt",
        ),
        (
            vec!["tokenize", "--model", "/no/such/dir", "x"],
            "/no/such/dir",
        ),
        (
            vec![
                "--device",
                "no-such-backend",
                "tokenize",
                "--model",
                model.to_str().unwrap(),
                "x",
            ],
            "--device",
        ),
    ];
    for (args, needle) in cases {
        let (code, out, err) = align(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(out.is_empty());
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("align: ") && err.contains(needle), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
