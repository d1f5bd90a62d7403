//! The last good policy, kept on the node's disk so that an agent started
//! with a policy directory that does not compile (a bad edit, a ConfigMap
//! half-written at boot) enforces the policy it enforced before instead of
//! nothing.
//!
//! What is kept is the policy files as read, not the compiled maps: the
//! compiled form bakes in the node's addresses and, with Kubernetes, every
//! pod address, and a reboot changes both. The files are compiled again at
//! start with the addresses and workloads of now, through the same parser
//! as the directory, so a file changed on disk is judged like any policy.
//!
//! One JSON document, `last-good-policy.json` under `--state-dir`: a format
//! version, the SHA-256 of the files, and the files. It is written to a
//! temporary file, fsynced and renamed over the old one (then the directory
//! is fsynced), so a crash leaves the old or the new document, never half
//! of one. The checksum catches a truncated or corrupted file; it does not
//! authenticate (whoever can write the directory is root on the node).
use std::{
    fs::{self, File, OpenOptions},
    io::{Read as _, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};
use sha2::{Digest as _, Sha256};

use crate::policy::{ReadLimits, Sources};

/// The document's name under the state directory.
pub(super) const FILE_NAME: &str = "last-good-policy.json";
/// The layout this agent writes and reads; another is refused.
const FORMAT: u32 = 1;
/// Slack over the policy bytes for the document's own fields.
const ENVELOPE_MAX: u64 = 1 << 20;

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    format: u32,
    /// Hex SHA-256 of `files` as serialized (see `digest`).
    sha256: String,
    files: Vec<KeptFile>,
}

#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeptFile {
    name: String,
    text: String,
}

/// The state directory's last good policy.
pub(super) struct LastGood {
    path: PathBuf,
    /// What this process last wrote or read, so an unchanged policy is not
    /// rewritten on every reload.
    on_disk: Option<Vec<(String, String)>>,
}

impl LastGood {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join(FILE_NAME),
            on_disk: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The kept policy files; `None` when there are none. A document that is
    /// not exactly what `save` writes is an error, and nothing of it is used.
    pub fn load(&mut self, limits: &ReadLimits) -> anyhow::Result<Option<Sources>> {
        let shown = self.path.display().to_string();
        // JSON escapes a control character in six bytes.
        let max = limits.dir_size_max.saturating_mul(6) + ENVELOPE_MAX;
        let Some(bytes) = read_bounded(&self.path, max).with_context(|| shown.clone())? else {
            return Ok(None);
        };
        let doc: Document = serde_json::from_slice(&bytes).map_err(|e| {
            anyhow::anyhow!(
                "{shown}:{}:{}: not a last good policy document: {e}",
                e.line(),
                e.column()
            )
        })?;
        if doc.format != FORMAT {
            bail!(
                "{shown}: format: {} is not the format this agent reads ({FORMAT}); \
                 refused",
                doc.format
            );
        }
        let actual = digest(&doc.files);
        if doc.sha256 != actual {
            bail!(
                "{shown}: sha256: the files do not match their checksum (the document \
                 is corrupt or was edited); refused"
            );
        }
        let files: Vec<(String, String)> =
            doc.files.into_iter().map(|f| (f.name, f.text)).collect();
        self.on_disk = Some(files.clone());
        Ok(Some(Sources::from_files(files)))
    }

    /// Keeps `sources` as the last good policy, atomically; nothing is
    /// written when they are what is kept already.
    pub fn save(&mut self, sources: &Sources) -> anyhow::Result<bool> {
        if self.on_disk.as_ref() == Some(&sources.files) {
            return Ok(false);
        }
        let files: Vec<KeptFile> = sources
            .files
            .iter()
            .map(|(name, text)| KeptFile {
                name: name.clone(),
                text: text.clone(),
            })
            .collect();
        let doc = Document {
            format: FORMAT,
            sha256: digest(&files),
            files,
        };
        let bytes = serde_json::to_vec_pretty(&doc)?;
        write_atomically(&self.path, &bytes)
            .with_context(|| format!("keeping the last good policy in {}", self.path.display()))?;
        self.on_disk = Some(sources.files.clone());
        Ok(true)
    }
}

