//! Patient keys (salted SHA-256 pseudonyms), the seeded 7:1:2 patient split (`splits.json`,
//! reusable with `--splits`), the labeled budget of `all-slices`, and the seeded slice draws of
//! the `paper` protocol (domain notes §2).
use std::path::Path;

use rand::seq::{IndexedRandom, SliceRandom};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::PrepConfig;
use crate::shard::Split;
use crate::{Error, Result};

/// The pseudonymous key of a patient: the first 16 hex digits of SHA-256(salt ‖ 0x00 ‖ id),
/// or the raw id when `keep` (`--keep-patient-ids`).
pub fn patient_key(raw: &str, salt: &str, keep: bool) -> String {
    if keep {
        return raw.to_string();
    }
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update([0u8]);
    h.update(raw.as_bytes());
    hex::encode(&h.finalize()[..8])
}

/// The salt used when neither `--salt` nor `DMNET_SALT` is given. It is published in this
/// source code, so anyone holding a list of PatientIDs can recompute the keys made with it:
/// fine for a local experiment, never for shards that leave the machine ([`resolve_salt`]).
pub(crate) const PUBLIC_SALT: &str = "dmnet-default-salt";

/// The shortest salt `--shareable` accepts (a short salt can be guessed, and with it every key).
pub(crate) const MIN_SHAREABLE_SALT_LEN: usize = 16;

/// Chooses the patient-key salt (policy of issue 12, README "Patient keys"):
/// `--salt` (`flag`), else `DMNET_SALT` (`env`); an empty value counts as absent.
/// - Neither given: [`PUBLIC_SALT`] with a loud warning (keys can be recomputed from
///   PatientIDs) — unless `keep_ids`, where keys are the raw ids and the salt is unused.
/// - `shareable` (the output is meant to leave this machine): a salt of at least
///   [`MIN_SHAREABLE_SALT_LEN`] characters other than the public one is required, and
///   `--keep-patient-ids` is refused.
pub(crate) fn resolve_salt(
    flag: Option<&str>,
    env: Option<&str>,
    keep_ids: bool,
    shareable: bool,
) -> Result<String> {
    let cli = Error::Usage;
    let given = [flag, env].into_iter().flatten().find(|s| !s.is_empty());
    if shareable {
        if keep_ids {
            return Err(cli(
                "--shareable refuses --keep-patient-ids: shared shards must not carry raw patient ids".into(),
            ));
        }
        return match given {
            None => Err(cli(format!(
                "--shareable needs a private salt (--salt or DMNET_SALT, at least {MIN_SHAREABLE_SALT_LEN} characters): \
                 the built-in salt is public, so anyone with a list of PatientIDs could recompute the keys"
            ))),
            Some(s) if s == PUBLIC_SALT || s.chars().count() < MIN_SHAREABLE_SALT_LEN => {
                Err(cli(format!(
                    "--shareable needs a private salt of at least {MIN_SHAREABLE_SALT_LEN} characters, \
                     not the public built-in one (got {} characters)",
                    s.chars().count()
                )))
            }
            Some(s) => Ok(s.to_string()),
        };
    }
    match given {
        Some(s) => Ok(s.to_string()),
        None if keep_ids => Ok(PUBLIC_SALT.to_string()),
        None => {
            tracing::warn!("{PUBLIC_SALT_WARNING}");
            Ok(PUBLIC_SALT.to_string())
        }
    }
}

/// The warning printed when the keys are salted with [`PUBLIC_SALT`].
pub(crate) const PUBLIC_SALT_WARNING: &str =
    "NO --salt / DMNET_SALT: patient keys use the PUBLIC built-in salt, so anyone with a list of \
     PatientIDs can recompute them. Keep these shards private, or re-run with a private \
     --salt (and --shareable to enforce it) before sharing them.";

/// Whether a manifest's salt fingerprint is that of [`PUBLIC_SALT`].
pub(crate) fn is_public_salt(fingerprint: &str) -> bool {
    fingerprint == salt_fingerprint(PUBLIC_SALT)
}

/// A short fingerprint of the salt (recorded in the manifest to catch a resume with another
/// salt; it does not reveal the salt).
pub(crate) fn salt_fingerprint(salt: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"dmnet-salt-fingerprint\0");
    h.update(salt.as_bytes());
    hex::encode(&h.finalize()[..4])
}

