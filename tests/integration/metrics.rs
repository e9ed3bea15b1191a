//! The per-case evaluator (`dmnet::metrics::evaluate`) against its references
//! (`tests/golden/case_metrics.py` beside its JSON): MedPy's dc, jc, hd95 and asd on
//! anisotropic volumes, a brute-force NumPy reference on a stack with irregular slice gaps,
//! and the three conventions on empty, one-sided and single-slice cases. The volumes are fed
//! both whole ([`score_classes`]) and slice by slice as shard rows in reverse order through the
//! [`CaseCollector`] that `dmnet-train eval` and `dmnet-infer` use.
use dmnet::metrics::evaluate::{score_classes, CaseCollector, ClassScore, Convention};
use dmnet::metrics::Grid;
use dmnet::shard::{Role, SliceRecord, Split};
use serde_json::Value;

fn golden() -> Value {
    let p = crate::util::root().join("tests/golden/case_metrics.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn nums<T>(v: &Value, f: impl Fn(&Value) -> T) -> Vec<T> {
    v.as_array().unwrap().iter().map(f).collect()
}

fn usizes(v: &Value) -> Vec<usize> {
    nums(v, |x| x.as_u64().unwrap() as usize)
}

fn floats(v: &Value) -> Vec<f64> {
    nums(v, |x| x.as_f64().unwrap())
}

fn bytes(v: &Value) -> Vec<u8> {
    nums(v, |x| x.as_u64().unwrap() as u8)
}

fn close(got: Option<f64>, want: &Value, what: &str) {
    match (got, want.as_f64()) {
        (Some(a), Some(b)) => assert!((a - b).abs() < 1e-9, "{what}: {a} vs reference {b}"),
        (None, None) => {}
        other => panic!("{what}: {other:?} vs reference {want}"),
    }
}

fn check(m: &ClassScore, want: &Value, what: &str) {
    close(m.dice, &want["dice"], &format!("{what} dice"));
    if let Some(jac) = want.get("iou").or(want.get("jaccard")) {
        close(m.iou, jac, &format!("{what} iou"));
    }
    close(m.hd95, &want["hd95"], &format!("{what} hd95"));
    close(m.asd, &want["asd"], &format!("{what} asd"));
}

#[test]
fn whole_volumes_match_medpy() {
    let g = golden();
    let (dims, s) = (usizes(&g["dims"]), floats(&g["spacing"]));
    let grid = Grid::regular([dims[0], dims[1], dims[2]], [s[0], s[1], s[2]]);
    for (i, pair) in g["pairs"].as_array().unwrap().iter().enumerate() {
        let m = score_classes(
            &bytes(&pair["pred"]),
            &bytes(&pair["truth"]),
            &grid,
            2,
            Convention::Nnunet,
            true,
            grid.diagonal(),
        );
        check(&m[0], pair, &format!("pair {i}"));
    }
}

#[test]
fn irregular_slice_gaps_keep_their_true_geometry() {
    let g = golden();
    let irr = &g["irregular"];
    let dims = usizes(&irr["dims"]);
    let coords: Vec<Vec<f64>> = nums(&irr["coords"], |c| c.clone())
        .iter()
        .map(floats)
        .collect();
    let grid = Grid {
        dims: [dims[0], dims[1], dims[2]],
        coords: [coords[0].clone(), coords[1].clone(), coords[2].clone()],
    };
    for (i, pair) in irr["pairs"].as_array().unwrap().iter().enumerate() {
        let m = score_classes(
            &bytes(&pair["pred"]),
            &bytes(&pair["truth"]),
            &grid,
            2,
            Convention::Nnunet,
            true,
            0.0,
        );
        close(m[0].dice, &pair["dice"], "dice");
        close(m[0].hd95, &pair["hd95"], &format!("irregular {i} hd95"));
        close(m[0].asd, &pair["asd"], &format!("irregular {i} asd"));
    }
}

#[test]
fn every_convention_scores_empty_one_sided_and_single_slice_cases_as_documented() {
    let g = golden();
    let c = &g["conventions"];
    let (dims, s) = (usizes(&c["dims"]), floats(&c["spacing"]));
    let grid = Grid::regular([dims[0], dims[1], dims[2]], [s[0], s[1], s[2]]);
    assert!((grid.diagonal() - c["penalty"].as_f64().unwrap()).abs() < 1e-12);
    for case in c["cases"].as_array().unwrap() {
        for (conv, name) in [
            (Convention::Nnunet, "nnunet"),
            (Convention::Brats, "brats"),
            (Convention::Ssl4mis, "ssl4mis"),
        ] {
            let m = score_classes(
                &bytes(&case["pred"]),
                &bytes(&case["truth"]),
                &grid,
                2,
                conv,
                case["distances"].as_bool().unwrap(),
                grid.diagonal(),
            );
            check(
                &m[0],
                &case["expected"][name],
                &format!("{} under {name}", case["name"]),
            );
        }
    }
}

/// A shard row whose source-grid label is `truth` and whose model output puts all
/// probability on `pred` (S = the source size, so resizing back is the identity).
fn row(
    key: &str,
    index: usize,
    n: usize,
    (h, w): (usize, usize),
    pred: &[u8],
    truth: &[u8],
    spacing: [f64; 3],
) -> (SliceRecord, Vec<f32>) {
    let probs: Vec<f32> = (0..2)
        .flat_map(|c| {
            pred.iter()
                .map(move |&p| f32::from(u8::from(p as usize == c)))
        })
        .collect();
    let r = SliceRecord {
        patient_key: key.into(),
        source_path: format!("{key}.nii.gz"),
        slice_index: index as i32,
        slice_axis: 2,
        num_slices: n as i32,
        split: Split::Test,
        labeled: true,
        role: Role::Labeled,
        height: h as i32,
        width: w as i32,
        orig_height: h as i32,
        orig_width: w as i32,
        channel_names: vec!["mri".into()],
        image: vec![0.0; h * w],
        mask: Some(truth.to_vec()),
        label_names: vec!["background".into(), "fg".into()],
        // slicing axis 2: in-plane axes 0 (rows) and 1 (cols)
        spacing: [spacing[1], spacing[2], spacing[0]],
        pixel_spacing: [spacing[1], spacing[2]],
        spacing_known: true,
        source_mask: Some(truth.to_vec()),
        ..Default::default()
    };
    (r, probs)
}

#[test]
fn the_collector_stacks_shard_rows_into_the_source_volume() {
    let g = golden();
    let (dims, s) = (usizes(&g["dims"]), floats(&g["spacing"]));
    let (n, h, w) = (dims[0], dims[1], dims[2]);
    let pairs = g["pairs"].as_array().unwrap();
    let mut col = CaseCollector::new(2, Convention::Nnunet);
    for (i, _) in pairs.iter().enumerate() {
        col.expect(&format!("case{i}"), &format!("case{i}.nii.gz"), n);
    }
    for (i, pair) in pairs.iter().enumerate() {
        let (pred, truth) = (bytes(&pair["pred"]), bytes(&pair["truth"]));
        for z in (0..n).rev() {
            let px = z * h * w..(z + 1) * h * w;
            let spacing = [s[0], s[1], s[2]];
            let (r, p) = row(
                &format!("case{i}"),
                z,
                n,
                (h, w),
                &pred[px.clone()],
                &truth[px],
                spacing,
            );
            col.add(&r, &p);
        }
    }
    let names = vec!["background".to_string(), "fg".to_string()];
    let report = col.finish(&names);
    assert_eq!(report.cases, pairs.len());
    assert_eq!(report.grid, dmnet::metrics::evaluate::ScoreGrid::Source);
    for (c, pair) in report.per_case.iter().zip(pairs) {
        check(&c.classes[0], pair, &c.case);
        assert!(c.complete && c.slices == n);
        close(c.shard_grid_dice[0], &pair["dice"], "shard-grid dice");
    }
    let mean: f64 = pairs
        .iter()
        .map(|p| p["dice"].as_f64().unwrap())
        .sum::<f64>()
        / pairs.len() as f64;
    assert!((report.dice.unwrap() - mean).abs() < 1e-12);
    assert_eq!((report.missed, report.empty), (0, 0));
}
