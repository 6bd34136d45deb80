//! A walk over a DICOM file's element headers before dicom-rs reads it.
//!
//! dicom-rs allocates (and zero-fills) each element's declared length before reading its bytes,
//! so a 200-byte file declaring a 4 GiB element makes it write 4 GiB. This walk refuses any
//! element or fragment whose declared length runs past the end of the data, and inflates a
//! deflated data set only up to the file-size cap, so what dicom-rs allocates afterwards is
//! bounded by bytes that really exist.

use std::io::Read;

use dicom_core::{
    Tag, VR,
    dictionary::{DataDictionary, DataDictionaryEntry},
};
use dicom_dictionary_std::{StandardDataDictionary, tags, uids};

use super::DecodeError;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Encoding {
    ExplicitLe,
    ExplicitBe,
    ImplicitLe,
}

/// What an undefined-length element opened: a sequence (its items hold elements, encoded as
/// given), or encapsulated pixel data (its items are opaque fragments).
#[derive(Debug, Clone, Copy)]
enum Open {
    Sequence(Encoding),
    Fragments,
}

const UNDEFINED: u32 = u32::MAX;
/// Retired from the standard, still found in archives, and read by dicom-rs.
const EXPLICIT_VR_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";
const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_DELIMITATION: Tag = Tag(0xFFFE, 0xE00D);
const SEQUENCE_DELIMITATION: Tag = Tag(0xFFFE, 0xE0DD);

/// Checks every declared length in a part-10 file (`DICM` at 128, or at 0 without preamble);
/// anything else is left to the parser. `max_bytes` caps an inflated data set.
pub(super) fn check(bytes: &[u8], max_bytes: u64) -> Result<(), DecodeError> {
    let start = if bytes.get(128..132) == Some(b"DICM") {
        132
    } else if bytes.get(0..4) == Some(b"DICM") {
        4
    } else {
        return Ok(());
    };
    let (meta_end, syntax) = meta(bytes, start)?;
    let data = &bytes[meta_end..];
    match syntax.as_deref() {
        Some(uids::IMPLICIT_VR_LITTLE_ENDIAN) => walk(data, Encoding::ImplicitLe),
        Some(EXPLICIT_VR_BIG_ENDIAN) => walk(data, Encoding::ExplicitBe),
        Some(uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN) => {
            walk(&inflate(data, max_bytes)?, Encoding::ExplicitLe)
        }
        _ => walk(data, Encoding::ExplicitLe),
    }
}

/// The file meta group (always explicit VR little endian): where it ends, and the transfer
/// syntax it names.
fn meta(bytes: &[u8], start: usize) -> Result<(usize, Option<String>), DecodeError> {
    let mut pos = start;
    let mut syntax = None;
    while let Some(header) = Header::read(bytes, pos, Encoding::ExplicitLe) {
        if header.tag.group() != 0x0002 {
            break;
        }
        let value = header.value(bytes, pos)?;
        if header.tag == tags::TRANSFER_SYNTAX_UID {
            let text = String::from_utf8_lossy(value);
            syntax = Some(text.trim_end_matches(['\0', ' ']).to_owned());
        }
        pos += header.size + value.len();
    }
    Ok((pos, syntax))
}

fn inflate(data: &[u8], max_bytes: u64) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(data)
        .take(max_bytes + 1)
        .read_to_end(&mut out)
        .map_err(|_| DecodeError::Corrupt)?;
    if out.len() as u64 > max_bytes {
        return Err(DecodeError::FileTooLarge {
            bytes: out.len() as u64,
            max: max_bytes,
        });
    }
    Ok(out)
}

/// One element or item header.
struct Header {
    tag: Tag,
    vr: Option<VR>,
    length: u32,
    /// Bytes of the header itself.
    size: usize,
}

