//! Reading policy and Kubernetes object files, which are hostile input until
//! parsed: only regular files are read, never more than a bounded number of
//! bytes per file and per directory, and never by an open that can block (a
//! FIFO) or act on a device (a symlink to /dev/zero, or worse).
//!
//! A ConfigMap volume shows each key as a symlink `KEY -> ..data/KEY`, and
//! swaps `..data` to a new timestamped directory on every update. A directory
//! read resolves `..data` once, reads every key through that one generation,
//! and checks that `..data` still points there afterwards, so a reload never
//! mixes two versions of a ConfigMap.
use std::ffi::OsStr;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::os::unix::io::AsRawFd as _;
use std::path::{Path, PathBuf};

use super::error::{PolicyError, PolicyErrors};

/// Largest policy or object file read by default, in bytes.
pub const DEFAULT_FILE_SIZE_MAX: u64 = 1 << 20;
/// Largest total of the files of one directory read by default, in bytes.
pub const DEFAULT_DIR_SIZE_MAX: u64 = 16 << 20;

/// The symlink a ConfigMap volume swaps to publish a new version.
const CONFIGMAP_DATA: &str = "..data";
/// Reads of a directory whose ConfigMap changed meanwhile, before giving up
/// until its next change.
const GENERATION_ATTEMPTS: usize = 3;

/// How much of a directory is read before it is rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimits {
    /// Bytes of one file.
    pub file_size_max: u64,
    /// Bytes of all the files of one directory together.
    pub dir_size_max: u64,
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self {
            file_size_max: DEFAULT_FILE_SIZE_MAX,
            dir_size_max: DEFAULT_DIR_SIZE_MAX,
        }
    }
}

/// One file of a directory: the name errors give it (the path a user knows,
/// `DIR/KEY` for a ConfigMap key) and the path it is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub name: String,
    pub path: PathBuf,
}

/// The text of one file.
#[derive(Debug)]
pub(crate) struct Text {
    pub name: String,
    pub text: String,
}

/// The files of a directory that could be read, and the errors of the rest.
#[derive(Debug, Default)]
pub(crate) struct DirTexts {
    pub texts: Vec<Text>,
    pub errors: Vec<PolicyError>,
}

/// Bytes left to read in one directory.
struct Budget {
    limits: ReadLimits,
    left: u64,
}

/// Reads one file, under the per-file limit only.
pub(crate) fn read_file(path: &Path, limits: &ReadLimits) -> Result<String, PolicyError> {
    let name = path.display().to_string();
    let mut budget = Budget {
        limits: *limits,
        left: limits.file_size_max,
    };
    read_bounded(&name, path, &mut budget).map_err(Refused::into_error)
}

/// Why a file was not read: something about it, or the directory's limit.
enum Refused {
    File(PolicyError),
    Directory(PolicyError),
}

impl Refused {
    fn into_error(self) -> PolicyError {
        match self {
            Refused::File(e) | Refused::Directory(e) => e,
        }
    }
}

/// The files of `dir` whose names end with one of `extensions`, sorted by
/// name, not recursive. Names starting with '.' are skipped: editors'
/// temporary files and the `..data` / `..2024_01_01...` entries of a
/// ConfigMap volume. Directories are skipped; every other entry is listed,
/// and reading it decides whether it is a regular file.
pub(crate) fn list(dir: &Path, extensions: &[&str]) -> Result<Vec<Entry>, PolicyErrors> {
    let generation = generation(dir)?;
    Ok(list_in(dir, generation.as_deref(), extensions)?)
}

/// Reads every file `list` gives, within `limits`, all from one ConfigMap
/// generation.
pub(crate) fn read_dir(
    dir: &Path,
    extensions: &[&str],
    limits: &ReadLimits,
) -> Result<DirTexts, PolicyErrors> {
    for _ in 0..GENERATION_ATTEMPTS {
        let before = generation(dir)?;
        let read = list_in(dir, before.as_deref(), extensions).map(|e| read_all(e, limits));
        // A generation that went away while it was read explains any error.
        if generation(dir)? == before {
            return Ok(read?);
        }
    }
    Err(PolicyError::file(
        dir.display().to_string(),
        format!(
            "its ConfigMap changed {GENERATION_ATTEMPTS} times while it was read; \
             it is read again on its next change"
        ),
    )
    .into())
}

