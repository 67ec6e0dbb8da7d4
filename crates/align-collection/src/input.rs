//! Listing the inputs: folders (walked in sorted order, with `NAME.txt` / `NAME.json`
//! sidecars), single image files, and webdataset tar shards (`KEY.jpg` + `KEY.txt` +
//! `KEY.json`, as img2dataset writes them).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use crate::error::{Error, Result};

/// Image file extensions taken from folders (any letter case).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"];

/// Where some bytes of a sample live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    File(PathBuf),
    /// `size` bytes at `offset` of a tar file.
    TarMember {
        tar: Arc<PathBuf>,
        offset: u64,
        size: u64,
    },
}

impl Location {
    /// The bytes, read now. Errors name the file (and member).
    pub fn read(&self) -> std::result::Result<Vec<u8>, String> {
        match self {
            Location::File(path) => {
                std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
            }
            Location::TarMember { tar, offset, size } => {
                let read = || -> std::io::Result<Vec<u8>> {
                    let mut f = File::open(tar.as_path())?;
                    f.seek(SeekFrom::Start(*offset))?;
                    let mut buf = vec![0; *size as usize];
                    f.read_exact(&mut buf)?;
                    Ok(buf)
                };
                read().map_err(|e| format!("{}: {e}", tar.display()))
            }
        }
    }
}

/// One image with its optional caption and JSON metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The path as walked (`TARPATH/MEMBER` for a tar member): the sample's identity in OUT.
    pub image_path: String,
    /// The webdataset key, or the path relative to its input folder (the file name for a
    /// single file).
    pub key: String,
    pub image: Location,
    pub caption: Option<Location>,
    pub json: Option<Location>,
    /// A webdataset shard's `cls` member (a class index, as CLIP_benchmark's shards hold).
    pub cls: Option<Location>,
    /// Sizes and modification times of the files the sample comes from: a sample whose
    /// fingerprint is unchanged is not embedded again.
    pub fingerprint: String,
}

/// What listing the inputs yields, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed {
    Sample(Sample),
    /// A folder or archive that could not be (fully) read: samples in it may be missing.
    Unreadable {
        path: String,
        error: String,
    },
}

/// Options of [`list`].
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Take files and folders whose name starts with `.` (they are skipped by default).
    pub include_hidden: bool,
}

/// Checks that every input exists (before any work starts).
pub fn check_inputs(inputs: &[PathBuf]) -> Result<()> {
    for input in inputs {
        if std::fs::metadata(input).is_err() {
            return Err(Error::MissingInput {
                path: input.clone(),
            });
        }
    }
    Ok(())
}

/// Lists `inputs` in order, calling `emit` for each sample or unreadable folder / archive;
/// stops early when `emit` returns false. A folder is walked in sorted order (symbolic links
/// to files are followed, to folders not, so there are no loops); a `.tar` file is a
/// webdataset shard; any other file is an image, with the same sidecars as in a folder.
pub fn list(inputs: &[PathBuf], opts: &ListOptions, emit: &mut dyn FnMut(Listed) -> bool) {
    for input in inputs {
        let go_on = match std::fs::metadata(input) {
            Ok(m) if m.is_dir() => walk_dir(input, input, opts, emit),
            Ok(m) if is_tar(input) => list_tar(input, &m, emit),
            Ok(m) => {
                let key = input
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| input.to_string_lossy().into_owned());
                let side = |ext: &str| {
                    let path = input.with_extension(ext);
                    let meta = std::fs::metadata(&path).ok().filter(|m| m.is_file())?;
                    Some((path, meta))
                };
                emit(Listed::Sample(file_sample(
                    input,
                    key,
                    &m,
                    side("txt"),
                    side("json"),
                )))
            }
            Err(e) => emit(Listed::Unreadable {
                path: input.to_string_lossy().into_owned(),
                error: e.to_string(),
            }),
        };
        if !go_on {
            return;
        }
    }
}

fn is_tar(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("tar"))
}

fn is_image(name: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(_, ext)| IMAGE_EXTENSIONS.iter().any(|e| e.eq_ignore_ascii_case(ext)))
}

fn mtime_ns(m: &std::fs::Metadata) -> u128 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

fn stamp(m: &std::fs::Metadata) -> String {
    format!("{}:{}", m.len(), mtime_ns(m))
}

fn file_sample(
    path: &Path,
    key: String,
    meta: &std::fs::Metadata,
    caption: Option<(PathBuf, std::fs::Metadata)>,
    json: Option<(PathBuf, std::fs::Metadata)>,
) -> Sample {
    let mut fingerprint = stamp(meta);
    for (tag, side) in [("txt", &caption), ("json", &json)] {
        if let Some((_, m)) = side {
            fingerprint.push_str(&format!(" {tag}={}", stamp(m)));
        }
    }
    Sample {
        image_path: path.to_string_lossy().into_owned(),
        key,
        image: Location::File(path.to_path_buf()),
        caption: caption.map(|(p, _)| Location::File(p)),
        json: json.map(|(p, _)| Location::File(p)),
        cls: None,
        fingerprint,
    }
}

