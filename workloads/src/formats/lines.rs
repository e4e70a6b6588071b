//! Line-at-a-time reading over a decompressed trace, through one buffer that the reader
//! owns: a trace of any length costs one buffer of memory here, and a line is handed out
//! as a slice of that buffer, never copied.
//!
//! Readers that parse rows in place (canonical CSV's fast path) look at `pending` and
//! take whole lines with `consume_line`; everything else goes through `next_line`.

use std::io::{self, BufRead};
use std::path::{Path, PathBuf};

use crate::error::TraceError;
use crate::input::{Compression, Input};

/// Read size. At least the input's own buffer (256 KiB), so that a read of a plain file
/// bypasses that buffer and lands here directly.
const BUFFER_BYTES: usize = 1 << 20;

/// Longest line accepted, terminator included. No trace format has rows near this long;
/// a longer "line" is binary data or a file without newlines, and holding it would cost
/// memory without bound (a 4 GiB line of zeros once did).
pub const MAX_LINE_BYTES: usize = 1 << 20;
const _: () = assert!(BUFFER_BYTES >= MAX_LINE_BYTES);

const BOM: &[u8] = b"\xef\xbb\xbf";

/// One line of input with where it came from.
pub struct Line<'a> {
    /// The line without its terminator.
    pub text: &'a [u8],
    /// 1-based line number.
    pub number: u64,
    pub path: &'a Path,
}

pub struct LineReader {
    reader: Box<dyn BufRead + Send>,
    compression: Compression,
    path: PathBuf,
    /// Input read so far. Invariant: `start <= end <= buf.len()`; `buf[start..end]` is
    /// read but not yet consumed, and begins at the start of a line.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The input is exhausted: `buf[start..end]` is all that is left.
    eof: bool,
    /// `buf[last.0..last.1]` is the text of the line last returned by `next_line`; valid
    /// until the next `next_line` (which may move the buffer's contents).
    last: (usize, usize),
    /// 1-based number of the line last returned or consumed.
    line: u64,
    /// `next_line` hands out the last line again instead of reading (after `unread`).
    replay: bool,
    /// Decompressed bytes read so far, and the most that may be read.
    read_bytes: u64,
    max_input_bytes: u64,
}

impl LineReader {
    /// A reader that stops with an error past `max_input_bytes` of decompressed input.
    pub fn new(path: &Path, input: Input, max_input_bytes: u64) -> Self {
        LineReader {
            reader: input.reader,
            compression: input.compression,
            path: path.to_path_buf(),
            buf: vec![0; BUFFER_BYTES],
            start: 0,
            end: 0,
            eof: false,
            last: (0, 0),
            line: 0,
            replay: false,
            read_bytes: 0,
            max_input_bytes,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of the line last returned.
    pub fn line(&self) -> u64 {
        self.line
    }

    /// Make the next `next_line` return the current line again.
    pub fn unread(&mut self) {
        self.replay = true;
    }

    /// Input read ahead and not yet consumed; it starts at the beginning of the next line
    /// (line `line() + 1`, unless that one is blank) and may end in the middle of a line.
    #[inline]
    pub fn pending(&self) -> &[u8] {
        debug_assert!(!self.replay, "pending() after unread()");
        &self.buf[self.start..self.end]
    }

    /// Consume the first `len` bytes of `pending()`: exactly one line with its terminator.
    #[inline]
    pub fn consume_line(&mut self, len: usize) {
        debug_assert!(self.start + len <= self.end);
        self.start += len;
        self.line += 1;
    }

    /// The next non-blank line, without its line terminator; `None` at the end.
    pub fn next_line(&mut self) -> Result<Option<Line<'_>>, TraceError> {
        if self.replay {
            self.replay = false;
            return Ok(Some(self.current()));
        }
        loop {
            let (mut line_start, line_end) = match find_newline(&self.buf[self.start..self.end]) {
                Some(i) => (self.start, self.start + i + 1),
                None if self.eof => {
                    if self.start == self.end {
                        return Ok(None);
                    }
                    (self.start, self.end)
                }
                None => {
                    self.refill()?;
                    continue;
                }
            };
            self.start = line_end;
            self.line += 1;
            if self.line == 1 && self.buf[line_start..line_end].starts_with(BOM) {
                line_start += BOM.len();
            }
            let text = trim_eol(&self.buf[line_start..line_end]);
            if !text.iter().all(u8::is_ascii_whitespace) {
                self.last = (line_start, line_start + text.len());
                return Ok(Some(self.current()));
            }
        }
    }

    /// Move the unconsumed bytes to the front of the buffer and read more after them.
    /// A line that fills the whole buffer is longer than `MAX_LINE_BYTES`: an error.
    fn refill(&mut self) -> Result<(), TraceError> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end >= MAX_LINE_BYTES {
            return Err(self.too_large(format!(
                "line longer than {MAX_LINE_BYTES} bytes (1 MiB) with no line end: not a \
                 text trace, or line ends that are neither LF nor CRLF"
            )));
        }
        loop {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    self.read_bytes += n as u64;
                    if self.read_bytes > self.max_input_bytes {
                        return Err(self.too_large(format!(
                            "more than {} bytes of {} input (the limit; raise it with \
                             --max-input-bytes)",
                            self.max_input_bytes,
                            if self.compression == Compression::None {
                                "plain"
                            } else {
                                "decompressed"
                            }
                        )));
                    }
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.read_error(e)),
            }
        }
    }

    /// An error about the line being read (the one after the last handed out).
    fn too_large(&self, what: String) -> TraceError {
        TraceError::TooLarge {
            path: self.path.clone(),
            line: self.line + 1,
            what,
        }
    }

    fn read_error(&self, e: io::Error) -> TraceError {
        if self.compression == Compression::None {
            TraceError::io(&self.path, e)
        } else {
            // Every complete line before has been handed out: the stream broke in this one.
            TraceError::Decompress {
                path: self.path.clone(),
                line: self.line + 1,
                format: self.compression.as_str(),
                error: e,
            }
        }
    }

    fn current(&self) -> Line<'_> {
        Line {
            text: &self.buf[self.last.0..self.last.1],
            number: self.line,
            path: &self.path,
        }
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    while end > 0 && (line[end - 1] == b'\n' || line[end - 1] == b'\r') {
        end -= 1;
    }
    &line[..end]
}

/// Position of the first `\n`, eight bytes at a time.
#[inline]
fn find_newline(s: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const NEWLINES: u64 = ONES * b'\n' as u64;
    let mut words = s.chunks_exact(8);
    let mut at = 0;
    for word in words.by_ref() {
        let x = u64::from_le_bytes(word.try_into().unwrap()) ^ NEWLINES;
        // The lowest set bit marks the first zero byte of `x` (higher ones may be false).
        let zero_bytes = x.wrapping_sub(ONES) & !x & HIGHS;
        if zero_bytes != 0 {
            return Some(at + (zero_bytes.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| at + i)
}

#[cfg(test)]
mod tests {
    use super::find_newline;

    #[test]
    fn finds_the_first_newline_at_every_position() {
        for len in 0..40 {
            for at in 0..=len {
                let mut s = vec![b'x'; len];
                if at < len {
                    s[at] = b'\n';
                    // A byte that trips a naive zero-byte test right after the match.
                    if at + 1 < len {
                        s[at + 1] = b'\n' + 1;
                    }
                }
                let want = (at < len).then_some(at);
                assert_eq!(find_newline(&s), want, "len {len} at {at}");
            }
        }
        assert_eq!(find_newline(b"\x8a\x0b\n"), Some(2));
    }
}
