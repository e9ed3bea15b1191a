//! Files that appear complete or not at all (the bad-input policy's "nothing partial
//! visible"): written under a hidden temporary name beside the destination
//! (`.NAME.tmp-PID`), synced, then renamed over it (a rename is atomic within a file
//! system). Every writer of a user-visible file goes through [`write_with`]; the shard part
//! writers and the checkpoint folders, which commit several files at once, keep their own
//! journals (`prep::writer`, `artifact::run_dir`).
use crate::{Error, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// The hidden temporary name [`write_with`] writes `path` under.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Whether `name` is one of [`temp_path`]'s names (left behind by a killed process).
pub(crate) fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// Writes `path` with `write` (buffered) under [`temp_path`], syncs it and renames it over
/// `path`; on an error the temporary file is removed and `path` is untouched.
pub(crate) fn write_with(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = temp_path(path);
    let run = || -> std::io::Result<()> {
        let mut w = BufWriter::new(File::create(&tmp)?);
        write(&mut w)?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    run().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// [`write_with`] for bytes already in memory.
pub(crate) fn write_bytes(path: &Path, bytes: impl AsRef<[u8]>) -> Result<()> {
    write_with(path, |w| w.write_all(bytes.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_neither_the_file_nor_a_temporary() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a.json");
        write_bytes(&p, "{}").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{}");
        let e = write_with(&p, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(e.unwrap_err().to_string().contains("disk full"));
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{}",
            "the old file stays"
        );
        let names: Vec<_> = std::fs::read_dir(t.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary left");
        assert!(is_temp_name(
            temp_path(&p).file_name().unwrap().to_str().unwrap()
        ));
    }
}
