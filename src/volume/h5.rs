//! A small, defensive HDF5 reader for the files SSL4MIS, UniMatch and BCP distribute (h5py,
//! `libver='earliest'`): superblock version 0 or 1, a root group with a symbol table (v1
//! B-tree + local heap), version-1 object headers (with continuation blocks), datasets whose
//! layout is compact, contiguous or chunked (v1 B-tree index) with the deflate and shuffle
//! filters, of little-endian integers or IEEE floats. That is what `image` / `label` in
//! `patientXXX_frameYY[_slice_Z].h5` use.
//!
//! Pure Rust on purpose: the C HDF5 library can abort the process on a corrupt file, which the
//! per-study panic containment cannot catch. Every offset, count and size read from the file
//! is checked against the file's length and against [`MAX_ELEMENTS`] before anything is
//! allocated or indexed, so a corrupt file is an error naming the file (fuzzed:
//! `fuzz/fuzz_targets/h5.rs`). Specification: "HDF5 File Format Specification Version 3.0",
//! sections II (superblock), III.A–C (B-trees, symbol tables, local heaps) and IV.A (object
//! headers and messages 0x0001, 0x0003, 0x0008, 0x000B, 0x0010, 0x0011).
use crate::{Error, Result};
use std::io::Read;
use std::path::Path;

/// The largest dataset read (elements): 512 Mi values, far above any medical slice or volume.
pub const MAX_ELEMENTS: u64 = 1 << 29;

/// The element type of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H5Type {
    /// Unsigned little-endian integer of this many bytes.
    Unsigned(usize),
    /// Signed little-endian integer of this many bytes.
    Signed(usize),
    /// Little-endian IEEE float of this many bytes (4 or 8).
    Float(usize),
}

impl H5Type {
    fn size(self) -> usize {
        match self {
            H5Type::Unsigned(n) | H5Type::Signed(n) | H5Type::Float(n) => n,
        }
    }
    /// `uint8`, `float32`, … (as NumPy names them).
    pub fn name(self) -> String {
        match self {
            H5Type::Unsigned(n) => format!("uint{}", n * 8),
            H5Type::Signed(n) => format!("int{}", n * 8),
            H5Type::Float(n) => format!("float{}", n * 8),
        }
    }
}

/// A dataset read into memory, converted to f64 (exact for the types above up to 32 bits).
#[derive(Debug, Clone, PartialEq)]
pub struct H5Array {
    /// Dimensions, slowest first (C order, as h5py shows them).
    pub shape: Vec<usize>,
    /// The stored type.
    pub dtype: H5Type,
    /// Values in C order.
    pub data: Vec<f64>,
}

/// An opened file: its bytes, offset and length sizes, and the root group's members.
pub struct H5File<'a> {
    path: &'a Path,
    b: Vec<u8>,
    /// Where address 0 is (the superblock's position: a user block may precede it).
    base: u64,
    so: usize,
    sl: usize,
    members: Vec<(String, u64)>,
    /// B-tree nodes visited so far: bounded, so that a corrupt tree (cycles) cannot make a
    /// walk run forever.
    visits: std::cell::Cell<usize>,
}

/// The most B-tree nodes one file may make the reader visit.
const MAX_VISITS: usize = 100_000;

/// Reads datasets `names` of the root group of `path` (one file read, each dataset checked).
pub fn read_datasets(path: &Path, names: &[&str]) -> Result<Vec<H5Array>> {
    let mut b = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut b))
        .map_err(|e| Error::io(path, e))?;
    let f = H5File::parse(path, b)?;
    names.iter().map(|n| f.dataset(n)).collect()
}

