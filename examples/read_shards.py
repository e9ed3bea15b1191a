"""Read a dmnet shard folder (schemas/shard-v2.md) with standard tools: python read_shards.py DIR"""
import sys

import duckdb
import numpy as np
import pyarrow.parquet as pq

d = sys.argv[1] if len(sys.argv) > 1 else "shards/la"
t = pq.read_table(d)                                            # the folder is an Arrow dataset
x = t["image"].combine_chunks().to_numpy_ndarray()              # [N, C, H, W] in one line
print("image", x.shape, x.dtype, "schema v" + t.schema.metadata[b"dmnet.schema_version"].decode())
print(duckdb.sql(f"""SELECT patient_key, role, count(*) AS slices FROM read_parquet('{d}/**/*.parquet')
                     WHERE split = 'train' GROUP BY ALL ORDER BY ALL LIMIT 3""").fetchall())


class SliceDataset:
    """A PyTorch-style Dataset with numpy only: (image [C, H, W] float32, mask [H, W] int64 or None)."""
    def __init__(self, table):
        self.x = table["image"].combine_chunks().to_numpy_ndarray()
        self.masks = table["mask"].to_pylist()
        self.shape = self.x.shape[2:]
    def __len__(self):
        return len(self.x)
    def __getitem__(self, i):
        m = self.masks[i]
        return self.x[i].astype(np.float32), None if m is None else np.asarray(m, np.int64).reshape(self.shape)


ds = SliceDataset(t)
image, mask = ds[0]
print("dataset", len(ds), image.shape, None if mask is None else mask.shape)
