//! The run directory (`dmnet-train --out RUN`), owned by one type: where its config, records
//! and checkpoints live, and how a checkpoint is committed. A checkpoint is one folder,
//! `checkpoints/<kind>/{model.safetensors, optim.safetensors, state.json}`, written under a
//! temporary name and renamed into place last, so a kill never mixes the weights of one round
//! with the optimiser or state of another. Runs of dmnet 0.1.0 (flat
//! `checkpoints/<kind>.safetensors` + `<kind>.optim.safetensors` + `<kind>.json`) are still read.
use super::record::{CheckpointKind, TrainState};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// A run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunDir(PathBuf);

/// The three files of one committed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckpointFiles {
    /// The model weights (checkpoint variable names = the weight-name contract).
    pub weights: PathBuf,
    /// The optimisers' state.
    pub optim: PathBuf,
    /// The [`TrainState`] as JSON.
    pub state: PathBuf,
}

impl CheckpointFiles {
    fn in_folder(dir: &Path) -> CheckpointFiles {
        CheckpointFiles {
            weights: dir.join("model.safetensors"),
            optim: dir.join("optim.safetensors"),
            state: dir.join("state.json"),
        }
    }
    fn legacy(ckpts: &Path, kind: CheckpointKind) -> CheckpointFiles {
        let n = kind.name();
        CheckpointFiles {
            weights: ckpts.join(format!("{n}.safetensors")),
            optim: ckpts.join(format!("{n}.optim.safetensors")),
            state: ckpts.join(format!("{n}.json")),
        }
    }
}

impl RunDir {
    /// The run directory at `path` (nothing is created).
    pub fn new(path: impl Into<PathBuf>) -> RunDir {
        RunDir(path.into())
    }
    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
    /// `RUN/config.json`.
    pub fn config(&self) -> PathBuf {
        self.0.join("config.json")
    }
    fn checkpoints(&self) -> PathBuf {
        self.0.join("checkpoints")
    }
    /// The committed checkpoint `kind`: its folder, the previous folder when a kill struck
    /// between the two renames of a commit, or the flat files of a 0.1.0 run.
    pub fn checkpoint(&self, kind: CheckpointKind) -> Result<CheckpointFiles> {
        let ck = self.checkpoints();
        let n = kind.name();
        for dir in [ck.join(n), ck.join(format!(".{n}.old"))] {
            let files = CheckpointFiles::in_folder(&dir);
            if files.state.exists() {
                return Ok(files);
            }
        }
        let legacy = CheckpointFiles::legacy(&ck, kind);
        if legacy.weights.exists() {
            return Ok(legacy);
        }
        Err(Error::invalid(
            ck.join(n),
            "checkpoint not found (has the run completed its first validation round?)",
        ))
    }
    /// The resume state of checkpoint `kind`.
    pub fn state(&self, kind: CheckpointKind) -> Result<TrainState> {
        let p = self.checkpoint(kind)?.state;
        let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        serde_json::from_str(&text).map_err(|e| Error::invalid(&p, e.to_string()))
    }
    /// Commits checkpoint `kind`: `write` fills a fresh temporary folder (weights and optimiser
    /// state; `state` is written here, last), which then replaces the committed one.
    pub(crate) fn commit_checkpoint(
        &self,
        kind: CheckpointKind,
        state: &TrainState,
        write: impl FnOnce(&CheckpointFiles) -> Result<()>,
    ) -> Result<()> {
        let ck = self.checkpoints();
        let n = kind.name();
        let (live, new, old) = (
            ck.join(n),
            ck.join(format!(".{n}.new")),
            ck.join(format!(".{n}.old")),
        );
        let rm = |p: &Path| match std::fs::remove_dir_all(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(p, e)),
            _ => Ok(()),
        };
        rm(&new)?;
        std::fs::create_dir_all(&new).map_err(|e| Error::io(&new, e))?;
        let files = CheckpointFiles::in_folder(&new);
        write(&files)?;
        let json = serde_json::to_string_pretty(state)
            .map_err(|e| Error::invalid(&files.state, e.to_string()))?;
        std::fs::write(&files.state, json + "\n").map_err(|e| Error::io(&files.state, e))?;
        sync_dir(&new)?;
        if live.exists() {
            rm(&old)?;
            std::fs::rename(&live, &old).map_err(|e| Error::io(&live, e))?;
        }
        std::fs::rename(&new, &live).map_err(|e| Error::io(&new, e))?;
        sync_dir(&ck)?;
        rm(&old)?;
        for f in [
            CheckpointFiles::legacy(&ck, kind).weights,
            CheckpointFiles::legacy(&ck, kind).optim,
            CheckpointFiles::legacy(&ck, kind).state,
        ] {
            let _ = std::fs::remove_file(f);
        }
        Ok(())
    }
}

/// Flushes a folder's files and entries to disk, so a rename after it never exposes a folder
/// whose files are still in the page cache only.
fn sync_dir(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let p = e.map_err(|e| Error::io(dir, e))?.path();
        if p.is_file() {
            std::fs::File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(&p, e))?;
        }
    }
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: usize) -> TrainState {
        TrainState {
            epoch: step,
            global_step: step,
            best_score: None,
            best_epoch: None,
            seed: 0,
            loss_scale: 1.0,
        }
    }

    #[test]
    fn a_commit_replaces_the_folder_and_an_interrupted_one_leaves_the_previous() {
        let tmp = std::env::temp_dir().join(format!("dmnet-rundir-{}", std::process::id()));
        let run = RunDir::new(&tmp);
        let put = |f: &CheckpointFiles, tag: &str| {
            std::fs::write(&f.weights, tag).unwrap();
            std::fs::write(&f.optim, tag).unwrap();
            Ok(())
        };
        run.commit_checkpoint(CheckpointKind::Last, &state(1), |f| put(f, "one"))
            .unwrap();
        assert_eq!(run.state(CheckpointKind::Last).unwrap().global_step, 1);
        // A write that fails midway leaves the committed checkpoint untouched.
        let err = run.commit_checkpoint(CheckpointKind::Last, &state(2), |f| {
            std::fs::write(&f.weights, "two").unwrap();
            Err(Error::invalid(&f.optim, "disk full"))
        });
        assert!(err.is_err());
        let files = run.checkpoint(CheckpointKind::Last).unwrap();
        assert_eq!(std::fs::read_to_string(&files.weights).unwrap(), "one");
        // A kill between the two renames: only `.last.old` exists; it is used.
        let live = tmp.join("checkpoints/last");
        std::fs::rename(&live, tmp.join("checkpoints/.last.old")).unwrap();
        assert_eq!(run.state(CheckpointKind::Last).unwrap().global_step, 1);
        run.commit_checkpoint(CheckpointKind::Last, &state(3), |f| put(f, "three"))
            .unwrap();
        assert_eq!(run.state(CheckpointKind::Last).unwrap().global_step, 3);
        assert!(!tmp.join("checkpoints/.last.old").exists());
        assert!(run.checkpoint(CheckpointKind::Best).is_err());
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