impl<'a> H5File<'a> {
    /// Parses the superblock and the root group of a file's bytes.
    pub fn parse(path: &'a Path, b: Vec<u8>) -> Result<H5File<'a>> {
        let mut f = H5File {
            path,
            b,
            base: 0,
            so: 8,
            sl: 8,
            members: Vec::new(),
            visits: std::cell::Cell::new(0),
        };
        f.superblock()?;
        Ok(f)
    }

    fn err(&self, msg: impl Into<String>) -> Error {
        Error::invalid(
            self.path,
            format!("not a readable HDF5 file: {}", msg.into()),
        )
    }

    /// `n` bytes at address `at`, or an error when the file is shorter.
    fn bytes(&self, at: u64, n: usize) -> Result<&[u8]> {
        let start = at
            .checked_add(self.base)
            .and_then(|a| usize::try_from(a).ok())
            .ok_or_else(|| self.err("offset out of range"))?;
        let end = start
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| {
                self.err(format!(
                    "truncated: {n} bytes at offset {at} past its end ({} bytes)",
                    self.b.len()
                ))
            })?;
        Ok(&self.b[start..end])
    }

    fn uint(&self, at: u64, n: usize) -> Result<u64> {
        let s = self.bytes(at, n)?;
        Ok(s.iter().rev().fold(0u64, |v, &x| (v << 8) | x as u64))
    }

    fn superblock(&mut self) -> Result<()> {
        const SIG: &[u8] = b"\x89HDF\r\n\x1a\n";
        // the superblock may sit at 0, 512, 1024, … (a user block before it)
        let mut base = None;
        let mut at = 0u64;
        while (at as usize) + 8 <= self.b.len() && at <= 1 << 20 {
            if self.bytes(at, 8)? == SIG {
                base = Some(at);
                break;
            }
            at = if at == 0 { 512 } else { at * 2 };
        }
        let base = base.ok_or_else(|| self.err("no HDF5 signature"))?;
        self.base = base;
        let base = 0; // addresses are relative to the superblock from here on
        let version = self.uint(base + 8, 1)?;
        if version > 1 {
            return Err(self.err(format!(
                "superblock version {version}: this reader reads versions 0 and 1 (h5py's libver='earliest', as SSL4MIS writes)"
            )));
        }
        self.so = self.uint(base + 13, 1)? as usize;
        self.sl = self.uint(base + 14, 1)? as usize;
        if ![2, 4, 8].contains(&self.so) || ![2, 4, 8].contains(&self.sl) {
            return Err(self.err(format!("offset/length sizes {}/{}", self.so, self.sl)));
        }
        // version 1 adds the indexed storage K (2 bytes) and 2 reserved bytes
        let mut p = base + 24 + if version == 1 { 4 } else { 0 };
        p += 4 * self.so as u64; // base, free-space, end-of-file and driver addresses
        let (_, header) = self.symbol_entry(p)?;
        self.members = self.group_members(header)?;
        Ok(())
    }

    /// A symbol table entry: (link name offset, object header address).
    fn symbol_entry(&self, at: u64) -> Result<(u64, u64)> {
        let so = self.so;
        Ok((self.uint(at, so)?, self.uint(at + so as u64, so)?))
    }

    /// The messages of the v1 object header at `at`: (type, data offset, data size).
    fn messages(&self, at: u64) -> Result<Vec<(u16, u64, usize)>> {
        if self.uint(at, 1)? != 1 {
            return Err(self.err(format!(
                "object header at {at}: version {} (this reader reads version 1)",
                self.uint(at, 1)?
            )));
        }
        let count = self.uint(at + 2, 2)? as usize;
        let size = self.uint(at + 8, 4)? as usize;
        let mut blocks = vec![(at + 16, size)];
        let mut out = Vec::new();
        let mut seen = 0usize;
        while let Some((start, len)) = blocks.pop() {
            self.bytes(start, len)?;
            let mut p = start;
            while p + 8 <= start + len as u64 && seen < count {
                let t = self.uint(p, 2)? as u16;
                let n = self.uint(p + 2, 2)? as usize;
                let data = p + 8;
                self.bytes(data, n)?;
                if t == 0x10 {
                    let (so, sl) = (self.so, self.sl);
                    let addr = self.uint(data, so)?;
                    let l = self.uint(data + so as u64, sl)? as usize;
                    if blocks.len() > 1024 {
                        return Err(self.err("too many object header continuations"));
                    }
                    blocks.push((addr, l));
                }
                out.push((t, data, n));
                seen += 1;
                p = data + (n as u64).div_ceil(8) * 8;
            }
            if out.len() > 4096 {
                return Err(self.err("too many object header messages"));
            }
        }
        Ok(out)
    }