fn read_all(entries: Vec<Entry>, limits: &ReadLimits) -> DirTexts {
    let mut out = DirTexts::default();
    let mut budget = Budget {
        limits: *limits,
        left: limits.dir_size_max,
    };
    for e in entries {
        match read_bounded(&e.name, &e.path, &mut budget) {
            Ok(text) => out.texts.push(Text { name: e.name, text }),
            Err(Refused::File(err)) => out.errors.push(err),
            // Every later file would be over the directory's limit too.
            Err(Refused::Directory(err)) => {
                out.errors.push(err);
                break;
            }
        }
    }
    out
}

fn dir_error(dir: &Path, e: io::Error) -> PolicyError {
    PolicyError::file(dir.display().to_string(), format!("cannot read: {e}"))
}

/// The timestamped directory `..data` points to, if `dir` is a ConfigMap
/// volume.
fn generation(dir: &Path) -> Result<Option<PathBuf>, PolicyError> {
    let link = dir.join(CONFIGMAP_DATA);
    match fs::symlink_metadata(&link) {
        Ok(m) if m.file_type().is_symlink() => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(dir_error(&link, e)),
    }
    let target = fs::read_link(&link).map_err(|e| dir_error(&link, e))?;
    // The kubelet links a sibling by its bare name; anything else is not a
    // ConfigMap volume's doing, and is not followed.
    let mut parts = target.components();
    match (parts.next(), parts.next()) {
        (Some(std::path::Component::Normal(_)), None) => Ok(Some(target)),
        _ => Err(PolicyError::file(
            link.display().to_string(),
            format!(
                "points to {}, not to a directory beside it as in a ConfigMap volume",
                target.display()
            ),
        )),
    }
}

fn has_extension(name: &[u8], extensions: &[&str]) -> bool {
    extensions.iter().any(|e| name.ends_with(e.as_bytes()))
}

/// A name to show for a file whose name is not UTF-8: the bytes that are
/// not, escaped.
fn shown(dir: &Path, name: &OsStr) -> String {
    let escaped: String = name
        .as_bytes()
        .utf8_chunks()
        .flat_map(|c| {
            let bad: String = c.invalid().iter().map(|b| format!("\\x{b:02x}")).collect();
            [c.valid().to_owned(), bad]
        })
        .collect();
    dir.join(escaped).display().to_string()
}

/// The UTF-8 name of a candidate entry, None for entries that are not
/// candidates; names that are not UTF-8 are collected in `bad`.
fn candidate(
    dir: &Path,
    name: &OsStr,
    extensions: &[&str],
    bad: &mut Vec<String>,
) -> Option<String> {
    let bytes = name.as_bytes();
    if bytes.starts_with(b".") || !has_extension(bytes, extensions) {
        return None;
    }
    match name.to_str() {
        Some(n) => Some(n.to_owned()),
        None => {
            bad.push(shown(dir, name));
            None
        }
    }
}

fn list_in(
    dir: &Path,
    generation: Option<&Path>,
    extensions: &[&str],
) -> Result<Vec<Entry>, PolicyError> {
    let mut out = Vec::new();
    let mut bad_names = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| dir_error(dir, e))? {
        let entry = entry.map_err(|e| dir_error(dir, e))?;
        let Some(name) = candidate(dir, &entry.file_name(), extensions, &mut bad_names) else {
            continue;
        };
        let path = entry.path();
        // A ConfigMap key is read from the generation resolved above, not
        // through `..data`, which may move on while the directory is read.
        if generation.is_some() && is_configmap_key(&path, &name) {
            continue;
        }
        if listed(&path)? {
            out.push(Entry {
                name: path.display().to_string(),
                path,
            });
        }
    }
    if let Some(g) = generation {
        let gen_dir = dir.join(g);
        for entry in fs::read_dir(&gen_dir).map_err(|e| dir_error(&gen_dir, e))? {
            let entry = entry.map_err(|e| dir_error(&gen_dir, e))?;
            let Some(name) = candidate(dir, &entry.file_name(), extensions, &mut bad_names) else {
                continue;
            };
            let path = entry.path();
            if listed(&path)? {
                out.push(Entry {
                    name: dir.join(name).display().to_string(),
                    path,
                });
            }
        }
    }
    if let Some(first) = bad_names.first() {
        // Skipped, it would leave a policy file unenforced without a word.
        return Err(PolicyError::file(
            first.clone(),
            "file name is not UTF-8: rename the file",
        ));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn is_configmap_key(path: &Path, name: &str) -> bool {
    fs::read_link(path).is_ok_and(|t| t == Path::new(CONFIGMAP_DATA).join(name))
}

/// Whether `path` is listed: anything but a directory, which is never read.
/// FIFOs, devices and the like are listed so that reading refuses them by
/// name.
fn listed(path: &Path) -> Result<bool, PolicyError> {
    match fs::metadata(path) {
        Ok(m) => Ok(!m.is_dir()),
        // A dangling symlink is refused by name when read.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(PolicyError::file(
            path.display().to_string(),
            format!("cannot read: {e}"),
        )),
    }
}