impl Header {
    /// `None` where fewer bytes remain than a header takes (the parser reports truncation).
    fn read(data: &[u8], pos: usize, encoding: Encoding) -> Option<Self> {
        let u16_at = |at: usize| -> Option<u16> {
            let b: [u8; 2] = data.get(at..at + 2)?.try_into().ok()?;
            Some(match encoding {
                Encoding::ExplicitBe => u16::from_be_bytes(b),
                _ => u16::from_le_bytes(b),
            })
        };
        let u32_at = |at: usize| -> Option<u32> {
            let b: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
            Some(match encoding {
                Encoding::ExplicitBe => u32::from_be_bytes(b),
                _ => u32::from_le_bytes(b),
            })
        };
        let tag = Tag(u16_at(pos)?, u16_at(pos + 2)?);
        // Items and delimiters carry no VR in any encoding.
        if tag.group() == 0xFFFE || encoding == Encoding::ImplicitLe {
            let vr = (tag.group() != 0xFFFE)
                .then(|| StandardDataDictionary.by_tag(tag).map(|e| e.vr().relaxed()))
                .flatten();
            return Some(Self {
                tag,
                vr,
                length: u32_at(pos + 4)?,
                size: 8,
            });
        }
        let vr = VR::from_binary(data.get(pos + 4..pos + 6)?.try_into().ok()?);
        let long = matches!(
            vr,
            Some(
                VR::OB
                    | VR::OD
                    | VR::OF
                    | VR::OL
                    | VR::OV
                    | VR::OW
                    | VR::SQ
                    | VR::SV
                    | VR::UC
                    | VR::UN
                    | VR::UR
                    | VR::UT
                    | VR::UV
            )
        );
        Some(if long {
            Self {
                tag,
                vr,
                length: u32_at(pos + 8)?,
                size: 12,
            }
        } else {
            Self {
                tag,
                vr,
                length: u32::from(u16_at(pos + 6)?),
                size: 8,
            }
        })
    }

    /// The value after this header at `pos`, if the data holds all of it.
    fn value<'a>(&self, data: &'a [u8], pos: usize) -> Result<&'a [u8], DecodeError> {
        let from = pos + self.size;
        let available = data.len().saturating_sub(from);
        if self.length as usize > available {
            return Err(DecodeError::DicomBadLength {
                tag: format!("({:04X},{:04X})", self.tag.group(), self.tag.element()),
                declared: u64::from(self.length),
                available: available as u64,
            });
        }
        Ok(&data[from..from + self.length as usize])
    }
}

