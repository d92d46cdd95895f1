//! Reading text input (ontologies, corpora): plain or gzip (detected by content), one line at
//! a time, with line numbers and clear errors for binary or truncated data.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Cursor, Read};
use std::path::Path;

use flate2::bufread::MultiGzDecoder;

/// An error while reading an ontology or a corpus. `line` is 1-based where the problem has a line.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ReadError {
    #[error("line {line}: {message}")]
    Syntax { line: usize, message: String },
    /// The content is not valid as a whole (empty, undetectable format, corrupt gzip...).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    PermissionDenied(String),
    /// Reading failed for a reason that is not the content's fault.
    #[error("{0}")]
    Io(String),
}

impl ReadError {
    pub fn syntax(line: usize, message: impl Into<String>) -> Self {
        ReadError::Syntax { line, message: message.into() }
    }
}

pub type Result<T> = std::result::Result<T, ReadError>;

/// A long line shortened for an error message.
pub fn clip(text: &str) -> String {
    const MAX_CHARS: usize = 60;
    match text.char_indices().nth(MAX_CHARS) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Longer lines are not text: an ontology line is at most a few kilobytes.
const MAX_LINE_BYTES: u64 = 16 << 20;

/// Opens a file for reading, decompressing it when its content is gzip.
pub fn open_file(path: &Path) -> Result<Box<dyn BufRead>> {
    let shown = path.display();
    let file = File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ReadError::NotFound(format!("cannot open {shown}: no such file")),
        io::ErrorKind::PermissionDenied => ReadError::PermissionDenied(format!(
            "cannot open {shown}: permission denied (the file must be readable by the OS user the server runs as)"
        )),
        _ => ReadError::Io(format!("cannot open {shown}: {e}")),
    })?;
    if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        return Err(ReadError::Io(format!("cannot read {shown}: it is a directory")));
    }
    let named_gz = path.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("gz"));
    let reader = open_reader(BufReader::with_capacity(1 << 16, file))
        .map_err(|e| ReadError::Io(format!("cannot read {shown}: {e}")))?;
    if named_gz && !reader.is_gzip {
        return Err(ReadError::Invalid(format!("{shown} is named .gz but is not gzip data")));
    }
    Ok(reader.lines)
}

/// Wraps in-memory content, decompressing it when it is gzip.
pub(crate) fn open_bytes(content: Vec<u8>) -> Result<Box<dyn BufRead>> {
    open_reader(BufReader::new(Cursor::new(content))).map(|r| r.lines).map_err(|e| ReadError::Io(e.to_string()))
}

struct Opened {
    lines: Box<dyn BufRead>,
    is_gzip: bool,
}

fn open_reader<R: BufRead + 'static>(mut reader: R) -> io::Result<Opened> {
    let head = reader.fill_buf()?;
    let is_gzip = head.starts_with(&GZIP_MAGIC);
    let lines: Box<dyn BufRead> = if is_gzip {
        Box::new(BufReader::with_capacity(1 << 16, MultiGzDecoder::new(reader)))
    } else {
        Box::new(reader)
    };
    Ok(Opened { lines, is_gzip })
}

/// Lines of text with 1-based numbers; rejects content that is not UTF-8 text.
pub struct Lines {
    reader: Box<dyn BufRead>,
    peeked: VecDeque<String>,
    /// Lines taken out of `reader` so far (returned or peeked).
    lines_read: usize,
    /// Number of the last line returned by `next_line`.
    line_number: usize,
    buffer: Vec<u8>,
}

impl Lines {
    pub fn new(reader: Box<dyn BufRead>) -> Lines {
        Lines { reader, peeked: VecDeque::new(), lines_read: 0, line_number: 0, buffer: Vec::new() }
    }

    /// The number of the line most recently returned by [`Lines::next_line`].
    pub fn line_number(&self) -> usize {
        self.line_number
    }

    /// The next line without its line terminator, or `None` at the end of the input.
    pub fn next_line(&mut self) -> Result<Option<String>> {
        let line = match self.peeked.pop_front() {
            Some(line) => Some(line),
            None => self.read_line()?,
        };
        if line.is_some() {
            self.line_number += 1;
        }
        Ok(line)
    }

    /// Up to `count` lines from the current position, without consuming them.
    pub fn peek_lines(&mut self, count: usize) -> Result<&[String]> {
        while self.peeked.len() < count {
            match self.read_line()? {
                Some(line) => self.peeked.push_back(line),
                None => break,
            }
        }
        Ok(self.peeked.make_contiguous())
    }

    fn read_line(&mut self) -> Result<Option<String>> {
        let number = self.lines_read + 1;
        self.buffer.clear();
        let read = (&mut self.reader)
            .take(MAX_LINE_BYTES + 1)
            .read_until(b'\n', &mut self.buffer)
            .map_err(|e| read_error(number, e))?;
        if read == 0 {
            return Ok(None);
        }
        if self.buffer.len() as u64 > MAX_LINE_BYTES {
            return Err(ReadError::syntax(
                number,
                format!("line is longer than {} MiB: this is not a text ontology file", MAX_LINE_BYTES >> 20),
            ));
        }
        self.lines_read = number;
        while matches!(self.buffer.last(), Some(b'\n' | b'\r')) {
            self.buffer.pop();
        }
        if self.buffer.contains(&0) {
            return Err(ReadError::syntax(
                number,
                "contains a NUL byte: this is binary data, not a text ontology file",
            ));
        }
        let text = std::str::from_utf8(&self.buffer).map_err(|e| {
            ReadError::syntax(
                number,
                format!("is not valid UTF-8 (byte {}): convert the file to UTF-8", e.valid_up_to() + 1),
            )
        })?;
        // A byte-order mark at the start of a file is not content.
        let text = if number == 1 { text.trim_start_matches('\u{FEFF}') } else { text };
        Ok(Some(text.to_string()))
    }
}

fn read_error(line: usize, error: io::Error) -> ReadError {
    match error.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData => {
            ReadError::Invalid(format!("line {line}: gzip data is corrupt or truncated ({error})"))
        }
        _ => ReadError::Io(format!("line {line}: read error: {error}")),
    }
}
