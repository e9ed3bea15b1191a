//! Volume I/O: NIfTI and DICOM studies read into a common in-memory volume with its RAS affine.
