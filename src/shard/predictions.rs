//! `predictions.parquet` of `dmnet-infer` on a shard folder: one row per predicted slice
//! (patient_key, source_path, split, slice_index, height, width, mask as `List<UInt8>`), zstd.
use crate::{Error, Result};
use arrow_array::builder::{ListBuilder, UInt8Builder};
use arrow_array::{ArrayRef, Int32Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use std::path::Path;
use std::sync::Arc;

/// One predicted slice.
#[derive(Debug, Clone)]
pub(crate) struct Prediction {
    /// Patient key of the shard row.
    pub patient_key: String,
    /// Source path of the shard row.
    pub source_path: String,
    /// Split of the shard row.
    pub split: super::Split,
    /// Slice index in the source volume.
    pub slice_index: i32,
    /// Height of `mask`.
    pub height: i32,
    /// Width of `mask`.
    pub width: i32,
    /// Predicted class indices, H×W.
    pub mask: Vec<u8>,
}

/// Writes the predictions as one Parquet file (zstd), via a temporary name.
pub(crate) fn write_predictions(path: &Path, preds: &[Prediction]) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("patient_key", DataType::Utf8, false),
        Field::new("source_path", DataType::Utf8, false),
        Field::new("split", DataType::Utf8, false),
        Field::new("slice_index", DataType::Int32, false),
        Field::new("height", DataType::Int32, false),
        Field::new("width", DataType::Int32, false),
        Field::new(
            "mask",
            DataType::List(Arc::new(Field::new("item", DataType::UInt8, true))),
            false,
        ),
    ]));
    let strs = |f: fn(&Prediction) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(preds.iter().map(f)))
    };
    let ints = |f: fn(&Prediction) -> i32| -> ArrayRef {
        Arc::new(Int32Array::from_iter_values(preds.iter().map(f)))
    };
    let mut masks = ListBuilder::new(UInt8Builder::new());
    for p in preds {
        masks.values().append_slice(&p.mask);
        masks.append(true);
    }
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            strs(|p| &p.patient_key),
            strs(|p| &p.source_path),
            strs(|p| p.split.as_str()),
            ints(|p| p.slice_index),
            ints(|p| p.height),
            ints(|p| p.width),
            Arc::new(masks.finish()),
        ],
    )
    .map_err(|e| Error::invalid(path, format!("building predictions: {e}")))?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .build();
    crate::atomic::write_with(path, |file| {
        let write = || -> parquet::errors::Result<()> {
            let mut w = parquet::arrow::ArrowWriter::try_new(file, schema, Some(props))?;
            w.write(&batch)?;
            w.close().map(|_| ())
        };
        write().map_err(std::io::Error::other)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictions_round_trip_through_parquet() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("predictions.parquet");
        let preds = vec![Prediction {
            patient_key: "k".into(),
            source_path: "a.nii.gz".into(),
            split: crate::shard::Split::Val,
            slice_index: 3,
            height: 1,
            width: 2,
            mask: vec![0, 1],
        }];
        write_predictions(&p, &preds).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
            .unwrap()
            .build()
            .unwrap();
        let rows: usize = r.map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 1);
        assert_eq!(
            std::fs::read_dir(t.path()).unwrap().count(),
            1,
            "no temporary left"
        );
    }
}
