"""h5py reference for the ACDC ingest test (tests/integration/acdc.rs): the subset the test
builds from ../shared/data/acdc (the first 3 patients of train_slices.list, the first patient of
val.list and of test.list, each with both frames), read with h5py, one entry per frame:
its split, its slice count, each slice's size and label histogram.

Run: .venv-ref/bin/python tests/golden/acdc_subset.py   (scripts/setup.sh --reference)"""
import json
import pathlib

import h5py
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
ACDC = ROOT.parent / "shared" / "data" / "acdc"
TRAIN_PATIENTS, VAL_PATIENTS, TEST_PATIENTS = 3, 1, 1


def lines(name):
    return [l.strip() for l in (ACDC / name).read_text().splitlines() if l.strip()]


def first_patients(items, n, key):
    keep = []
    for it in items:
        p = key(it)
        if p not in keep:
            keep.append(p)
    keep = keep[:n]
    return [it for it in items if key(it) in keep]


def patient(s):
    return s.split("_")[0]


def subset():
    """The list lines of the subset, in list order: (train slice lines, val frames, test frames)."""
    train = first_patients(lines("train_slices.list"), TRAIN_PATIENTS, patient)
    val = first_patients(lines("val.list"), VAL_PATIENTS, patient)
    test = first_patients(lines("test.list"), TEST_PATIENTS, patient)
    return train, val, test


def hist(label):
    return [int((label == k).sum()) for k in range(4)]


def main():
    train, val, test = subset()
    frames = {}
    for line in train:
        frame, z = line.rsplit("_slice_", 1)
        with h5py.File(ACDC / "data" / "slices" / f"{line}.h5", "r") as f:
            img, lab = f["image"][()], f["label"][()]
        e = frames.setdefault(frame, {"split": "train", "patient": patient(frame), "slices": {}})
        e["slices"][int(z)] = {"size": list(img.shape), "hist": hist(lab)}
    for split, items in (("val", val), ("test", test)):
        for frame in items:
            with h5py.File(ACDC / "data" / f"{frame}.h5", "r") as f:
                img, lab = f["image"][()], f["label"][()]
            # D x H x W: slice k along axis 0, as SSL4MIS's test_single_volume reads it
            frames[frame] = {
                "split": split,
                "patient": patient(frame),
                "slices": {k: {"size": list(img.shape[1:]), "hist": hist(lab[k])} for k in range(img.shape[0])},
            }
    for e in frames.values():
        # slice numbers from 1 in the slice files; the ingest keeps their order, 0-based
        first = min(e["slices"])
        e["slices"] = [e["slices"][k] for k in sorted(e["slices"])]
        e["first_slice_number"] = first
    out = {
        "train_slice_lines": train,
        "val_frames": val,
        "test_frames": test,
        "labeled_patients_at_ingest": 2,
        "frames": frames,
    }
    (ROOT / "tests" / "golden" / "acdc_subset.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
