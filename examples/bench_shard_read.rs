//! How fast training reads shards: for each folder, the time to open (validate + index) it and
//! to decode every row group into `SliceRecord`s on one thread, as the training stream does
//! (`dmnet::shard::PartCache`). A schema-v1 folder is read with the v1 decoder (the code the v1
//! reader ran). Prints one JSON line per folder; run through `scripts/bench_prep.py read`.
//!
//!   cargo run --release --no-default-features --example bench_shard_read -- DIR [DIR …]
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for d in [dir.to_path_buf(), dir.join("data")] {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("part-") && n.ends_with(".parquet") {
                total += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}

fn read_v2(dir: &Path) -> anyhow::Result<(f64, f64, usize)> {
    let t = Instant::now();
    let index = dmnet::shard::ShardIndex::open(dir)?;
    let open = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut cache = dmnet::shard::PartCache::new(index.files());
    let mut rows = 0;
    for (fi, p) in index.parts.iter().enumerate() {
        for rg in 0..p.num_row_groups() {
            rows += cache.read(fi, rg)?.len();
        }
    }
    Ok((open, t.elapsed().as_secs_f64(), rows))
}

fn read_v1(dir: &Path) -> anyhow::Result<(f64, f64, usize)> {
    let t = Instant::now();
    let files: Arc<Vec<PathBuf>> = Arc::new(dmnet::shard::shard_files(dir)?);
    let open = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut rows = 0;
    for f in files.iter() {
        rows += dmnet::shard::v1::read_part(f)?
            .iter()
            .map(Vec::len)
            .sum::<usize>();
    }
    Ok((open, t.elapsed().as_secs_f64(), rows))
}

fn main() -> anyhow::Result<()> {
    for d in std::env::args().skip(1).map(PathBuf::from) {
        let v1 = dmnet::shard::folder::kind(&d) == dmnet::shard::folder::FolderKind::V1;
        let (open, read, rows) = if v1 { read_v1(&d)? } else { read_v2(&d)? };
        let mb = dir_bytes(&d) as f64 / 1e6;
        println!(
            "{}",
            serde_json::json!({
                "folder": d, "schema": if v1 { 1 } else { 2 }, "rows": rows, "mb": (mb * 10.0).round() / 10.0,
                "open_s": (open * 1000.0).round() / 1000.0, "read_s": (read * 1000.0).round() / 1000.0,
                "slices_per_s": (rows as f64 / read).round(),
            })
        );
    }
    Ok(())
}