    /// The members (name, object header address) of the group whose header is at `at`.
    fn group_members(&self, at: u64) -> Result<Vec<(String, u64)>> {
        let msgs = self.messages(at)?;
        let Some(&(_, data, _)) = msgs.iter().find(|m| m.0 == 0x11) else {
            return Err(self.err(
                "the root group has no symbol table (a newer-format file: write it with h5py libver='earliest')",
            ));
        };
        let btree = self.uint(data, self.so)?;
        let heap = self.uint(data + self.so as u64, self.so)?;
        let heap_data = self.heap_data(heap)?;
        let mut out = Vec::new();
        let mut nodes = Vec::new();
        self.group_btree(btree, 0, &mut nodes)?;
        for snod in nodes {
            if self.bytes(snod, 4)? != b"SNOD" {
                return Err(self.err(format!("symbol table node at {snod}: bad signature")));
            }
            let n = self.uint(snod + 6, 2)? as usize;
            let entry = 2 * self.so as u64 + 24;
            for i in 0..n.min(1024) {
                let (name_at, header) = self.symbol_entry(snod + 8 + i as u64 * entry)?;
                out.push((self.heap_name(heap_data, name_at)?, header));
            }
        }
        Ok(out)
    }

    /// The data segment address of the local heap at `at`.
    fn heap_data(&self, at: u64) -> Result<(u64, u64)> {
        if self.bytes(at, 4)? != b"HEAP" {
            return Err(self.err(format!("local heap at {at}: bad signature")));
        }
        let size = self.uint(at + 8, self.sl)?;
        let addr = self.uint(at + 8 + 2 * self.sl as u64, self.so)?;
        Ok((addr, size))
    }

    fn heap_name(&self, (addr, size): (u64, u64), off: u64) -> Result<String> {
        if off >= size {
            return Err(self.err("a member name outside its local heap"));
        }
        let start = addr + off;
        let avail = (size - off).min(4096) as usize;
        let s = self.bytes(start, avail)?;
        let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
        Ok(String::from_utf8_lossy(&s[..end]).into_owned())
    }

    /// Collects the symbol table nodes under the group B-tree node at `at`.
    fn visit(&self) -> Result<()> {
        self.visits.set(self.visits.get() + 1);
        if self.visits.get() > MAX_VISITS {
            return Err(self.err("B-tree too large (a cycle?)"));
        }
        Ok(())
    }

    fn group_btree(&self, at: u64, depth: usize, out: &mut Vec<u64>) -> Result<()> {
        self.visit()?;
        if depth > 32 || out.len() > 4096 {
            return Err(self.err("group B-tree too deep or too large"));
        }
        if self.bytes(at, 4)? != b"TREE" {
            return Err(self.err(format!("B-tree node at {at}: bad signature")));
        }
        let level = self.uint(at + 5, 1)?;
        let used = self.uint(at + 6, 2)? as usize;
        let (so, sl) = (self.so as u64, self.sl as u64);
        let mut p = at + 8 + 2 * so + sl; // siblings, then the first key
        for _ in 0..used {
            let child = self.uint(p, so as usize)?;
            if level == 0 {
                out.push(child);
            } else {
                self.group_btree(child, depth + 1, out)?;
            }
            p += so + sl;
        }
        Ok(())
    }

