//! Per-case 3-D metrics (`dmnet::metrics::CaseAccumulator`) against MedPy
//! (`tests/golden/case_metrics.py` beside its JSON): Dice, Jaccard, HD95 and ASD in mm on
//! anisotropic volumes fed slice by slice, as evaluation feeds them.
use dmnet::metrics::{CaseAccumulator, CaseSummary};
use serde_json::Value;

#[test]
fn per_case_metrics_match_medpy() {
    let p = crate::util::root().join("tests/golden/case_metrics.json");
    let g: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let dims: Vec<usize> = g["dims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let s: Vec<f64> = g["spacing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let (n, h, w) = (dims[0], dims[1], dims[2]);
    let mut acc = CaseAccumulator::new(2);
    let pairs = g["pairs"].as_array().unwrap();
    let bytes = |v: &Value| -> Vec<u8> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u8)
            .collect()
    };
    for (i, pair) in pairs.iter().enumerate() {
        let (pred, truth) = (bytes(&pair["pred"]), bytes(&pair["truth"]));
        // Slices in reverse order with indices 10, 12, 14, …: stacking sorts them, and the
        // index step of 2 doubles the slice spacing (given here as half of MedPy's).
        for z in (0..n).rev() {
            let r = z * h * w..(z + 1) * h * w;
            acc.add(
                &format!("case{i}"),
                10 + 2 * z as i64,
                &pred[r.clone()],
                &truth[r],
                (h, w),
                [s[1], s[2], s[0] / 2.0],
            );
        }
    }
    let cases = acc.finish();
    assert_eq!(cases.len(), pairs.len());
    for (c, pair) in cases.iter().zip(pairs) {
        let m = &c.classes[0];
        let close = |got: f64, key: &str| {
            let want = pair[key].as_f64().unwrap();
            assert!(
                (got - want).abs() < 1e-9,
                "{}: {key} {got} vs MedPy {want}",
                c.case
            );
        };
        close(m.dice, "dice");
        close(m.jaccard, "jaccard");
        close(m.hd95_mm.unwrap(), "hd95");
        close(m.asd_mm.unwrap(), "asd");
        assert_eq!(c.slices, n);
    }
    let summary = CaseSummary::of(&cases);
    let mean_dice = pairs
        .iter()
        .map(|p| p["dice"].as_f64().unwrap())
        .sum::<f64>()
        / 5.0;
    assert!((summary.dice - mean_dice).abs() < 1e-12);
    assert_eq!(summary.undefined_distances, 0);
}
