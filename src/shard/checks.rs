//! The folder-level invariants of a shard folder that every reader enforces alike: one slice
//! orientation and one channel set (modality) per folder, unless the prep config's
//! `allow_mixed` lists `"orientation"` / `"modality"`. `dmnet-prep inspect` reports them, and
//! [`super::ShardIndex::open`] (under `dmnet-train`, `dmnet-infer` and `dmnet-export --verify`)
//! refuses a folder that breaks them, with the same message.
use std::collections::BTreeMap;

/// Rows per slice orientation and per channel set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mixtures {
    /// Rows per slice orientation (`axial`, `coronal`, `sagittal`).
    pub orientations: BTreeMap<String, u64>,
    /// Rows per channel set, e.g. `ct` or `flair+t1ce`.
    pub modalities: BTreeMap<String, u64>,
}

impl Mixtures {
    /// Counts one row.
    pub(crate) fn add(&mut self, channel_names: &[String], affine: &[f64; 16], axis: i32) {
        *self
            .orientations
            .entry(orientation(affine, axis))
            .or_default() += 1;
        *self.modalities.entry(channel_names.join("+")).or_default() += 1;
    }

    /// The broken invariants (empty: none), given the mixtures the prep config allows.
    pub(crate) fn problems(&self, allowed: &[String]) -> Vec<String> {
        let list = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, n)| format!("{k} ({n} rows)"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let allows = |what: &str| allowed.iter().any(|a| a == what);
        let mut out = Vec::new();
        if self.modalities.len() > 1 && !allows("modality") {
            out.push(format!(
                "several channel sets (modalities): {}; keep one with channels in [prep.preprocess], or allow_mixed = [\"modality\"]",
                list(&self.modalities)
            ));
        }
        if self.orientations.len() > 1 && !allows("orientation") {
            out.push(format!(
                "slices of several orientations: {}; one slice axis per dataset (slice_axis in [prep.preprocess], or allow_mixed = [\"orientation\"])",
                list(&self.orientations)
            ));
        }
        out
    }
}

/// The orientation of slices through voxel axis `axis` of a row's affine (row-major 4×4): the
/// world axis that voxel axis is closest to (L–R sagittal, A–P coronal, S–I axial).
pub(crate) fn orientation(affine: &[f64; 16], axis: i32) -> String {
    let Ok(a) = usize::try_from(axis) else {
        return format!("slice_axis {axis}");
    };
    if a > 2 {
        return format!("slice_axis {axis}");
    }
    let d = [affine[a], affine[4 + a], affine[8 + a]];
    let w = (0..3)
        .max_by(|&i, &j| d[i].abs().total_cmp(&d[j].abs()))
        .unwrap_or(2);
    ["sagittal", "coronal", "axial"][w].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_orientation_and_one_channel_set_unless_allowed() {
        let axial: [f64; 16] = std::array::from_fn(|i| if i % 5 == 0 { 1.0 } else { 0.0 });
        let mut m = Mixtures::default();
        m.add(&["ct".into()], &axial, 2);
        assert!(m.problems(&[]).is_empty());
        m.add(&["mr".into()], &axial, 0); // sagittal: through voxel axis 0 (L-R)
        let p = m.problems(&[]);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("ct (1 rows), mr (1 rows)"), "{p:?}");
        assert!(p[1].contains("axial (1 rows), sagittal (1 rows)"), "{p:?}");
        assert_eq!(m.problems(&["modality".into()]).len(), 1);
        assert!(m
            .problems(&["modality".into(), "orientation".into()])
            .is_empty());
    }
}
