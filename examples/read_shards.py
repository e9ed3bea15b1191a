"""Read a dmnet shard folder (schemas/shard-v3.md) with standard tools: python read_shards.py DIR

pyarrow, DuckDB and polars each read the images and masks of one patient's labeled slices into
their own arrays (they must agree), and a numpy-only PyTorch-style Dataset serves (image, mask)
pairs, with the label on the source grid beside them."""
import sys

import duckdb
import numpy as np
import polars as pl
import pyarrow.compute as pc
import pyarrow.parquet as pq

d = sys.argv[1] if len(sys.argv) > 1 else "shards/la"
t = pq.read_table(d)                                            # the folder is an Arrow dataset
x = t["image"].combine_chunks().to_numpy_ndarray()              # [N, C, H, W] in one line
precision = t.schema.field("image").metadata[b"dmnet.precision"].decode()
print("image", x.shape, x.dtype, f"({precision} precision)",
      "schema v" + t.schema.metadata[b"dmnet.schema_version"].decode())

# slices per patient and role, in SQL
print(duckdb.sql(f"""SELECT patient_key, role, count(*) AS slices FROM read_parquet('{d}/**/*.parquet')
                     WHERE split = 'train' GROUP BY ALL ORDER BY ALL LIMIT 3""").fetchall())

# one patient's labeled slices, read by each client into its own arrays
patient = pc.min(t.filter(t["labeled"])["patient_key"]).as_py()
rows = duckdb.sql(f"""SELECT slice_index, image, mask FROM read_parquet('{d}/**/*.parquet')
                      WHERE patient_key = '{patient}' AND role = 'labeled' ORDER BY slice_index""").fetchall()
dk_img = np.array([r[1] for r in rows], np.float32)
dk_mask = np.array([r[2] for r in rows], np.uint8)
sel = t.filter(pc.and_(pc.equal(t["patient_key"], patient), pc.equal(t["role"], "labeled")))
sel = sel.sort_by("slice_index")
pa_img = sel["image"].combine_chunks().to_numpy_ndarray().reshape(len(rows), -1)
pa_mask = sel["mask"].combine_chunks().to_numpy_ndarray().reshape(len(rows), -1)
df = (pl.read_parquet(d + "/**/*.parquet")
      .filter((pl.col("patient_key") == patient) & (pl.col("role") == "labeled"))
      .sort("slice_index"))
pl_img = df["image"].to_numpy().reshape(len(rows), -1)
pl_mask = df["mask"].to_numpy().reshape(len(rows), -1)
assert np.array_equal(dk_img, pa_img) and np.array_equal(pa_img, pl_img), "images differ"
assert np.array_equal(dk_mask, pa_mask) and np.array_equal(pa_mask, pl_mask), "masks differ"
print(f"duckdb, pyarrow and polars agree on the {len(rows)} labeled slices of patient {patient}:",
      f"images {dk_img.shape}, masks with {int((dk_mask > 0).sum())} foreground pixels")


class SliceDataset:
    """A PyTorch-style Dataset with numpy only: (image [C, H, W] float32, mask [H, W] int64 or
    None for an unlabeled slice), and the label on the source grid (`source_mask`)."""
    def __init__(self, table):
        self.x = table["image"].combine_chunks().to_numpy_ndarray()
        self.masks = table["mask"].to_pylist()
        self.source = table["source_mask"].to_pylist()
        self.orig = list(zip(table["orig_height"].to_pylist(), table["orig_width"].to_pylist()))
        self.shape = self.x.shape[2:]

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        m = self.masks[i]
        return self.x[i].astype(np.float32), None if m is None else np.asarray(m, np.int64).reshape(self.shape)

    def source_mask(self, i):
        b = self.source[i]
        return None if b is None else np.frombuffer(b, np.uint8).reshape(self.orig[i])


ds = SliceDataset(t)
i = next(k for k, m in enumerate(ds.masks) if m is not None)    # a labeled slice
image, mask = ds[i]
src = ds.source_mask(i)
print("dataset", len(ds), "slice", i, image.shape, mask.shape,
      "source-grid label", None if src is None else src.shape)
