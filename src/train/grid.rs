//! The paper's experiment grid (Tables 1 and 3): variants × labeled fractions × seeds, each
//! evaluated on the test split with the best-on-validation and the last checkpoint, summarised
//! as mean ± sample standard deviation over seeds. This part is torch-free: it aggregates the
//! per-run results that `dmnet-train grid` collects.
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One evaluated run of the grid.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GridResult {
    /// Variant name (`dmnet`, `supervised`, …).
    pub variant: String,
    /// Fraction of the training labeled slices used (0–1].
    pub fraction: f64,
    /// Seed of the run.
    pub seed: u64,
    /// `best` (on validation) or `last`.
    pub checkpoint: String,
    /// Test mIoU (mean over classes including background), 0–1.
    pub miou: f64,
    /// Test Dice of the foreground classes, 0–1.
    pub dice: f64,
    /// The run directory.
    pub run_dir: String,
}

/// Mean and sample standard deviation (n − 1; 0 for a single value).
pub fn mean_sd(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// A Markdown table in the layout of the paper's Tables 1/3: one row per variant (in the order
/// given), one column per labeled fraction, cells `mean ± sd` in percent over seeds, for one
/// checkpoint kind and one metric (`miou` or `dice`).
pub fn markdown_table(
    results: &[GridResult],
    variants: &[String],
    checkpoint: &str,
    metric: &str,
) -> String {
    let mut fractions: Vec<f64> = results.iter().map(|r| r.fraction).collect();
    fractions.sort_by(|a, b| a.partial_cmp(b).unwrap());
    fractions.dedup();
    let mut cells: BTreeMap<(String, u64), Vec<f64>> = BTreeMap::new();
    for r in results.iter().filter(|r| r.checkpoint == checkpoint) {
        let v = if metric == "dice" { r.dice } else { r.miou };
        cells
            .entry((r.variant.clone(), (r.fraction * 1e6).round() as u64))
            .or_default()
            .push(v * 100.0);
    }
    let header: Vec<String> = fractions
        .iter()
        .map(|f| format!("{:.0}%", f * 100.0))
        .collect();
    let mut out = format!(
        "| {} ({checkpoint}) | {} |\n",
        metric_name(metric),
        header.join(" | ")
    );
    out += &format!("|---|{}\n", "---|".repeat(fractions.len()));
    for v in variants {
        let row: Vec<String> = fractions
            .iter()
            .map(
                |f| match cells.get(&(v.clone(), (f * 1e6).round() as u64)) {
                    Some(vals) => {
                        let (m, s) = mean_sd(vals);
                        format!("{m:.1} ± {s:.1} (n={})", vals.len())
                    }
                    None => "–".into(),
                },
            )
            .collect();
        out += &format!("| {v} | {} |\n", row.join(" | "));
    }
    out
}

fn metric_name(metric: &str) -> &'static str {
    if metric == "dice" {
        "Dice %"
    } else {
        "mIoU %"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(variant: &str, fraction: f64, seed: u64, ck: &str, miou: f64) -> GridResult {
        GridResult {
            variant: variant.into(),
            fraction,
            seed,
            checkpoint: ck.into(),
            miou,
            dice: miou / 2.0,
            run_dir: String::new(),
        }
    }

    #[test]
    fn mean_sd_uses_the_sample_standard_deviation() {
        let (m, s) = mean_sd(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(m, 2.5);
        assert!(
            (s - 1.2909944487358056).abs() < 1e-12,
            "numpy.std(ddof=1) of 1..4"
        );
        assert_eq!(mean_sd(&[7.0]), (7.0, 0.0));
    }

    #[test]
    fn table_has_paper_layout_and_separates_checkpoints() {
        let rs = vec![
            r("dmnet", 0.1, 0, "best", 0.80),
            r("dmnet", 0.1, 1, "best", 0.90),
            r("dmnet", 0.3, 0, "best", 0.95),
            r("supervised", 0.1, 0, "best", 0.70),
            r("dmnet", 0.1, 0, "last", 0.10),
        ];
        let t = markdown_table(&rs, &["supervised".into(), "dmnet".into()], "best", "miou");
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "| mIoU % (best) | 10% | 30% |");
        assert_eq!(lines[2], "| supervised | 70.0 ± 0.0 (n=1) | – |");
        assert_eq!(lines[3], "| dmnet | 85.0 ± 7.1 (n=2) | 95.0 ± 0.0 (n=1) |");
        let dice = markdown_table(&rs, &["dmnet".into()], "last", "dice");
        assert!(dice.contains("| dmnet | 5.0 ± 0.0 (n=1) | – |"), "{dice}");
    }
}
