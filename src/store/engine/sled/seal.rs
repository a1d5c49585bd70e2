//! The clean-stop seal: a file beside sled's, outside its log, holding the
//! total of the stripe summaries at a clean stop (why: `verify.rs`).

use std::path::{Path, PathBuf};

use crate::store::verify::Summary;

/// The clean-stop seal's file name inside the data folder.
pub const SEAL_FILE: &str = "mupdated.seal";

fn seal_path(dir: &Path) -> PathBuf {
    dir.join(SEAL_FILE)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Write the seal: a temporary file, fsync, rename, fsync the folder.
pub(crate) fn write_seal(dir: &Path, total: Summary) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{SEAL_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    write!(
        f,
        "mupdated clean stop\nmailboxes {}\ndigest {:016x}\n",
        total.count, total.digest
    )?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, seal_path(dir))?;
    sync_dir(dir)
}

/// The seal, if there is one.
pub(crate) fn read_seal(dir: &Path) -> Result<Option<Summary>, String> {
    let text = match std::fs::read_to_string(seal_path(dir)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", seal_path(dir).display())),
    };
    let mut lines = text.lines();
    let bad = || {
        format!(
            "{} is not a seal written by mupdated",
            seal_path(dir).display()
        )
    };
    if lines.next() != Some("mupdated clean stop") {
        return Err(bad());
    }
    let count = lines
        .next()
        .and_then(|l| l.strip_prefix("mailboxes "))
        .and_then(|n| n.parse().ok())
        .ok_or_else(bad)?;
    let digest = lines
        .next()
        .and_then(|l| l.strip_prefix("digest "))
        .and_then(|n| u64::from_str_radix(n, 16).ok())
        .ok_or_else(bad)?;
    Ok(Some(Summary { count, digest }))
}

/// Remove the seal (and make the removal durable) before the first write.
pub(crate) fn remove_seal(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(seal_path(dir)) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

