//! A first pass over a GGUF file's header that checks every count and length against the
//! file's size before candle reads it: a damaged or hostile file must be a clear error, not an
//! allocation of terabytes.

use std::io::{Read, Seek, SeekFrom};

use candle_core::quantized::gguf_file::Content;

use crate::ModelError;

const MAX_DIMS: u64 = 8;

struct Walker<'a, R> {
    reader: &'a mut R,
    remaining: u64,
}

impl<R: Read> Walker<'_, R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], String> {
        if self.remaining < N as u64 {
            return Err("the header ends early".into());
        }
        let mut buffer = [0u8; N];
        self.reader.read_exact(&mut buffer).map_err(|e| e.to_string())?;
        self.remaining -= N as u64;
        Ok(buffer)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    fn skip(&mut self, count: u64) -> Result<(), String> {
        if count > self.remaining {
            return Err(format!("a length of {count} bytes runs past the end of the file"));
        }
        std::io::copy(&mut self.reader.by_ref().take(count), &mut std::io::sink()).map_err(|e| e.to_string())?;
        self.remaining -= count;
        Ok(())
    }

    fn string(&mut self) -> Result<(), String> {
        let length = self.u64()?;
        self.skip(length)
    }

    /// A metadata key without trailing NULs, as candle reads it (its length was checked
    /// against the file's size first).
    fn key(&mut self) -> Result<Vec<u8>, String> {
        let length = self.u64()?;
        if length > self.remaining {
            return Err(format!("a key of {length} bytes runs past the end of the file"));
        }
        let mut key = vec![0u8; length as usize];
        self.reader.read_exact(&mut key).map_err(|e| e.to_string())?;
        self.remaining -= length;
        while key.last() == Some(&0) {
            key.pop();
        }
        Ok(key)
    }

    /// Whether an integer value of GGUF type `kind` (u8, i8, u16, i16, u32 or i32) is zero.
    fn integer_is_zero(&mut self, kind: u32) -> Result<bool, String> {
        let bytes = match kind {
            0 | 1 => self.bytes::<1>()?.to_vec(),
            2 | 3 => self.bytes::<2>()?.to_vec(),
            _ => self.bytes::<4>()?.to_vec(),
        };
        Ok(bytes.iter().all(|&b| b == 0))
    }

    /// Skips one metadata value of GGUF type `kind`.
    fn value(&mut self, kind: u32, depth: u32) -> Result<(), String> {
        match kind {
            0 | 1 | 7 => self.skip(1),
            2 | 3 => self.skip(2),
            4..=6 => self.skip(4),
            10..=12 => self.skip(8),
            8 => self.string(),
            9 if depth < 4 => {
                let element = self.u32()?;
                let count = self.u64()?;
                let smallest = match element {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    other => return Err(format!("unknown array element type {other}")),
                };
                if count.checked_mul(smallest).is_none_or(|bytes| bytes > self.remaining) {
                    return Err(format!("an array of {count} elements runs past the end of the file"));
                }
                for _ in 0..count {
                    self.value(element, depth + 1)?;
                }
                Ok(())
            }
            other => Err(format!("unknown metadata value type {other}")),
        }
    }
}

/// Reads a GGUF header after checking it, from the start of `reader` (`size` bytes long).
pub fn read_gguf_header<R: Read + Seek>(reader: &mut R, size: u64) -> Result<Content, ModelError> {
    let check = |reader: &mut R| -> Result<(), String> {
        let mut walker = Walker { reader, remaining: size };
        if &walker.bytes::<4>()? != b"GGUF" {
            return Err("no GGUF magic".into());
        }
        let version = walker.u32()?;
        if !(2..=3).contains(&version) {
            return Err(format!("GGUF version {version} is not supported"));
        }
        let tensors = walker.u64()?;
        let entries = walker.u64()?;
        if tensors.saturating_mul(24) > walker.remaining || entries.saturating_mul(12) > walker.remaining {
            return Err(format!("{tensors} tensors and {entries} metadata entries cannot fit in the file"));
        }
        for _ in 0..entries {
            let key = walker.key()?;
            let kind = walker.u32()?;
            // candle divides by the alignment it finds there (found by cargo fuzz).
            if key == b"general.alignment" && kind <= 5 {
                if walker.integer_is_zero(kind)? {
                    return Err("general.alignment is 0".into());
                }
            } else {
                walker.value(kind, 0)?;
            }
        }
        for _ in 0..tensors {
            walker.string()?;
            let dims = walker.u32()? as u64;
            if dims == 0 || dims > MAX_DIMS {
                return Err(format!("a tensor with {dims} dimensions"));
            }
            let mut elements: u64 = 1;
            for _ in 0..dims {
                elements = elements.checked_mul(walker.u64()?).ok_or("tensor dimensions overflow")?;
            }
            let _kind = walker.u32()?;
            let offset = walker.u64()?;
            if offset > size || elements / 32 > size {
                return Err(format!("a tensor of {elements} elements at offset {offset} lies outside the file"));
            }
        }
        Ok(())
    };
    reader.seek(SeekFrom::Start(0)).map_err(|e| ModelError::Weights(e.to_string()))?;
    check(reader).map_err(|e| ModelError::Weights(format!("not a GGUF file: {e}")))?;
    reader.seek(SeekFrom::Start(0)).map_err(|e| ModelError::Weights(e.to_string()))?;
    Content::read(reader).map_err(|e| ModelError::Weights(format!("not a GGUF file: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_counts_are_refused_before_allocating() {
        let mut header = b"GGUF".to_vec();
        header.extend(3u32.to_le_bytes());
        header.extend(0u64.to_le_bytes());
        header.extend(1u64.to_le_bytes());
        header.extend(4u64.to_le_bytes());
        header.extend(b"keys");
        header.extend(9u32.to_le_bytes()); // an array
        header.extend(4u32.to_le_bytes()); // of u32
        header.extend(u64::MAX.to_le_bytes()); // with 2^64 - 1 elements
        let size = header.len() as u64;
        let error = read_gguf_header(&mut std::io::Cursor::new(header), size).err().unwrap();
        assert!(error.to_string().contains("runs past the end"), "{error}");
        let error = read_gguf_header(&mut std::io::Cursor::new(b"GGML....".to_vec()), 8).err().unwrap();
        assert!(error.to_string().contains("no GGUF magic"), "{error}");
    }

    #[test]
    fn a_zero_alignment_is_refused() {
        let mut header = b"GGUF".to_vec();
        header.extend(3u32.to_le_bytes());
        header.extend(0u64.to_le_bytes()); // no tensors
        header.extend(1u64.to_le_bytes()); // one metadata entry
        header.extend(19u64.to_le_bytes());
        header.extend(b"general.alignment\0\0"); // NULs at the end are dropped by candle
        header.extend(4u32.to_le_bytes()); // a u32
        header.extend(0u32.to_le_bytes()); // of value 0
        let size = header.len() as u64;
        let error = read_gguf_header(&mut std::io::Cursor::new(header), size).err().unwrap();
        assert!(error.to_string().contains("general.alignment is 0"), "{error}");
    }
}