    /// Reads the root group's dataset `name`.
    pub fn dataset(&self, name: &str) -> Result<H5Array> {
        let &(_, header) = self
            .members
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| {
                let have: Vec<&str> = self.members.iter().map(|(n, _)| n.as_str()).collect();
                Error::invalid(
                    self.path,
                    format!("no dataset `{name}` (the file holds: {})", have.join(", ")),
                )
            })?;
        let msgs = self.messages(header)?;
        let find = |t: u16, what: &str| {
            msgs.iter()
                .find(|m| m.0 == t)
                .map(|&(_, d, n)| (d, n))
                .ok_or_else(|| self.err(format!("dataset `{name}` has no {what} message")))
        };
        let shape = self.dataspace(find(0x01, "dataspace")?.0)?;
        let dtype = self.datatype(find(0x03, "datatype")?.0, name)?;
        let filters = match msgs.iter().find(|m| m.0 == 0x0B) {
            Some(&(_, d, _)) => self.filters(d)?,
            None => Vec::new(),
        };
        let n: u64 = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
            .unwrap_or(u64::MAX);
        if n > MAX_ELEMENTS {
            return Err(self.err(format!(
                "dataset `{name}` declares {n} elements (shape {shape:?}), above the reader's limit of {MAX_ELEMENTS}"
            )));
        }
        let raw = self.layout(
            find(0x08, "layout")?.0,
            &shape,
            dtype.size(),
            &filters,
            name,
        )?;
        Ok(H5Array {
            data: decode(&raw, dtype),
            shape,
            dtype,
        })
    }

    fn dataspace(&self, at: u64) -> Result<Vec<usize>> {
        let version = self.uint(at, 1)?;
        let rank = self.uint(at + 1, 1)? as usize;
        if rank > 8 {
            return Err(self.err(format!("dataspace of rank {rank}")));
        }
        let dims_at = match version {
            1 => at + 8,
            2 => at + 4,
            v => return Err(self.err(format!("dataspace message version {v}"))),
        };
        (0..rank)
            .map(|i| {
                let d = self.uint(dims_at + (i * self.sl) as u64, self.sl)?;
                usize::try_from(d)
                    .ok()
                    .filter(|&d| d as u64 <= MAX_ELEMENTS)
                    .ok_or_else(|| self.err(format!("dimension {d}")))
            })
            .collect()
    }

    fn datatype(&self, at: u64, name: &str) -> Result<H5Type> {
        let cv = self.uint(at, 1)?;
        let (class, bits) = (cv & 0x0f, self.uint(at + 1, 1)?);
        let size = self.uint(at + 4, 4)? as usize;
        let big_endian = bits & 1 == 1;
        let t = match (class, size) {
            (0, 1 | 2 | 4 | 8) if bits & 0x08 != 0 => H5Type::Signed(size),
            (0, 1 | 2 | 4 | 8) => H5Type::Unsigned(size),
            (1, 4 | 8) => H5Type::Float(size),
            _ => {
                return Err(Error::invalid(
                    self.path,
                    format!("dataset `{name}`: datatype class {class} of {size} bytes is not an integer or float"),
                ))
            }
        };
        if big_endian && size > 1 {
            return Err(Error::invalid(
                self.path,
                format!("dataset `{name}`: big-endian {} is not supported", t.name()),
            ));
        }
        Ok(t)
    }

    /// The filter ids of a filter pipeline message (1 = deflate, 2 = shuffle).
    fn filters(&self, at: u64) -> Result<Vec<u16>> {
        let version = self.uint(at, 1)?;
        let n = self.uint(at + 1, 1)? as usize;
        let mut p = at + if version == 1 { 8 } else { 2 };
        let mut out = Vec::new();
        for _ in 0..n.min(32) {
            let id = self.uint(p, 2)? as u16;
            let (name_len, values) = if version == 1 || id >= 256 {
                (self.uint(p + 2, 2)?, self.uint(p + 6, 2)?)
            } else {
                (0, self.uint(p + 4, 2)?)
            };
            p += if version == 1 || id >= 256 { 8 } else { 6 };
            p += if version == 1 {
                name_len.div_ceil(8) * 8
            } else {
                name_len
            };
            p += 4 * values
                + if version == 1 && values % 2 == 1 {
                    4
                } else {
                    0
                };
            if ![1, 2].contains(&id) {
                return Err(self.err(format!(
                    "filter {id} (only deflate/gzip and shuffle are read)"
                )));
            }
            out.push(id);
        }
        Ok(out)
    }

    /// The dataset's bytes in C order (`shape` elements of `esize` bytes).
    fn layout(
        &self,
        at: u64,
        shape: &[usize],
        esize: usize,
        filters: &[u16],
        name: &str,
    ) -> Result<Vec<u8>> {
        let total = shape.iter().product::<usize>() * esize;
        if self.uint(at, 1)? != 3 {
            return Err(self.err(format!(
                "dataset `{name}`: layout message version {} (this reader reads version 3)",
                self.uint(at, 1)?
            )));
        }
        match self.uint(at + 1, 1)? {
            0 => {
                let n = self.uint(at + 2, 2)? as usize;
                exact(self.bytes(at + 4, n)?.to_vec(), total, self, name)
            }
            1 => {
                let addr = self.uint(at + 2, self.so)?;
                exact(self.bytes(addr, total)?.to_vec(), total, self, name)
            }
            2 => self.chunked(at, shape, esize, filters, name),
            c => Err(self.err(format!("dataset `{name}`: layout class {c}"))),
        }
    }

    fn chunked(
        &self,
        at: u64,
        shape: &[usize],
        esize: usize,
        filters: &[u16],
        name: &str,
    ) -> Result<Vec<u8>> {
        let rank = self.uint(at + 2, 1)? as usize;
        if rank != shape.len() + 1 {
            return Err(self.err(format!(
                "dataset `{name}`: chunk rank {rank} for shape {shape:?}"
            )));
        }
        let btree = self.uint(at + 3, self.so)?;
        let dims_at = at + 3 + self.so as u64;
        let chunk: Vec<usize> = (0..shape.len())
            .map(|i| self.uint(dims_at + 4 * i as u64, 4).map(|v| v as usize))
            .collect::<Result<_>>()?;
        if chunk.iter().any(|&c| c == 0 || c as u64 > MAX_ELEMENTS) {
            return Err(self.err(format!("dataset `{name}`: chunk shape {chunk:?}")));
        }
        let cbytes = chunk
            .iter()
            .try_fold(esize, |a, &c| a.checked_mul(c))
            .filter(|&n| n as u64 <= MAX_ELEMENTS * 8)
            .ok_or_else(|| self.err(format!("dataset `{name}`: chunk shape {chunk:?}")))?;
        let mut out = vec![0u8; shape.iter().product::<usize>() * esize];
        let mut leaves = Vec::new();
        self.chunk_btree(btree, shape.len(), 0, &mut leaves)?;
        for (size, mask, offsets, addr) in leaves {
            let stored = self.bytes(addr, size)?;
            let data = unfilter(stored, filters, mask, esize, cbytes)
                .map_err(|e| self.err(format!("dataset `{name}`: chunk at {addr}: {e}")))?;
            place(&mut out, &data, shape, &chunk, &offsets, esize)
                .map_err(|e| self.err(format!("dataset `{name}`: {e}")))?;
        }
        Ok(out)
    }

    /// The leaves (stored size, filter mask, chunk offsets, address) under the chunk B-tree
    /// node at `at`.
    #[allow(clippy::type_complexity)]
    fn chunk_btree(
        &self,
        at: u64,
        rank: usize,
        depth: usize,
        out: &mut Vec<(usize, u32, Vec<usize>, u64)>,
    ) -> Result<()> {
        self.visit()?;
        if depth > 32 || out.len() as u64 > MAX_ELEMENTS {
            return Err(self.err("chunk B-tree too deep or too large"));
        }
        if self.bytes(at, 4)? != b"TREE" || self.uint(at + 4, 1)? != 1 {
            return Err(self.err(format!("chunk B-tree node at {at}: bad signature or type")));
        }
        let level = self.uint(at + 5, 1)?;
        let used = self.uint(at + 6, 2)? as usize;
        let so = self.so as u64;
        let key = 8 + 8 * (rank as u64 + 1);
        let mut p = at + 8 + 2 * so;
        for _ in 0..used {
            let size = self.uint(p, 4)? as usize;
            let mask = self.uint(p + 4, 4)? as u32;
            let offsets = (0..rank)
                .map(|i| self.uint(p + 8 + 8 * i as u64, 8).map(|v| v as usize))
                .collect::<Result<Vec<_>>>()?;
            let child = self.uint(p + key, so as usize)?;
            if level == 0 {
                out.push((size, mask, offsets, child));
            } else {
                self.chunk_btree(child, rank, depth + 1, out)?;
            }
            p += key + so;
        }
        Ok(())
    }
}

