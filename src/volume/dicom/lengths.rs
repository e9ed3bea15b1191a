//! Declared value lengths, checked before dicom-rs parses a file (PS3.5 §7.1 element headers,
//! §7.5 items and delimiters, §A.4 encapsulated pixel data). dicom-parser 0.10 allocates and
//! zero-fills a declared value length before it reads the value, so a few hundred bytes that
//! declare 4 GB cost 4 GB of memory (fuzzing, docs/reliability.md). This walk reads only the
//! element headers and seeks over the values: a file in which a declared length exceeds the
//! bytes left, or which holds a UN element of undefined length (read by that parser as a 4 GB
//! value), is refused naming the tag. Deflated datasets (1.2.840.10008.1.2.1.99) are not walked.
use crate::{Error, Result};
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

const UNDEFINED: u32 = 0xFFFF_FFFF;
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";

/// How the dataset's element headers are encoded.
#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    ExplicitLe,
    ImplicitLe,
    ExplicitBe,
}

/// VRs whose explicit header has 2 reserved bytes and a 32-bit length (PS3.5 Table 7.1-1).
fn long_header(vr: &[u8; 2]) -> bool {
    matches!(
        vr,
        b"OB"
            | b"OD"
            | b"OF"
            | b"OL"
            | b"OV"
            | b"OW"
            | b"SQ"
            | b"SV"
            | b"UC"
            | b"UN"
            | b"UR"
            | b"UT"
            | b"UV"
    )
}

/// Whether the standard dictionary knows `tag` as a sequence (implicit VR carries no VR).
fn is_sequence(tag: Tag) -> bool {
    StandardDataDictionary
        .by_tag(tag)
        .is_some_and(|e| matches!(e.vr(), VirtualVr::Exact(VR::SQ)))
}

/// One element header: tag, explicit VR (if any) and declared length.
struct Header {
    tag: Tag,
    vr: Option<[u8; 2]>,
    len: u32,
}

struct Walker<'a, R> {
    r: R,
    pos: u64,
    end: u64,
    path: &'a Path,
}

impl<R: Read + Seek> Walker<'_, R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        self.r
            .read_exact(&mut b)
            .map_err(|e| Error::io(self.path, e))?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u16(&mut self, enc: Encoding) -> Result<u16> {
        let b = self.bytes::<2>()?;
        Ok(match enc {
            Encoding::ExplicitBe => u16::from_be_bytes(b),
            _ => u16::from_le_bytes(b),
        })
    }

    fn u32(&mut self, enc: Encoding) -> Result<u32> {
        let b = self.bytes::<4>()?;
        Ok(match enc {
            Encoding::ExplicitBe => u32::from_be_bytes(b),
            _ => u32::from_le_bytes(b),
        })
    }

    fn skip(&mut self, n: u64) -> Result<()> {
        self.r
            .seek(SeekFrom::Current(n as i64))
            .map_err(|e| Error::io(self.path, e))?;
        self.pos += n;
        Ok(())
    }

    fn left(&self) -> u64 {
        self.end.saturating_sub(self.pos)
    }

    /// Reads one element header; items and delimiters (group FFFE) never carry a VR.
    fn header(&mut self, enc: Encoding) -> Result<Header> {
        let tag = Tag(self.u16(enc)?, self.u16(enc)?);
        if tag.0 == 0xFFFE || enc == Encoding::ImplicitLe {
            let len = self.u32(enc)?;
            return Ok(Header { tag, vr: None, len });
        }
        let vr = self.bytes::<2>()?;
        let len = if long_header(&vr) {
            self.skip(2)?;
            self.u32(enc)?
        } else {
            u32::from(self.u16(enc)?)
        };
        Ok(Header {
            tag,
            vr: Some(vr),
            len,
        })
    }

    fn refuse(&self, tag: Tag, what: String) -> Error {
        Error::invalid(
            self.path,
            format!(
                "unreadable DICOM file: element ({:04X},{:04X}) {what} (refused before parsing)",
                tag.0, tag.1
            ),
        )
    }

    /// A defined length must fit in the bytes left.
    fn fits(&self, h: &Header) -> Result<()> {
        if u64::from(h.len) > self.left() {
            return Err(self.refuse(
                h.tag,
                format!(
                    "declares {} bytes but only {} are left in the file",
                    h.len,
                    self.left()
                ),
            ));
        }
        Ok(())
    }
}

