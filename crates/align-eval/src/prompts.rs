//! Class names and prompt templates, and the zero-shot classifier built from them.

use std::path::Path;

use align_collection::{Embedder, io};

use crate::error::{Error, Result};

/// CLIP's 80 ImageNet prompts as CLIP_benchmark ships them (MIT licence: see
/// `templates/LICENSE-CLIP_benchmark`).
const IMAGENET: &str = include_str!("../templates/imagenet.txt");

/// The built-in template sets: `imagenet` (80 prompts) and `simple`.
pub const BUILT_IN: &[&str] = &["imagenet", "simple"];

/// Templates by name (`imagenet`, `simple`) or from a file, one per line, each with `{c}`
/// where the class name goes (blank lines skipped).
pub fn templates(name_or_file: &str) -> Result<Vec<String>> {
    match name_or_file {
        "imagenet" => Ok(IMAGENET.lines().map(str::to_string).collect()),
        "simple" => Ok(vec!["a photo of a {c}.".to_string()]),
        file => {
            let path = Path::new(file);
            let lines = read_lines(path)?;
            for (line, t) in &lines {
                if !t.contains("{c}") {
                    return Err(Error::List {
                        path: path.to_path_buf(),
                        line: *line,
                        message: format!(
                            "template `{t}` has no {{c}} for the class name (built-in sets: {})",
                            BUILT_IN.join(", ")
                        ),
                    });
                }
            }
            Ok(lines.into_iter().map(|(_, t)| t).collect())
        }
    }
}

/// Class names from a file, one per line in class order.
pub fn classnames(path: &Path) -> Result<Vec<String>> {
    Ok(read_lines(path)?.into_iter().map(|(_, t)| t).collect())
}

/// The non-blank lines of a text file (trimmed), with their 1-based line numbers; an error
/// when there are none.
fn read_lines(path: &Path) -> Result<Vec<(usize, String)>> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let lines: Vec<(usize, String)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim().to_string()))
        .filter(|(_, l)| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return Err(Error::List {
            path: path.to_path_buf(),
            line: 1,
            message: "the file is empty".into(),
        });
    }
    Ok(lines)
}

/// Prompts embedded per model call when building the classifier.
const PROMPTS_PER_CALL: usize = 4096;

/// The zero-shot classifier as CLIP and CLIP_benchmark build it: for each class, every template
/// filled with its name is embedded and L2-normalised; the mean is L2-normalised again.
/// Returns `[classes, dim]` row-major. Prompts are embedded a few thousand at a time, each
/// once per run.
pub fn classifier(
    embedder: &dyn Embedder,
    classnames: &[String],
    templates: &[String],
) -> Result<Vec<f32>> {
    let dim = embedder.dim();
    let per_call = (PROMPTS_PER_CALL / templates.len().max(1)).max(1);
    let mut out = Vec::with_capacity(classnames.len() * dim);
    for names in classnames.chunks(per_call) {
        let prompts: Vec<String> = names
            .iter()
            .flat_map(|c| templates.iter().map(move |t| t.replace("{c}", c)))
            .collect();
        let embedded = embedder.embed_texts(&prompts).map_err(Error::Model)?;
        if embedded.len() != prompts.len() * dim {
            return Err(Error::Model(format!(
                "expected {} x {dim} prompt embedding values, got {}",
                prompts.len(),
                embedded.len()
            )));
        }
        for class in embedded.chunks_exact(templates.len() * dim) {
            let mut mean = vec![0f32; dim];
            for row in class.chunks_exact(dim) {
                let norm = norm(row);
                for (m, v) in mean.iter_mut().zip(row) {
                    *m += v / norm;
                }
            }
            for m in &mut mean {
                *m /= templates.len() as f32;
            }
            let n = norm(&mean);
            out.extend(mean.iter().map(|m| m / n));
        }
    }
    Ok(out)
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_templates() {
        let t = templates("imagenet").unwrap();
        assert_eq!(t.len(), 80);
        assert!(t.iter().all(|t| t.contains("{c}")));
        assert_eq!(t[0], "a bad photo of a {c}.");
        assert_eq!(templates("simple").unwrap(), ["a photo of a {c}."]);
    }

    #[test]
    fn template_files_are_checked() {
        let dir = std::env::temp_dir().join(format!("align-eval-t-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.txt");
        std::fs::write(&bad, "a photo of a {c}.\n\nno class here\n").unwrap();
        let e = templates(bad.to_str().unwrap()).unwrap_err().to_string();
        assert!(
            e.contains("bad.txt:3:") && e.contains("no class here"),
            "{e}"
        );
        let empty = dir.join("empty.txt");
        std::fs::write(&empty, "\n  \n").unwrap();
        let e = classnames(&empty).unwrap_err().to_string();
        assert!(e.contains("empty.txt:1: the file is empty"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