/// The patient split, by patient key (`OUT/splits.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub(crate) struct Splits {
    /// Seed used to shuffle the patients.
    pub seed: u64,
    /// train:val:test ratio.
    pub ratio: [u32; 3],
    /// Labeled patients in train / val / test.
    pub train: Vec<String>,
    /// Validation patients.
    pub val: Vec<String>,
    /// Test patients.
    pub test: Vec<String>,
    /// Patients without labels (training only).
    pub unlabeled: Vec<String>,
    /// `all-slices`: training patients whose slices keep their labels.
    pub labeled_train: Vec<String>,
}

impl Splits {
    /// Shuffles the labeled patients with `cfg.seed` and cuts them `cfg.split_ratio`
    /// (rounded; at least one training patient); picks the `all-slices` labeled budget as the
    /// first K training patients in shuffled order.
    pub fn compute(labeled: &[String], unlabeled: &[String], cfg: &PrepConfig) -> Splits {
        let mut keys = labeled.to_vec();
        keys.sort();
        keys.dedup();
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        keys.shuffle(&mut rng);
        let n = keys.len();
        let sum: u32 = cfg.split_ratio.iter().sum();
        let share = |r: u32| ((n as f64) * r as f64 / sum as f64).round() as usize;
        let n_train = share(cfg.split_ratio[0]).clamp(n.min(1), n);
        let n_val = share(cfg.split_ratio[1]).min(n - n_train);
        let train = keys[..n_train].to_vec();
        let k = match (cfg.labeled_patients, cfg.labeled_patient_fraction) {
            (Some(k), _) => k.min(n_train),
            (None, Some(f)) => ((n_train as f64) * f.get()).round() as usize,
            (None, None) => n_train,
        };
        let mut unl: Vec<String> = unlabeled
            .iter()
            .filter(|k| !keys.contains(k))
            .cloned()
            .collect();
        unl.sort();
        unl.dedup();
        Splits {
            seed: cfg.seed,
            ratio: cfg.split_ratio,
            labeled_train: train[..k].to_vec(),
            train,
            val: keys[n_train..n_train + n_val].to_vec(),
            test: keys[n_train + n_val..].to_vec(),
            unlabeled: unl,
        }
    }

    /// The split an input's own lists define (SSL4MIS: `train_slices.list`, `val.list`,
    /// `test.list`), patient keys in list order; the `all-slices` labeled budget is the first K
    /// training patients in that order (`labeled_patients`, or the rounded
    /// `labeled_patient_fraction`), as SSL4MIS's `patients_to_slices` counts them.
    pub fn from_lists(
        train: Vec<String>,
        val: Vec<String>,
        test: Vec<String>,
        cfg: &PrepConfig,
    ) -> Splits {
        let n = train.len();
        let k = match (cfg.labeled_patients, cfg.labeled_patient_fraction) {
            (Some(k), _) => k.min(n),
            (None, Some(f)) => ((n as f64) * f.get()).round() as usize,
            (None, None) => n,
        };
        Splits {
            seed: cfg.seed,
            ratio: [0, 0, 0],
            labeled_train: train[..k].to_vec(),
            train,
            val,
            test,
            unlabeled: Vec::new(),
        }
    }

    /// Assigns the patients of `labeled` / `unlabeled` that this split does not list, and
    /// changes nothing else: the new labeled patients are shuffled with `cfg.seed` and cut
    /// `cfg.split_ratio` among themselves; the `all-slices` budget takes new training patients
    /// until it reaches its target over all training patients (`labeled_patients`, or
    /// `labeled_patient_fraction` of them). Returns how many patients were added.
    pub fn extend(&mut self, labeled: &[String], unlabeled: &[String], cfg: &PrepConfig) -> usize {
        let new = |v: &[String]| -> Vec<String> {
            let mut n: Vec<String> = v
                .iter()
                .filter(|k| self.split_of(k).is_none())
                .cloned()
                .collect();
            n.sort();
            n.dedup();
            n
        };
        let (new_labeled, new_unlabeled) = (new(labeled), new(unlabeled));
        let new_unlabeled: Vec<String> = new_unlabeled
            .into_iter()
            .filter(|k| !new_labeled.contains(k))
            .collect();
        let added = new_labeled.len() + new_unlabeled.len();
        if added == 0 {
            return 0;
        }
        let part = Splits::compute(&new_labeled, &new_unlabeled, cfg);
        self.train.extend(part.train.iter().cloned());
        self.val.extend(part.val);
        self.test.extend(part.test);
        self.unlabeled.extend(part.unlabeled);
        let target = match (cfg.labeled_patients, cfg.labeled_patient_fraction) {
            (Some(k), _) => k.min(self.train.len()),
            (None, Some(f)) => ((self.train.len() as f64) * f.get()).round() as usize,
            (None, None) => self.train.len(),
        };
        let room = target.saturating_sub(self.labeled_train.len());
        self.labeled_train.extend(part.train.into_iter().take(room));
        added
    }

