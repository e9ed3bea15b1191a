"""Independent reference for dmnet's DICOM pixel decoding (tests/integration/volume.rs):
pydicom's `pixel_array` (pydicom 3 with the pylibjpeg plugins for JPEG, JPEG-LS and JPEG 2000,
scripts/requirements-clients.txt) of each file, before any rescale, written as little-endian
int64 to OUT/<basename>.i64, and one JSON line per file: name, shape, dtype, transfer syntax.

    python scripts/pydicom_pixels.py OUT FILE...
    python scripts/pydicom_pixels.py --test-files     # prints pydicom's test_files folder
"""
import json
import os
import sys

import numpy as np
import pydicom


def main():
    if sys.argv[1] == "--test-files":
        print(os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files"))
        return
    out = sys.argv[1]
    for f in sys.argv[2:]:
        name = os.path.basename(f)
        try:
            ds = pydicom.dcmread(f)
            arr = ds.pixel_array
        except Exception as e:  # reported, the Rust test decides
            print(json.dumps({"name": name, "error": str(e)}))
            continue
        np.asarray(arr).astype("<i8").ravel().tofile(os.path.join(out, name + ".i64"))
        print(json.dumps({
            "name": name,
            "shape": list(arr.shape),
            "dtype": str(arr.dtype),
            "ts": str(ds.file_meta.TransferSyntaxUID),
        }))


if __name__ == "__main__":
    main()
