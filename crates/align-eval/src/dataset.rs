//! The datasets: torchvision's ImageFolder layout or webdataset shards with a `cls` field for
//! classification; images with captions for retrieval.

use std::path::{Path, PathBuf};

use align_collection::io;

use crate::error::{Error, Result};
use crate::prompts;

/// A classification dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classification {
    /// One sub-folder per class, classes numbered in sorted folder-name order as torchvision's
    /// `ImageFolder` numbers them (every sub-folder is a class, hidden ones too).
    ImageFolder { root: PathBuf, classes: Vec<String> },
    /// Webdataset shards whose samples carry their class index in a `cls` member.
    Shards { tars: Vec<PathBuf> },
}

impl Classification {
    /// `paths` is one ImageFolder directory, a directory holding `*.tar` shards (directly or
    /// under `test/`, as CLIP_benchmark's webdataset mirrors are laid out), or `.tar` files.
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let is_tar = |p: &Path| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("tar"));
        if !paths.is_empty() && paths.iter().all(|p| is_tar(p)) {
            return Ok(Self::Shards {
                tars: paths.to_vec(),
            });
        }
        let [root] = paths else {
            return Err(Error::Dataset {
                path: paths.first().cloned().unwrap_or_default(),
                message: "give one ImageFolder directory, or webdataset .tar files".into(),
            });
        };
        let entries = sorted_entries(root)?;
        for dir in [root.clone(), root.join("test")] {
            let tars: Vec<PathBuf> = sorted_entries(&dir)
                .unwrap_or_default()
                .into_iter()
                .filter(|p| is_tar(p) && p.is_file())
                .collect();
            if !tars.is_empty() {
                return Ok(Self::Shards { tars });
            }
        }
        let classes: Vec<String> = entries
            .iter()
            .filter(|p| p.is_dir())
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        if classes.is_empty() {
            return Err(Error::Dataset {
                path: root.clone(),
                message: "no class folders (expected one sub-folder of images per class) and \
                          no .tar shards"
                    .into(),
            });
        }
        Ok(Self::ImageFolder {
            root: root.clone(),
            classes,
        })
    }

    /// The class names: from `file` when given (one per line, in class order), else the
    /// folder names with `_` read as spaces. Shards need the file, or a `classnames.txt`
    /// beside them.
    pub fn classnames(&self, file: Option<&Path>) -> Result<Vec<String>> {
        let names = match (file, self) {
            (Some(f), _) => prompts::classnames(f)?,
            (None, Self::ImageFolder { classes, .. }) => {
                classes.iter().map(|c| c.replace('_', " ")).collect()
            }
            (None, Self::Shards { tars }) => {
                let beside = tars[0]
                    .parent()
                    .map(|d| [d.join("classnames.txt"), d.join("../classnames.txt")]);
                match beside.into_iter().flatten().find(|p| p.is_file()) {
                    Some(f) => prompts::classnames(&f)?,
                    None => {
                        return Err(Error::Dataset {
                            path: tars[0].clone(),
                            message: "webdataset shards need --classnames FILE (or a \
                                      classnames.txt beside them)"
                                .into(),
                        });
                    }
                }
            }
        };
        if let Self::ImageFolder { root, classes } = self
            && names.len() != classes.len()
        {
            return Err(Error::Dataset {
                path: root.clone(),
                message: format!(
                    "{} class folders but {} class names",
                    classes.len(),
                    names.len()
                ),
            });
        }
        Ok(names)
    }

    /// The inputs to list: each class folder, or the shards.
    pub fn inputs(&self) -> Vec<PathBuf> {
        match self {
            Self::ImageFolder { root, classes } => classes.iter().map(|c| root.join(c)).collect(),
            Self::Shards { tars } => tars.clone(),
        }
    }
}

/// The entries of a directory, sorted by name.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .map_err(io(dir))?;
    entries.sort();
    Ok(entries)
}
