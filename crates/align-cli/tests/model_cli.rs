//! `align classify`, `embed-images`, `embed-texts`, `convert-weights` and the hub cache, on the
//! committed tiny random ALIGN (tests/reference/make_align_fixtures.py tiny): the outputs equal
//! transformers' within 1e-5 (logits: within 1e-5 of the network run in float64 and 2e-5 of
//! transformers' float32 logits).

use std::path::{Path, PathBuf};
use std::process::Command;

use test_support::{max_abs_diff, read_npy};

const TINY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/align/tiny"
);

fn tiny() -> PathBuf {
    PathBuf::from(TINY)
}

fn reference(name: &str) -> (Vec<usize>, Vec<f32>) {
    read_npy(&tiny().join("reference").join(name))
}

fn texts() -> Vec<String> {
    serde_json::from_str(&std::fs::read_to_string(tiny().join("reference/texts.json")).unwrap())
        .unwrap()
}

fn images() -> Vec<String> {
    ["image0.png", "image1.png"]
        .iter()
        .map(|f| tiny().join(f).to_str().unwrap().to_string())
        .collect()
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn align_with(args: &[String], env: &[(&str, Option<&Path>)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_align"));
    cmd.args(args);
    for (key, value) in env {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    let out = cmd.output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn align(args: &[String]) -> Run {
    align_with(args, &[])
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn assert_close(actual: &[f32], expected: &[f32], what: &str) {
    assert_within(actual, expected, what, 1e-5);
}

fn assert_within(actual: &[f32], expected: &[f32], what: &str, tol: f32) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    let max = max_abs_diff(actual, expected);
    assert!(max <= tol, "{what}: max abs diff {max} > {tol}");
}

#[test]
fn classify_prints_the_reference_logits_and_probs_per_image() {
    let mut args = strings(&["classify", "--model", TINY, "--batch-size", "1"]);
    for label in texts() {
        args.extend(["--label".to_string(), label]);
    }
    args.extend(images());
    let run = align(&args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let (shape, logits) = reference("logits_per_image.npy");
    let (_, probs) = reference("probs.npy");
    let logits64: Vec<f32> = read_npy::<f64>(&tiny().join("reference/logits_per_image_f64.npy"))
        .1
        .iter()
        .map(|&v| v as f32)
        .collect();
    let k = shape[1];
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["image"], images()[i].as_str());
        let labels: Vec<String> = serde_json::from_value(line["labels"].clone()).unwrap();
        assert_eq!(labels, texts());
        let got: Vec<f32> = serde_json::from_value(line["logits"].clone()).unwrap();
        // Within 1e-5 of the float64 network's logits, and 2e-5 of transformers' float32
        // ones (6.4e-6 from the float64 value themselves: two float32 results may err in
        // opposite directions).
        assert_within(
            &got,
            &logits64[i * k..(i + 1) * k],
            "logits vs float64",
            1e-5,
        );
        assert_within(&got, &logits[i * k..(i + 1) * k], "logits", 2e-5);
        let got: Vec<f32> = serde_json::from_value(line["probs"].clone()).unwrap();
        assert_close(&got, &probs[i * k..(i + 1) * k], "probs");
    }
}

#[test]
fn embed_images_and_texts_write_the_reference_embeddings() {
    let out = tempfile::tempdir().unwrap();
    let npy = out.path().join("images.npy");
    let mut args = strings(&[
        "embed-images",
        "--model",
        TINY,
        "--batch-size",
        "1",
        "--out",
    ]);
    args.push(npy.to_str().unwrap().to_string());
    args.extend(images());
    let run = align(&args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let (shape, got) = read_npy(&npy);
    let (expected_shape, expected) = reference("image_embeds.npy");
    assert_eq!(shape, expected_shape);
    assert_close(&got, &expected, "image_embeds");

    let npy = out.path().join("texts.npy");
    let mut args = strings(&["embed-texts", "--model", TINY, "--batch-size", "2", "--out"]);
    args.push(npy.to_str().unwrap().to_string());
    args.extend(texts());
    let run = align(&args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let (shape, got) = read_npy(&npy);
    let (expected_shape, expected) = reference("text_embeds.npy");
    assert_eq!(shape, expected_shape);
    assert_close(&got, &expected, "text_embeds");
}

#[test]
fn a_bad_image_stops_the_run_unless_skip_bad() {
    let out = tempfile::tempdir().unwrap();
    let bad = out.path().join("not-an-image.jpg");
    std::fs::write(&bad, b"\xff\xd8\xff\xe0 this is not a JPEG").unwrap();
    let npy = out.path().join("e.npy");
    let imgs = images();
    let with = |skip: bool| {
        let mut args = strings(&["embed-images", "--model", TINY, "--out"]);
        args.push(npy.to_str().unwrap().to_string());
        if skip {
            args.push("--skip-bad".into());
        }
        args.extend([
            imgs[0].clone(),
            bad.to_str().unwrap().to_string(),
            imgs[1].clone(),
        ]);
        align(&args)
    };

    let run = with(false);
    assert_eq!(run.code, 1);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.starts_with("align: ") && run.stderr.contains("not-an-image.jpg"));
    assert!(!npy.exists());

    let run = with(true);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let skipped: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("skipping"))
        .collect();
    assert_eq!(skipped.len(), 1, "{}", run.stderr);
    assert!(skipped[0].contains("not-an-image.jpg"));
    let (shape, got) = read_npy(&npy);
    assert_eq!(shape, [2, 40]);
    assert_close(&got, &reference("image_embeds.npy").1, "image_embeds");
}

#[test]
fn convert_weights_output_gives_the_same_classification() {
    let out = tempfile::tempdir().unwrap();
    let converted = out.path().join("converted");
    let run = align(&strings(&[
        "convert-weights",
        "--input",
        TINY,
        "--output",
        converted.to_str().unwrap(),
    ]));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("max abs difference 0"),
        "{}",
        run.stderr
    );
    assert!(converted.join("model.bpk").is_file());

    let npy = out.path().join("texts.npy");
    let mut args = strings(&["embed-texts", "--model"]);
    args.push(converted.to_str().unwrap().to_string());
    args.push("--out".into());
    args.push(npy.to_str().unwrap().to_string());
    args.extend(texts());
    let run = align(&args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_close(
        &read_npy(&npy).1,
        &reference("text_embeds.npy").1,
        "text_embeds",
    );
}

/// A hub cache laid out as `huggingface_hub` / `hf-hub` write it, holding the tiny model
/// under `id`.
fn prefilled_cache(id: &str) -> tempfile::TempDir {
    let cache = tempfile::tempdir().unwrap();
    let repo = cache
        .path()
        .join(format!("models--{}", id.replace('/', "--")));
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snapshot = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    for file in [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "tokenizer_config.json",
        "vocab.txt",
    ] {
        std::fs::copy(tiny().join(file), snapshot.join(file)).unwrap();
    }
    cache
}

#[test]
fn model_id_is_taken_from_a_prefilled_hub_cache_without_the_network() {
    let cache = prefilled_cache("kakaobrain/align-base");
    let out = tempfile::tempdir().unwrap();
    let npy = out.path().join("texts.npy");
    // No --model: the default id; online mode, so a network access would fail the run here.
    let mut args = strings(&["embed-texts", "--out", npy.to_str().unwrap()]);
    args.extend(texts());
    let run = align_with(
        &args,
        &[
            ("HF_HUB_CACHE", Some(cache.path())),
            ("HF_HUB_OFFLINE", None),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_close(
        &read_npy(&npy).1,
        &reference("text_embeds.npy").1,
        "text_embeds",
    );

    // HF_HOME/hub, as hf-hub and huggingface_hub read it, and an explicit --model-id.
    let home = tempfile::tempdir().unwrap();
    std::fs::rename(cache.path(), home.path().join("hub")).unwrap();
    let mut args = strings(&[
        "embed-texts",
        "--model-id",
        "kakaobrain/align-base",
        "--out",
    ]);
    args.push(npy.to_str().unwrap().to_string());
    args.push("coffee".into());
    let run = align_with(
        &args,
        &[
            ("HF_HOME", Some(home.path())),
            ("HF_HUB_CACHE", None),
            ("HF_HUB_OFFLINE", Some(Path::new("1"))),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let expected = reference("text_embeds.npy").1;
    assert_close(
        &read_npy(&npy).1,
        &expected[3 * 40..4 * 40],
        "text_embeds[3]",
    );
}

#[test]
fn offline_with_an_empty_cache_is_a_clear_one_line_error() {
    let cache = tempfile::tempdir().unwrap();
    let run = align_with(
        &strings(&[
            "embed-texts",
            "--model-id",
            "someone/missing",
            "--out",
            "/tmp/x.npy",
            "x",
        ]),
        &[
            ("HF_HUB_CACHE", Some(cache.path())),
            ("HF_HUB_OFFLINE", Some(Path::new("1"))),
        ],
    );
    assert_eq!(run.code, 1);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    for needle in [
        "someone/missing",
        cache.path().to_str().unwrap(),
        "config.json",
        "model.safetensors or pytorch_model.bin",
        "HF_HUB_OFFLINE",
    ] {
        assert!(run.stderr.contains(needle), "{needle}: {}", run.stderr);
    }
}

#[test]
fn embeddings_do_not_depend_on_the_kernels_instruction_set() {
    let out = tempfile::tempdir().unwrap();
    // (ALIGN_KERNELS caps the kernels: on an AVX-512 CPU `avx2` runs the AVX2 ones, `amx` is
    // the default)
    let embed = |what: &str, inputs: Vec<String>, kernels: &str| -> Vec<u8> {
        let npy = out.path().join(format!("{what}-{kernels}.npy"));
        let mut args = strings(&[what, "--model", TINY, "--out"]);
        args.push(npy.to_str().unwrap().to_string());
        args.extend(inputs);
        let run = Command::new(env!("CARGO_BIN_EXE_align"))
            .args(&args)
            .env("ALIGN_KERNELS", kernels)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        std::fs::read(npy).unwrap()
    };
    for (what, inputs, reference_file) in [
        ("embed-images", images(), "image_embeds.npy"),
        ("embed-texts", texts(), "text_embeds.npy"),
    ] {
        assert!(
            embed(what, inputs.clone(), "avx512") == embed(what, inputs.clone(), "avx2"),
            "{what}: AVX2 differs"
        );
        embed(what, inputs.clone(), "portable");
        let (_, portable) = read_npy::<f32>(&out.path().join(format!("{what}-portable.npy")));
        assert_close(&portable, &reference(reference_file).1, what);
        // (an unknown value is ignored, with a warning where the kernels run)
        assert!(
            embed(what, inputs.clone(), "amx") == embed(what, inputs, "avx-2"),
            "{what}: unknown cap not ignored"
        );
        let (_, amx) = read_npy::<f32>(&out.path().join(format!("{what}-amx.npy")));
        assert_close(&amx, &reference(reference_file).1, what);
    }
}