fn walk(data: &[u8], encoding: Encoding) -> Result<(), DecodeError> {
    let mut open: Vec<Open> = Vec::new();
    let mut pos = 0;
    loop {
        let current = match open.last() {
            Some(Open::Sequence(e)) => *e,
            _ => encoding,
        };
        let Some(header) = Header::read(data, pos, current) else {
            return Ok(());
        };
        let in_fragments = matches!(open.last(), Some(Open::Fragments));
        match (header.tag, header.length) {
            (SEQUENCE_DELIMITATION, _) => {
                open.pop();
                pos += header.size;
            }
            (ITEM_DELIMITATION, _) => pos += header.size,
            // An item of a sequence holds elements: step into it.
            (ITEM, UNDEFINED) if !in_fragments => pos += header.size,
            (ITEM, _) if !in_fragments => {
                header.value(data, pos)?;
                pos += header.size;
            }
            (tags::PIXEL_DATA, UNDEFINED) => {
                open.push(Open::Fragments);
                pos += header.size;
            }
            (_, UNDEFINED) => {
                // Contents of an undefined-length UN are implicit VR little endian.
                let inner = if header.vr == Some(VR::UN) {
                    Encoding::ImplicitLe
                } else {
                    current
                };
                open.push(Open::Sequence(inner));
                pos += header.size;
            }
            _ => {
                let value = header.value(data, pos)?;
                // A defined-length sequence's items follow inline; anything else is skipped.
                pos += header.size
                    + if header.vr == Some(VR::SQ) {
                        0
                    } else {
                        value.len()
                    };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn fixture() -> Vec<u8> {
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/cr_64.dcm"
        ))
        .unwrap()
    }

    /// An explicit VR little endian element header with a 4-byte length.
    fn long_header(group: u16, element: u16, vr: &[u8; 2], length: u32) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend(group.to_le_bytes());
        h.extend(element.to_le_bytes());
        h.extend(vr);
        h.extend([0, 0]);
        h.extend(length.to_le_bytes());
        h
    }

    /// A part-10 file of `data` under `syntax`.
    fn part10(syntax: &str, data: &[u8]) -> Vec<u8> {
        let mut uid = syntax.as_bytes().to_vec();
        if uid.len() % 2 == 1 {
            uid.push(0);
        }
        let mut f = vec![0u8; 128];
        f.extend(b"DICM");
        f.extend([0x02, 0x00, 0x10, 0x00]);
        f.extend(b"UI");
        f.extend((uid.len() as u16).to_le_bytes());
        f.extend(uid);
        f.extend(data);
        f
    }

    fn bad_length(r: Result<(), DecodeError>) -> (String, u64) {
        match r {
            Err(DecodeError::DicomBadLength { tag, declared, .. }) => (tag, declared),
            other => panic!("expected a bad length, got {other:?}"),
        }
    }

    #[test]
    fn real_files_pass() {
        check(&fixture(), 1 << 20).unwrap();
    }

    #[test]
    fn an_element_longer_than_the_file_is_refused() {
        let mut f = fixture();
        f.extend(long_header(0x7FE1, 0x0010, b"OB", 0xC000_0000));
        f.extend([0u8; 16]);
        let (tag, declared) = bad_length(check(&f, 1 << 20));
        assert_eq!((tag.as_str(), declared), ("(7FE1,0010)", 0xC000_0000));
    }

    #[test]
    fn lengths_inside_sequences_and_fragments_are_checked() {
        // A sequence of undefined length holding an item holding an over-long element.
        let mut data = long_header(0x0008, 0x1140, b"SQ", UNDEFINED);
        data.extend([0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        data.extend(long_header(0x0009, 0x1001, b"UN", 1 << 31));
        let (tag, _) = bad_length(check(
            &part10(uids::EXPLICIT_VR_LITTLE_ENDIAN, &data),
            1 << 20,
        ));
        assert_eq!(tag, "(0009,1001)");
        // Encapsulated pixel data with a fragment declaring more than there is.
        let mut data = long_header(0x7FE0, 0x0010, b"OB", UNDEFINED);
        data.extend([0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
        data.extend([0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0x40]);
        let (tag, declared) = bad_length(check(
            &part10(uids::EXPLICIT_VR_LITTLE_ENDIAN, &data),
            1 << 20,
        ));
        assert_eq!((tag.as_str(), declared), ("(FFFE,E000)", 0x4000_0000));
    }

    #[test]
    fn implicit_vr_lengths_are_checked() {
        let mut data = Vec::new();
        data.extend([0x10, 0x00, 0x10, 0x00]);
        data.extend(0xF000_0000u32.to_le_bytes());
        data.extend(b"Doe^John");
        let (tag, _) = bad_length(check(
            &part10(uids::IMPLICIT_VR_LITTLE_ENDIAN, &data),
            1 << 20,
        ));
        assert_eq!(tag, "(0010,0010)");
    }

    #[test]
    fn a_deflated_data_set_is_inflated_only_up_to_the_cap() {
        let deflate = |data: &[u8]| {
            let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
            z.write_all(data).unwrap();
            z.finish().unwrap()
        };
        let syntax = uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN;
        // 64 MiB of zeros behind an element that claims them: fine as data, but over a 1 MiB cap.
        let mut data = long_header(0x7FE1, 0x0010, b"OB", 64 << 20);
        data.resize(data.len() + (64 << 20), 0);
        match check(&part10(syntax, &deflate(&data)), 1 << 20) {
            Err(DecodeError::FileTooLarge { max, .. }) => assert_eq!(max, 1 << 20),
            other => panic!("expected file_too_large, got {other:?}"),
        }
        // Under the cap, a length past the inflated end is refused as anywhere else.
        let mut data = long_header(0x7FE1, 0x0010, b"OB", 0xFFFF_0000);
        data.extend([0u8; 100]);
        bad_length(check(&part10(syntax, &deflate(&data)), 1 << 20));
    }
}
