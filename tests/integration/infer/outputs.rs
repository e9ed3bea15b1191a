//! Issue 14 points 2, 3 and 5 on the output side: `--tta` agrees with the tch forward of the
//! mirrored inputs averaged, probabilities carry the NIfTI vector intent, a DICOM SEG written
//! for `dicom/ct-3slice` reads back in highdicom with the NIfTI mask's pixels and the source
//! geometry, help examples paste into a shell, logs carry no ANSI codes off a terminal, and a
//! wrong `--model` path names the missing model file.
use super::{
    ct_preprocess, exported, infer_run, la_case, make_run, make_shards, model_config, preprocess,
    summary_of, S,
};
use crate::export::py;
use crate::util::{bin, run_ok, stderr, stdout, tmp};
use dmnet::cli::DeviceChoice;
use dmnet::infer::tta::{predict, Tta};
use dmnet::model::DmNet;
use dmnet::onnxrt::session::OnnxModel;
use std::path::Path;

#[test]
fn tta_flip_agrees_with_the_tch_forward_of_mirrored_inputs_averaged() {
    let Some((img, lab)) = la_case() else { return };
    let dir = tmp();
    let cfg = model_config(1);
    let run = make_run(dir.path(), &cfg);
    let onnx = dir.path().join("m.onnx");
    assert!(super::export(&run, &onnx, &[]).status.success());
    let shards = make_shards(dir.path(), &img, &lab, 4);
    let rows: Vec<_> = dmnet::shard::schema::read_shards(&shards)
        .unwrap()
        .flat_map(|g| g.unwrap())
        .collect();
    let x: Vec<f32> = rows.iter().flat_map(|r| r.image.clone()).collect();
    let n = rows.len();
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let net = DmNet::new(&vs.root(), &cfg).unwrap();
    vs.load_partial(super::best_weights(&run)).unwrap();
    let xt = tch::Tensor::from_slice(&x).view([n as i64, 1, S as i64, S as i64]);
    let fwd = |t: &tch::Tensor| tch::no_grad(|| net.forward_t(t, false).probabilities());
    let mut model = OnnxModel::open(&onnx, DeviceChoice::Cpu, None).unwrap();
    for (tta, dims) in [
        (Tta::Flip, vec![vec![], vec![3i64]]),
        (Tta::FlipAll, vec![vec![], vec![3], vec![2], vec![2, 3]]),
    ] {
        // tch: mean over mirrorings f of f(net(f(x))).
        let mut want = tch::Tensor::zeros([n as i64, 2, S as i64, S as i64], tch::kind::FLOAT_CPU);
        for d in &dims {
            let p = if d.is_empty() {
                fwd(&xt)
            } else {
                fwd(&xt.flip(d.as_slice())).flip(d.as_slice())
            };
            want += p;
        }
        let want = Vec::<f32>::try_from((want / dims.len() as f64).flatten(0, -1)).unwrap();
        let got = predict(&mut model, x.clone(), [n, 1, S, S], 2, tta).unwrap();
        let plain = predict(&mut model, x.clone(), [n, 1, S, S], 2, Tta::None).unwrap();
        let diff = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max)
        };
        eprintln!(
            "{tta:?}: max |onnx − tch| = {:.2e}; max change from no TTA = {:.2e}",
            diff(&got, &want),
            diff(&got, &plain)
        );
        assert!(diff(&got, &want) <= 1e-4, "{tta:?}");
        assert!(diff(&got, &plain) > 1e-3, "{tta:?} changed nothing");
    }
    // End to end: --tta flip on the shards writes its choice into the summary.
    let o = infer_run(&onnx, &shards, &dir.path().join("o"), &["--tta", "flip"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(summary_of(&o)["tta"], "flip");
}

#[test]
fn probabilities_are_a_vector_intent_nifti_whose_argmax_is_the_mask() {
    let Some((img, _)) = la_case() else { return };
    let dir = tmp();
    let onnx = exported(dir.path(), "m", &model_config(1), &preprocess());
    let out = dir.path().join("out");
    let o = infer_run(&onnx, &img, &out, &["--probabilities", "--tta", "flip"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let name = img.file_name().unwrap().to_str().unwrap();
    let stem = name.trim_end_matches(".nii.gz");
    let check = r#"
import nibabel as nib, numpy as np, sys
img, mask, prob = (nib.load(p) for p in sys.argv[1:4])
h = prob.header
assert int(h["intent_code"]) == 1007, h["intent_code"]
assert h.get_intent()[0] == "vector", h.get_intent()
assert prob.shape == img.shape + (1, 2), prob.shape
assert np.allclose(prob.affine, img.affine, atol=1e-4)
p = np.asanyarray(prob.dataobj)[:, :, :, 0, :]
assert np.allclose(p.sum(-1), 1, atol=1e-4), p.sum(-1).min()
m = np.asanyarray(mask.dataobj)
agree = (p.argmax(-1) == m).mean()
assert agree > 0.9999, agree
print(int(m.sum()))
"#;
    run_ok(
        py().args(["-c", check])
            .arg(&img)
            .arg(out.join(name))
            .arg(out.join(format!("{stem}_probabilities.nii.gz"))),
    );
}

/// Reads a DICOM SEG back with highdicom and pydicom: the SOP class, the study, patient and
/// Frame of Reference of the source, every source instance referenced, the segment labels
/// (argv 4, comma-separated), the pixels of the NIfTI mask (argv 3) per source instance, and
/// the geometry (orientation, spacing, per-frame positions, highdicom's volume affine = the
/// NIfTI affine in LPS). Prints the voxel count of each label value.
const SEG_CHECK: &str = r#"
import glob, sys, numpy as np, nibabel as nib, pydicom, highdicom as hd
seg = hd.seg.segread(sys.argv[1])
src = [pydicom.dcmread(f) for f in sorted(glob.glob(sys.argv[2] + "/*.dcm"))]
mask = np.asanyarray(nib.load(sys.argv[3]).dataobj)
nifti_affine = nib.load(sys.argv[3]).affine
s0 = src[0]
assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and seg.SegmentationType == "BINARY"
for tag in ["FrameOfReferenceUID", "StudyInstanceUID", "PatientID", "PatientName"]:
    assert getattr(seg, tag) == getattr(s0, tag), tag
ref = seg.ReferencedSeriesSequence[0]
assert ref.SeriesInstanceUID == s0.SeriesInstanceUID
assert {i.ReferencedSOPInstanceUID for i in ref.ReferencedInstanceSequence} == {d.SOPInstanceUID for d in src}
assert [x.SegmentLabel for x in seg.SegmentSequence] == sys.argv[4].split(","), sys.argv[4]
n = np.cross(np.array(s0.ImageOrientationPatient[:3], float), np.array(s0.ImageOrientationPatient[3:], float))
order = sorted(src, key=lambda d: float(np.dot(np.array(d.ImagePositionPatient, float), n)))
uids = [d.SOPInstanceUID for d in order]
px = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True)
want = np.transpose(mask, (2, 1, 0))
assert px.shape == want.shape, (px.shape, want.shape)
assert (px == want).all(), int((px != want).sum())
# Geometry: every frame sits at its source slice's position, with the source orientation
# and pixel spacing; highdicom's volume affine (LPS, (slice, row, col)) is the NIfTI's.
shared = seg.SharedFunctionalGroupsSequence[0]
assert np.allclose(shared.PlaneOrientationSequence[0].ImageOrientationPatient, s0.ImageOrientationPatient)
assert np.allclose(shared.PixelMeasuresSequence[0].PixelSpacing, s0.PixelSpacing)
pos = {f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID:
       f.PlanePositionSequence[0].ImagePositionPatient for f in seg.PerFrameFunctionalGroupsSequence}
for d in src:
    assert np.allclose(pos[d.SOPInstanceUID], d.ImagePositionPatient, atol=1e-4)
vol = seg.get_volume(combine_segments=True)
lps = np.diag([-1, -1, 1, 1]) @ nifti_affine
lps = lps[:, [2, 1, 0, 3]]
A, arr = np.array(vol.affine, float), vol.array
if np.dot(A[:3, 0], lps[:3, 0]) < 0:  # highdicom stacked the slices the other way round
    A[:, 3] += (arr.shape[0] - 1) * A[:, 0]
    A[:, 0] = -A[:, 0]
    arr = arr[::-1]
assert np.allclose(A, lps, atol=1e-3), (vol.affine, lps)
assert (arr == want).all()
print(*[int((want == k).sum()) for k in range(len(sys.argv[4].split(",")) + 1)])
"#;

/// Runs [`SEG_CHECK`]; returns the voxel count per label value.
fn check_seg(seg: &Path, series: &Path, nifti: &Path, labels: &[&str]) -> Vec<usize> {
    let o = run_ok(
        py().args(["-c", SEG_CHECK])
            .arg(seg)
            .arg(series)
            .arg(nifti)
            .arg(labels.join(",")),
    );
    stdout(&o)
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect()
}

#[test]
fn a_dicom_seg_for_ct_3slice_reads_back_in_highdicom_with_the_source_geometry() {
    let Some(series) = crate::util::shared_data("dicom/ct-3slice/series", "infer") else {
        return;
    };
    let dir = tmp();
    // End to end: dmnet-infer on the series writes the mask and the SEG beside it.
    let mut pre = ct_preprocess();
    pre.label_names = vec!["background".into(), "liver".into()];
    let onnx = exported(dir.path(), "liver", &model_config(1), &pre);
    let out = dir.path().join("out");
    let o = infer_run(&onnx, &series, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(summary_of(&o)["input_kind"], "dicom");
    let counts = check_seg(
        &out.join("series.seg.dcm"),
        &series,
        &out.join("series.nii.gz"),
        &["liver"],
    );
    eprintln!("dmnet-infer SEG: voxels per class {counts:?}");

    // A copy of the series without FrameOfReferenceUID cannot carry a SEG: `auto` warns and
    // writes the mask, `both` fails the case naming the tag.
    let nofor = dir.path().join("no-for");
    let strip = r#"
import glob, os, sys, pydicom
for f in glob.glob(sys.argv[1] + "/*.dcm"):
    d = pydicom.dcmread(f)
    del d.FrameOfReferenceUID
    d.save_as(os.path.join(sys.argv[2], os.path.basename(f)))
"#;
    std::fs::create_dir_all(&nofor).unwrap();
    run_ok(py().args(["-c", strip]).arg(&series).arg(&nofor));
    let o = infer_run(&onnx, &nofor, &dir.path().join("auto"), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("WARN") && stderr(&o).contains("FrameOfReferenceUID"));
    assert!(dir.path().join("auto/no-for.nii.gz").exists());
    assert!(!dir.path().join("auto/no-for.seg.dcm").exists());
    let o = infer_run(
        &onnx,
        &nofor,
        &dir.path().join("both"),
        &["--format", "both"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("FrameOfReferenceUID"), "{}", stderr(&o));
    let left: Vec<_> = std::fs::read_dir(dir.path().join("both"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["summary.json"], "nothing partial");

    // The writer on a mask with known content: soft tissue (> 0 HU) and bone (> 300 HU) of
    // the same CT, two segments, next to the NIfTI of the same mask.
    let (all, _) = dmnet::volume::scan_dicom_dir(&series).unwrap();
    let vol = dmnet::volume::read_dicom_series(&all[0]).unwrap();
    let mask: Vec<u8> = vol
        .data
        .iter()
        .map(|&hu| u8::from(hu > 0.0) + u8::from(hu > 300.0))
        .collect();
    let nifti = dir.path().join("hu.nii.gz");
    dmnet::volume::write_nifti_mask(&nifti, &mask, &vol).unwrap();
    let seg = dir.path().join("hu.seg.dcm");
    let names: Vec<String> = ["background", "soft tissue", "bone"]
        .map(String::from)
        .into();
    let input = dmnet::infer::seg::SegInput {
        series: &all[0],
        volume: &vol,
        mask: &mask,
        class_names: &names,
        description: "HU threshold test",
    };
    dmnet::infer::seg::write_seg(&seg, &input).unwrap();
    let counts = check_seg(&seg, &series, &nifti, &["soft tissue", "bone"]);
    eprintln!("threshold SEG: voxels per class {counts:?}");
    assert!(counts.iter().all(|&c| c > 1000), "{counts:?}");
}

/// The Examples section of `--help`, rendered for an 80-column terminal, is the source text
/// (no line wrapped inside a command) and every example runs through `bash -n`.
#[test]
fn help_examples_paste_into_a_shell() {
    for name in ["dmnet-infer", "dmnet-export"] {
        let o = run_ok(bin(name).arg("--help").env("COLUMNS", "80"));
        let help = stdout(&o);
        let ex = help
            .split("Examples:")
            .nth(1)
            .unwrap_or_else(|| panic!("{name}: no Examples section:\n{help}"));
        for line in ex.lines() {
            assert!(line.len() <= 80, "{name}: {line}");
            let t = line.trim_start();
            let continued = line.starts_with("      ");
            assert!(
                t.is_empty()
                    || t.starts_with('#')
                    || t.starts_with("dmnet-")
                    || t.starts_with("ORT_DYLIB_PATH=")
                    || continued
                    || !line.starts_with(' '),
                "{name}: a wrapped line: {line:?}"
            );
        }
        let commands: String = ex
            .lines()
            .take_while(|l| l.is_empty() || l.starts_with(' '))
            .collect::<Vec<_>>()
            .join("\n");
        let o = std::process::Command::new("bash")
            .args(["-n", "-c", &commands])
            .output()
            .unwrap();
        assert!(o.status.success(), "{name}: {}\n{commands}", stderr(&o));
        assert!(commands.matches(name).count() >= 2, "{name}: {commands}");
    }
}

#[test]
fn logs_carry_no_ansi_codes_off_a_terminal_and_a_missing_model_is_named() {
    let Some((img, _)) = la_case() else { return };
    let dir = tmp();
    let missing = dir.path().join("models/nope.onnx");
    let o = infer_run(&missing, &img, &dir.path().join("o"), &[]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("models/nope.onnx") && e.contains("model file not found"),
        "{e}"
    );
    assert!(!e.contains("nope.json"), "{e}");
    // A warning and an error line (an incomplete case) through the log formatter.
    let onnx = exported(dir.path(), "m", &model_config(1), &preprocess());
    let bad = dir.path().join("broken.nii.gz");
    std::fs::write(&bad, b"\x1f\x8bnot really gzip").unwrap();
    let o = infer_run(&onnx, &bad, &dir.path().join("o"), &[]);
    let e = stderr(&o);
    assert!(e.contains("ERROR") && e.contains("broken.nii.gz"), "{e}");
    assert!(
        !e.contains('\x1b'),
        "ANSI escape in a redirected log: {e:?}"
    );
}