fn kind_of(m: &Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "of another kind"
    }
}

/// Opens `path` for reading only if it is a regular file (symlinks are
/// followed: ConfigMap keys are symlinks). An O_PATH descriptor is looked at
/// first: opening it neither blocks on a FIFO nor runs a device's open. The
/// file is then reopened through that descriptor, so what is read is exactly
/// what was looked at.
fn open_regular(name: &str, path: &Path) -> Result<(File, Metadata), PolicyError> {
    let err = |msg: String| PolicyError::file(name, msg);
    let handle = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(path)
        .map_err(|e| err(format!("cannot read: {e}")))?;
    let meta = handle
        .metadata()
        .map_err(|e| err(format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(err(format!(
            "is {}, not a regular file: only regular files are read",
            kind_of(&meta)
        )));
    }
    let read_only = |p: &Path| {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(p)
    };
    let file = match read_only(&Path::new("/proc/self/fd").join(handle.as_raw_fd().to_string())) {
        Ok(f) => f,
        // Without /proc, the path again; the identity check below catches a
        // file swapped in between.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            read_only(path).map_err(|e| err(format!("cannot read: {e}")))?
        }
        Err(e) => return Err(err(format!("cannot read: {e}"))),
    };
    let opened = file
        .metadata()
        .map_err(|e| err(format!("cannot read: {e}")))?;
    if !opened.is_file() || (opened.dev(), opened.ino()) != (meta.dev(), meta.ino()) {
        return Err(err("changed while it was opened".into()));
    }
    Ok((file, opened))
}

fn read_bounded(name: &str, path: &Path, budget: &mut Budget) -> Result<String, Refused> {
    let err = |msg: String| PolicyError::file(name, msg);
    let (file, meta) = open_regular(name, path).map_err(Refused::File)?;
    let file_max = budget.limits.file_size_max;
    let max = file_max.min(budget.left);
    let too_big = |size: u64| {
        if size > file_max {
            Refused::File(err(format!(
                "{size} bytes or more, over the limit of {file_max} bytes per file \
                 (--file-size-max)"
            )))
        } else {
            Refused::Directory(err(format!(
                "the directory's files add up to more than {} bytes (--dir-size-max)",
                budget.limits.dir_size_max
            )))
        }
    };
    // The size fstat gives is only a hint (files in /proc say 0): the read
    // itself is what is bounded.
    if meta.len() > max {
        return Err(too_big(meta.len()));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Refused::File(err(format!("cannot read: {e}"))))?;
    let len = buf.len() as u64;
    if len > max {
        return Err(too_big(len));
    }
    budget.left -= len;
    String::from_utf8(buf).map_err(|e| Refused::File(not_utf8(name, &e)))
}

/// Where the first byte that is not UTF-8 is, as a YAML error would say.
fn not_utf8(name: &str, e: &std::string::FromUtf8Error) -> PolicyError {
    let bytes = e.as_bytes();
    let at = e.utf8_error().valid_up_to();
    let before = &bytes[..at];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    PolicyError {
        line: before.iter().filter(|&&b| b == b'\n').count() + 1,
        // Columns count characters, as YAML positions do.
        column: String::from_utf8_lossy(&before[line_start..])
            .chars()
            .count()
            + 1,
        ..PolicyError::file(name, format!("not UTF-8 text (byte 0x{:02x})", bytes[at]))
    }
}
