//! Reading shard schema v1 (`schemas/shard-v1.md`: `part-*.parquet` beside `manifest.json`,
//! `image`/`mask` as variable-length lists), kept only for `dmnet-prep upgrade`, which rewrites a
//! v1 folder as v3. Every row is checked as the v2 reader checks it.
use super::schema::{check_record, Columns, SliceRecord};
use crate::{Error, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int32Type, UInt8Type};
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::Path;

/// The v1 version string.
pub const V1: &str = "1";

/// The v1-only column forms: variable-length lists where v2 has fixed-size ones.
impl<'a> Columns<'a> {
    /// A list column of primitives as one `Vec` per row (`None` for a null row).
    fn prim_lists<T: arrow_array::ArrowPrimitiveType>(
        &self,
        name: &str,
    ) -> Result<Vec<Option<Vec<T::Native>>>> {
        let l = self
            .col(name)?
            .as_list_opt::<i32>()
            .ok_or_else(|| self.wrong(name))?;
        let values = l
            .values()
            .as_primitive_opt::<T>()
            .ok_or_else(|| self.wrong(name))?;
        let offsets = l.value_offsets();
        Ok((0..l.len())
            .map(|i| {
                let (a, b) = (offsets[i] as usize, offsets[i + 1] as usize);
                l.is_valid(i).then(|| values.values()[a..b].to_vec())
            })
            .collect())
    }
    fn v1_fixed<T: arrow_array::ArrowPrimitiveType, const N: usize>(
        &self,
        name: &str,
    ) -> Result<Vec<[T::Native; N]>> {
        self.prim_lists::<T>(name)?
            .into_iter()
            .map(|v| {
                v.and_then(|v| <[T::Native; N]>::try_from(v).ok())
                    .ok_or_else(|| {
                        Error::invalid(
                            self.origin,
                            format!("shard column `{name}` must hold {N} values per row"),
                        )
                    })
            })
            .collect()
    }
}

/// Converts a record batch read from `origin` back to slices.
fn batch_to_records(batch: &RecordBatch, origin: &Path) -> Result<Vec<SliceRecord>> {
    let c = Columns {
        batch,
        origin,
        version: V1,
    };
    let mut rows = super::schema::scalar_records(&c)?;
    let (image, mask) = (
        c.prim_lists::<Float32Type>("image")?,
        c.prim_lists::<UInt8Type>("mask")?,
    );
    let (spacing, pixel) = (
        c.v1_fixed::<Float64Type, 3>("spacing")?,
        c.v1_fixed::<Float64Type, 2>("pixel_spacing")?,
    );
    let (affine, shape) = (
        c.v1_fixed::<Float64Type, 16>("affine")?,
        c.v1_fixed::<Int32Type, 3>("volume_shape")?,
    );
    for (i, (r, img)) in rows.iter_mut().zip(image).enumerate() {
        r.image = img.unwrap_or_default();
        r.mask = mask[i].clone();
        r.spacing = spacing[i];
        r.pixel_spacing = pixel[i];
        r.affine = affine[i];
        r.volume_shape = shape[i];
        r.spacing_known = true; // v1 required a physical spacing
        check_record(r, origin)?;
    }
    Ok(rows)
}

/// A v1 part file's rows, one `Vec` per row group, after checking its version.
pub fn read_part(file: &Path) -> Result<Vec<Vec<SliceRecord>>> {
    let f = std::fs::File::open(file).map_err(|e| Error::io(file, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|e| Error::invalid(file, format!("not a readable Parquet file: {e}")))?;
    let version = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| {
            kv.iter()
                .find(|kv| kv.key == super::schema::META_SCHEMA_VERSION)
                .and_then(|kv| kv.value.clone())
        });
    if version.as_deref() != Some(V1) {
        return Err(Error::invalid(
            file,
            format!(
                "shard schema version {}, `dmnet-prep upgrade` reads version {V1} here",
                version.as_deref().unwrap_or("(none)")
            ),
        ));
    }
    let sizes: Vec<usize> = builder
        .metadata()
        .row_groups()
        .iter()
        .map(|g| g.num_rows().max(0) as usize)
        .collect();
    let reader = builder
        .with_batch_size(sizes.iter().copied().max().unwrap_or(1).max(1))
        .build()
        .map_err(|e| Error::invalid(file, format!("reading Parquet: {e}")))?;
    let mut groups = Vec::with_capacity(sizes.len());
    for batch in reader {
        let batch = batch.map_err(|e| Error::invalid(file, format!("reading Parquet: {e}")))?;
        groups.push(batch_to_records(&batch, file)?);
    }
    Ok(groups)
}
