//! Shared by the fuzz targets: a 512 MiB address-space limit for the process, so that a reader
//! asking for a huge allocation (dicom-parser reserves and zero-fills an element's declared
//! length before reading it) fails at once instead of spending seconds zero-filling gigabytes.
//! Such inputs are then an `Err` (the reader's `try_reserve` fails) or an abort (a crash).
//! The finding itself is in docs/reliability.md.
pub fn limit_memory() {
    let limit = 512u64 << 20;
    let r = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: setrlimit only reads the struct passed by reference.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_AS, &r) };
    assert_eq!(rc, 0, "setrlimit(RLIMIT_AS)");
}