fn exact(v: Vec<u8>, want: usize, f: &H5File, name: &str) -> Result<Vec<u8>> {
    if v.len() != want {
        return Err(f.err(format!(
            "dataset `{name}`: {} bytes stored, {want} expected",
            v.len()
        )));
    }
    Ok(v)
}

/// Undoes the filters of one chunk (applied in pipeline order when written, undone in
/// reverse), skipping those the chunk's filter mask marks as not applied.
fn unfilter(
    stored: &[u8],
    filters: &[u16],
    mask: u32,
    esize: usize,
    cbytes: usize,
) -> std::result::Result<Vec<u8>, String> {
    let mut data = stored.to_vec();
    for (i, &id) in filters.iter().enumerate().rev() {
        if mask & (1 << i) != 0 {
            continue;
        }
        data = match id {
            1 => {
                let mut out = Vec::with_capacity(cbytes);
                flate2::read::ZlibDecoder::new(&data[..])
                    .take(cbytes as u64 + 1)
                    .read_to_end(&mut out)
                    .map_err(|e| format!("deflate: {e}"))?;
                out
            }
            2 => unshuffle(&data, esize),
            other => return Err(format!("filter {other}")),
        };
    }
    if data.len() != cbytes {
        return Err(format!(
            "{} bytes after the filters, a chunk holds {cbytes}",
            data.len()
        ));
    }
    Ok(data)
}