/// Refuses `path` if a declared length cannot be right (module docs). A file that is not
/// DICOM Part 10 (no `DICM` magic) or whose headers end early is left to the parser's error.
pub fn check_declared_lengths(path: &Path) -> Result<()> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let end = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut w = Walker {
        r: BufReader::new(f),
        pos: 0,
        end,
        path,
    };
    let Some(ts) = meta(&mut w)? else {
        return Ok(());
    };
    let enc = match ts.as_str() {
        IMPLICIT_LE => Encoding::ImplicitLe,
        EXPLICIT_BE => Encoding::ExplicitBe,
        DEFLATED => return Ok(()),
        _ => Encoding::ExplicitLe,
    };
    match dataset(&mut w, enc) {
        // headers that end early are the parser's error to report
        Err(Error::Io { .. }) => Ok(()),
        r => r,
    }
}

/// Finds the magic and walks the file meta group (always explicit VR little endian);
/// returns the transfer syntax UID, or `None` when the file is not Part 10 or ends early.
fn meta<R: Read + Seek>(w: &mut Walker<'_, R>) -> Result<Option<String>> {
    let start = [128u64, 0].into_iter().find(|&at| {
        w.r.seek(SeekFrom::Start(at)).is_ok() && {
            let mut m = [0u8; 4];
            w.r.read_exact(&mut m).is_ok() && &m == b"DICM"
        }
    });
    let Some(at) = start else { return Ok(None) };
    w.pos = at + 4;
    let mut ts = String::new();
    while w.left() >= 8 {
        let before = w.pos;
        let Ok(h) = w.header(Encoding::ExplicitLe) else {
            return Ok(None);
        };
        if h.tag.0 != 0x0002 {
            w.r.seek(SeekFrom::Start(before))
                .map_err(|e| Error::io(w.path, e))?;
            w.pos = before;
            break;
        }
        w.fits(&h)?;
        if h.tag == Tag(0x0002, 0x0010) && h.len <= 64 {
            let mut v = vec![0u8; h.len as usize];
            w.r.read_exact(&mut v).map_err(|e| Error::io(w.path, e))?;
            w.pos += u64::from(h.len);
            ts = String::from_utf8_lossy(&v)
                .trim_end_matches(['\0', ' '])
                .to_string();
        } else {
            w.skip(u64::from(h.len))?;
        }
    }
    Ok(Some(ts))
}

/// Walks the dataset's headers; values are skipped except the contents of sequences and
/// items, whose nested headers are walked too.
fn dataset<R: Read + Seek>(w: &mut Walker<'_, R>, enc: Encoding) -> Result<()> {
    let mut fragments = false; // inside encapsulated pixel data
    while w.left() >= 8 {
        let h = w.header(enc)?;
        if h.tag.0 == 0xFFFE {
            match h.tag.1 {
                0xE0DD => fragments = false,
                0xE000 if h.len != UNDEFINED => {
                    w.fits(&h)?;
                    if fragments {
                        w.skip(u64::from(h.len))?;
                    }
                }
                0xE000 if fragments => {
                    return Err(w.refuse(h.tag, "is a fragment of undefined length".into()))
                }
                _ => {}
            }
            continue;
        }
        if fragments {
            return Ok(()); // not a fragment: malformed, left to the parser
        }
        if h.len == UNDEFINED {
            match h.vr.as_ref() {
                Some(b"SQ") | None if h.tag != Tag(0x7FE0, 0x0010) => {}
                Some(b"OB") | Some(b"OW") | None => fragments = true,
                Some(b"UN") => {
                    return Err(w.refuse(
                        h.tag,
                        "is UN with an undefined length, which the DICOM parser cannot read".into(),
                    ))
                }
                Some(vr) => {
                    return Err(w.refuse(
                        h.tag,
                        format!(
                            "has an undefined length on VR {}",
                            String::from_utf8_lossy(vr)
                        ),
                    ))
                }
            }
            continue;
        }
        w.fits(&h)?;
        let sequence = match h.vr {
            Some(vr) => &vr == b"SQ",
            None => is_sequence(h.tag),
        };
        if !sequence {
            w.skip(u64::from(h.len))?;
        }
    }
    Ok(())
}