/// Walks `dir` (below the input folder `root`); returns false when `emit` asked to stop.
fn walk_dir(
    root: &Path,
    dir: &Path,
    opts: &ListOptions,
    emit: &mut dyn FnMut(Listed) -> bool,
) -> bool {
    let unreadable = |e: std::io::Error| Listed::Unreadable {
        path: dir.to_string_lossy().into_owned(),
        error: e.to_string(),
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd.collect::<std::io::Result<Vec<_>>>(),
        Err(e) => Err(e),
    };
    let mut entries = match entries {
        Ok(v) => v,
        Err(e) => return emit(unreadable(e)),
    };
    entries.sort_by_key(|e| e.file_name());
    // File name -> metadata (links followed), for the sidecar look-ups.
    let mut files: BTreeMap<String, (PathBuf, std::fs::Metadata)> = BTreeMap::new();
    let mut dirs = Vec::new();
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && !opts.include_hidden {
            continue;
        }
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            dirs.push(path);
        } else if let Ok(meta) = std::fs::metadata(&path) {
            // A link to a folder is not followed; a dangling link is not a file.
            if meta.is_file() {
                files.insert(name, (path, meta));
            }
        }
    }
    for (name, (path, meta)) in &files {
        if !is_image(name) {
            continue;
        }
        let stem = Path::new(name)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let side = |ext: &str| files.get(&format!("{stem}.{ext}")).cloned();
        let key = path
            .strip_prefix(root)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned();
        let sample = file_sample(path, key, meta, side("txt"), side("json"));
        if !emit(Listed::Sample(sample)) {
            return false;
        }
    }
    dirs.into_iter().all(|d| walk_dir(root, &d, opts, emit))
}

/// Splits a member name as webdataset does: the key is everything up to the first `.` of the
/// last path component, the extension the rest (`a/b.c.jpg` -> `a/b`, `c.jpg`).
fn split_member(name: &str) -> Option<(&str, &str)> {
    let base_start = name.rfind('/').map_or(0, |i| i + 1);
    let dot = name[base_start..].find('.')? + base_start;
    Some((&name[..dot], &name[dot + 1..]))
}

/// Lists the samples of a webdataset shard: members grouped by key (consecutive members with
/// the same key form one sample, as webdataset groups them), the image being the member whose
/// extension is an image extension. Member data is not read here, only located.
fn list_tar(path: &Path, meta: &std::fs::Metadata, emit: &mut dyn FnMut(Listed) -> bool) -> bool {
    let tar_path = Arc::new(path.to_path_buf());
    let fingerprint = stamp(meta);
    let tar_name = path.to_string_lossy().into_owned();
    let unreadable = |e: String| Listed::Unreadable {
        path: tar_name.clone(),
        error: e,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => return emit(unreadable(e.to_string())),
    };
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let entries = match archive.entries_with_seek() {
        Ok(e) => e,
        Err(e) => return emit(unreadable(e.to_string())),
    };
    // The sample being gathered: its key and (extension -> location) of its members.
    let mut current: Option<(String, Vec<(String, Location)>)> = None;
    let flush = |current: Option<(String, Vec<(String, Location)>)>,
                 emit: &mut dyn FnMut(Listed) -> bool|
     -> bool {
        let Some((key, members)) = current else {
            return true;
        };
        let find = |pred: &dyn Fn(&str) -> bool| {
            members
                .iter()
                .find(|(ext, _)| pred(ext))
                .map(|(ext, loc)| (ext.clone(), loc.clone()))
        };
        // No image member: not an image sample (webdataset shards may hold other data).
        let Some((ext, image)) = find(&|e| is_image(&format!(".{e}"))) else {
            return true;
        };
        let caption = find(&|e| e.eq_ignore_ascii_case("txt")).map(|(_, l)| l);
        let json = find(&|e| e.eq_ignore_ascii_case("json")).map(|(_, l)| l);
        let cls = find(&|e| e.eq_ignore_ascii_case("cls")).map(|(_, l)| l);
        emit(Listed::Sample(Sample {
            image_path: format!("{tar_name}/{key}.{ext}"),
            key,
            image,
            caption,
            json,
            cls,
            fingerprint: fingerprint.clone(),
        }))
    };
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                return flush(current.take(), emit)
                    && emit(unreadable(format!("unreadable tar archive: {e}")));
            }
        };
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some((key, ext)) = split_member(&name) else {
            continue;
        };
        if ext.is_empty() || name.rsplit('/').next().is_some_and(|b| b.starts_with('.')) {
            continue;
        }
        let loc = Location::TarMember {
            tar: tar_path.clone(),
            offset: entry.raw_file_position(),
            size: entry.size(),
        };
        if offset_past_end(&loc, meta.len()) {
            return flush(current.take(), emit)
                && emit(unreadable(format!(
                    "truncated tar archive: member {name} is cut off"
                )));
        }
        match &mut current {
            Some((k, members)) if k == key => members.push((ext.to_string(), loc)),
            _ => {
                let previous = current.replace((key.to_string(), vec![(ext.to_string(), loc)]));
                if !flush(previous, emit) {
                    return false;
                }
            }
        }
    }
    flush(current.take(), emit)
}

fn offset_past_end(loc: &Location, file_len: u64) -> bool {
    match loc {
        Location::TarMember { offset, size, .. } => offset.saturating_add(*size) > file_len,
        Location::File(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::split_member;

    #[test]
    fn members_split_like_webdataset() {
        assert_eq!(split_member("00001.jpg"), Some(("00001", "jpg")));
        assert_eq!(split_member("a/b.c.json"), Some(("a/b", "c.json")));
        assert_eq!(split_member("a.b/c.txt"), Some(("a.b/c", "txt")));
        assert_eq!(split_member("noext"), None);
    }
}