/// The inverse of HDF5's byte shuffle (all first bytes, then all second bytes, …).
fn unshuffle(data: &[u8], esize: usize) -> Vec<u8> {
    if esize <= 1 {
        return data.to_vec();
    }
    let n = data.len() / esize;
    let mut out = data.to_vec();
    for b in 0..esize {
        for i in 0..n {
            out[i * esize + b] = data[b * n + i];
        }
    }
    out
}

/// Copies a chunk (of `chunk` shape, at element `offsets`) into the C-order array `out`.
fn place(
    out: &mut [u8],
    data: &[u8],
    shape: &[usize],
    chunk: &[usize],
    offsets: &[usize],
    esize: usize,
) -> std::result::Result<(), String> {
    let r = shape.len();
    if offsets.iter().zip(shape).any(|(&o, &s)| o >= s.max(1)) && shape.iter().all(|&s| s > 0) {
        return Err(format!("chunk offset {offsets:?} outside shape {shape:?}"));
    }
    // iterate over every row (last axis run) of the chunk
    let rows: usize = chunk[..r - 1].iter().product();
    for row in 0..rows {
        let mut idx = vec![0usize; r - 1];
        let mut rem = row;
        for a in (0..r - 1).rev() {
            idx[a] = rem % chunk[a];
            rem /= chunk[a];
        }
        let global: Vec<usize> = idx.iter().zip(offsets).map(|(&i, &o)| i + o).collect();
        if global.iter().zip(shape).any(|(&g, &s)| g >= s) {
            continue; // an edge chunk's padding
        }
        let start = offsets[r - 1];
        if start >= shape[r - 1] {
            continue;
        }
        let len = chunk[r - 1].min(shape[r - 1] - start);
        let mut dst = 0usize;
        for (a, &g) in global.iter().enumerate() {
            dst = dst * shape[a] + g;
        }
        dst = (dst * shape[r - 1] + start) * esize;
        let src = row * chunk[r - 1] * esize;
        out[dst..dst + len * esize].copy_from_slice(&data[src..src + len * esize]);
    }
    Ok(())
}