fn digest(files: &[KeptFile]) -> String {
    // serde_json writes a struct's fields in declaration order, so the
    // same files always serialize to the same bytes.
    let bytes = serde_json::to_vec(files).unwrap_or_default();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The file's bytes, `None` when it does not exist. Only a regular file is
/// read (no FIFO to block on, no device), and never more than `max` bytes.
fn read_bounded(path: &Path, max: u64) -> anyhow::Result<Option<Vec<u8>>> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context("opening it"),
    };
    let meta = file.metadata().context("reading its metadata")?;
    if !meta.is_file() {
        bail!("not a regular file; refused");
    }
    if meta.len() > max {
        bail!(
            "{} bytes, over the {max} bytes allowed; refused",
            meta.len()
        );
    }
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .context("reading it")?;
    if bytes.len() as u64 > max {
        bail!("grew over the {max} bytes allowed while read; refused");
    }
    Ok(Some(bytes))
}

/// Temporary file, fsync, rename, fsync of the directory: a crash at any
/// point leaves the old document or the new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("no directory")?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let name = path.file_name().context("no file name")?.to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn scratch(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!(
            "netpol-last-good-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        Dir(d)
    }

    fn sources() -> Sources {
        Sources::from_files(vec![
            (
                "/etc/netpol/a.yaml".into(),
                "groups:\n  a: [10.0.0.0/8]\n".into(),
            ),
            ("/etc/netpol/b.yaml".into(), "rules: []\n".into()),
        ])
    }

    #[test]
    fn round_trip_is_atomic_and_skips_unchanged() {
        let d = scratch("round");
        let mut kept = LastGood::new(&d.0.join("state"));
        assert!(kept.load(&ReadLimits::default()).unwrap().is_none());
        assert!(kept.save(&sources()).unwrap());
        assert!(!kept.save(&sources()).unwrap(), "unchanged: not rewritten");
        let names: Vec<_> = fs::read_dir(d.0.join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [FILE_NAME], "no temporary file left behind");
        let mut again = LastGood::new(&d.0.join("state"));
        assert_eq!(again.load(&ReadLimits::default()).unwrap(), Some(sources()));
    }

    #[test]
    fn corrupt_or_edited_documents_are_refused_whole() {
        let d = scratch("corrupt");
        let mut kept = LastGood::new(&d.0);
        kept.save(&sources()).unwrap();
        let good = fs::read_to_string(kept.path()).unwrap();
        let cases = [
            (
                good.replace("10.0.0.0/8", "0.0.0.0/0"),
                "sha256: the files do not match",
            ),
            (
                good[..good.len() / 2].to_string(),
                "not a last good policy document",
            ),
            (
                good.replace("\"format\": 1", "\"format\": 2"),
                "format: 2 is not the format",
            ),
            (good.replace("\"format\": 1,", ""), "missing field `format`"),
            (
                good.replace("\"format\": 1,", "\"format\": 1, \"extra\": 0,"),
                "unknown field `extra`",
            ),
        ];
        for (text, want) in cases {
            fs::write(kept.path(), &text).unwrap();
            let err = LastGood::new(&d.0)
                .load(&ReadLimits::default())
                .expect_err(want);
            let msg = format!("{err:#}");
            assert!(msg.contains(want), "{msg:?} should say {want:?}");
            assert!(msg.contains(FILE_NAME), "{msg:?} should name the file");
        }
        // Bounded: a document over the limit is not read at all.
        fs::write(kept.path(), vec![b' '; 4 << 20]).unwrap();
        let small = ReadLimits {
            file_size_max: 1024,
            dir_size_max: 1024,
        };
        let err = LastGood::new(&d.0).load(&small).unwrap_err();
        assert!(format!("{err:#}").contains("over the"), "{err:#}");
        // A FIFO does not block the start.
        fs::remove_file(kept.path()).unwrap();
        nix::unistd::mkfifo(kept.path(), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = LastGood::new(&d.0).load(&small).unwrap_err();
        assert!(format!("{err:#}").contains("not a regular file"), "{err:#}");
    }
}