    /// The split of a patient key, if listed.
    pub(crate) fn split_of(&self, key: &str) -> Option<Split> {
        let has = |v: &Vec<String>| v.iter().any(|k| k == key);
        if has(&self.train) || has(&self.unlabeled) {
            Some(Split::Train)
        } else if has(&self.val) {
            Some(Split::Val)
        } else if has(&self.test) {
            Some(Split::Test)
        } else {
            None
        }
    }

    /// Whether a training patient's slices keep their labels (`all-slices` budget).
    pub(crate) fn in_labeled_budget(&self, key: &str) -> bool {
        self.labeled_train.iter().any(|k| k == key)
    }

    /// Reads a `splits.json`.
    pub fn load(path: &Path) -> Result<Splits> {
        let t = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&t).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            msg: format!("not a splits.json: {e}"),
        })
    }
}

/// The RNG for one study's slice draws: seeded by the run seed and the study's name, so a
/// study draws the same slices whatever the worker or thread order.
pub(crate) fn study_rng(seed: u64, study: &str) -> ChaCha8Rng {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(study.as_bytes());
    let d = h.finalize();
    ChaCha8Rng::seed_from_u64(u64::from_le_bytes(d[..8].try_into().unwrap()))
}

/// `paper` protocol draws: one labeled slice among `foreground` and up to `n_unlabeled` other
/// foreground slices (sorted). Returns `(labeled, unlabeled)`.
pub(crate) fn draw_paper(
    foreground: &[usize],
    n_unlabeled: usize,
    rng: &mut ChaCha8Rng,
) -> (Option<usize>, Vec<usize>) {
    let Some(&l) = foreground.choose(rng) else {
        return (None, Vec::new());
    };
    let rest: Vec<usize> = foreground.iter().copied().filter(|&k| k != l).collect();
    let mut u: Vec<usize> = rest.choose_multiple(rng, n_unlabeled).copied().collect();
    u.sort();
    (Some(l), u)
}

#[cfg(test)]
mod salt_tests {
    use super::*;

    #[test]
    fn salt_policy() {
        let long = "a-private-salt-of-24-chr";
        // flag beats env; empty counts as absent
        assert_eq!(
            resolve_salt(Some("f"), Some("e"), false, false).unwrap(),
            "f"
        );
        assert_eq!(
            resolve_salt(Some(""), Some("e"), false, false).unwrap(),
            "e"
        );
        assert_eq!(
            resolve_salt(None, Some(""), false, false).unwrap(),
            PUBLIC_SALT
        );
        assert_eq!(resolve_salt(None, None, true, false).unwrap(), PUBLIC_SALT);
        // shareable: a private salt of >= 16 characters, no raw ids
        assert_eq!(resolve_salt(None, Some(long), false, true).unwrap(), long);
        for (flag, keep, what) in [
            (None, false, "needs a private salt"),
            (Some("short"), false, "got 5 characters"),
            (Some(PUBLIC_SALT), false, "not the public built-in one"),
            (Some(long), true, "refuses --keep-patient-ids"),
        ] {
            let e = resolve_salt(flag, None, keep, true)
                .unwrap_err()
                .to_string();
            assert!(e.contains(what), "{e}");
        }
        assert!(is_public_salt(&salt_fingerprint(PUBLIC_SALT)));
        assert!(!is_public_salt(&salt_fingerprint(long)));
    }
}