/// Little-endian values of `dtype` as f64.
fn decode(raw: &[u8], dtype: H5Type) -> Vec<f64> {
    let n = dtype.size();
    raw.chunks_exact(n)
        .map(|c| match dtype {
            H5Type::Unsigned(_) => c.iter().rev().fold(0u64, |v, &x| (v << 8) | x as u64) as f64,
            H5Type::Signed(_) => {
                let u = c.iter().rev().fold(0u64, |v, &x| (v << 8) | x as u64);
                let shift = 64 - 8 * n as u32;
                ((u << shift) as i64 >> shift) as f64
            }
            H5Type::Float(4) => f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
            H5Type::Float(_) => {
                f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
            }
        })
        .collect()
}

/// An SSL4MIS study as two volumes (image, label) on one grid: either one file holding
/// `image` / `label` of shape `D×H×W`, or the 2-D (`H×W`) slice files of one volume in slice
/// order. Volume axes are (H, W, D), so a slice through axis 2 has the h5 image's rows and
/// columns. The files carry no spacing: spacing 1 voxel per axis, an identity affine,
/// [`super::Volume::spacing_known`] false. The label must hold whole numbers; both must
/// agree in shape.
pub fn read_ssl4mis(files: &[std::path::PathBuf]) -> Result<(super::Volume, super::Volume)> {
    let first = files
        .first()
        .ok_or_else(|| Error::invalid("<h5>", "a study without files"))?;
    let mut planes: Vec<(H5Array, H5Array)> = Vec::with_capacity(files.len());
    for f in files {
        let mut v = read_datasets(f, &["image", "label"])?;
        let label = v
            .pop()
            .unwrap_or_else(|| unreachable!("two datasets asked"));
        let image = v
            .pop()
            .unwrap_or_else(|| unreachable!("two datasets asked"));
        if image.shape != label.shape {
            return Err(Error::invalid(
                f,
                format!(
                    "`image` is {:?} but `label` is {:?}: they must have one shape",
                    image.shape, label.shape
                ),
            ));
        }
        if let Some(x) = label.data.iter().find(|x| x.fract() != 0.0 || **x < 0.0) {
            return Err(Error::invalid(
                f,
                format!(
                    "`label` holds {x}, not a class index ({} dataset)",
                    label.dtype.name()
                ),
            ));
        }
        planes.push((image, label));
    }
    let (d, h, w) = match (files.len(), planes[0].0.shape.as_slice()) {
        (1, &[d, h, w]) => (d, h, w),
        (n, &[h, w]) => (n, h, w),
        (_, s) => {
            return Err(Error::invalid(
                first,
                format!("`image` has shape {s:?}: expected H×W slices or one D×H×W volume"),
            ))
        }
    };
    if let Some((f, (img, _))) = files.iter().zip(&planes).find(|(_, (i, _))| {
        i.shape.iter().product::<usize>() != if files.len() == 1 { d * h * w } else { h * w }
    }) {
        return Err(Error::invalid(
            f,
            format!(
                "`image` is {:?}, the study's first slice is {h}×{w}",
                img.shape
            ),
        ));
    }
    if d == 0 || h == 0 || w == 0 {
        return Err(Error::invalid(first, format!("empty volume {d}×{h}×{w}")));
    }
    // C order [d][h][w] → volume voxel (i0 = h, i1 = w, i2 = d)
    let vol = |pick: &dyn Fn(&(H5Array, H5Array)) -> &[f64]| -> Vec<f32> {
        let mut out = vec![0f32; d * h * w];
        for k in 0..d {
            let (src, base) = if files.len() == 1 {
                (pick(&planes[0]), k * h * w)
            } else {
                (pick(&planes[k]), 0)
            };
            for r in 0..h {
                for c in 0..w {
                    out[r + h * (c + w * k)] = src[base + r * w + c] as f32;
                }
            }
        }
        out
    };
    let dims = [h, w, d];
    let affine = [
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let geometry = |data: Vec<f32>| super::Volume {
        data,
        dims,
        affine,
        spacing: [1.0; 3],
        header: super::NiftiGeometry::from_affine(dims, &affine, [1.0; 3]),
        source: first.clone(),
        spacing_known: false,
    };
    Ok((geometry(vol(&|p| &p.0.data)), geometry(vol(&|p| &p.1.data))))
}
