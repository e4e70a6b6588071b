//! Line-at-a-time reading over a decompressed trace, reusing one buffer: a trace of any
//! length costs one line of memory here.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use crate::error::TraceError;
use crate::input::{Compression, Input};

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
    buf: Vec<u8>,
    /// 1-based number of the line in `buf`.
    line: u64,
    /// `next_line` hands out `buf` again instead of reading (after `unread`).
    replay: bool,
}

impl LineReader {
    pub fn new(path: &Path, input: Input) -> Self {
        LineReader {
            reader: input.reader,
            compression: input.compression,
            path: path.to_path_buf(),
            buf: Vec::with_capacity(256),
            line: 0,
            replay: false,
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

    /// The next non-blank line, without its line terminator; `None` at the end.
    pub fn next_line(&mut self) -> Result<Option<Line<'_>>, TraceError> {
        if self.replay {
            self.replay = false;
            return Ok(Some(self.current()));
        }
        loop {
            self.buf.clear();
            let n = self.reader.read_until(b'\n', &mut self.buf).map_err(|e| {
                if self.compression == Compression::None {
                    TraceError::io(&self.path, e)
                } else {
                    TraceError::Decompress {
                        path: self.path.clone(),
                        line: self.line + 1,
                        format: self.compression.as_str(),
                        error: e,
                    }
                }
            })?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            if self.line == 1 && self.buf.starts_with(b"\xef\xbb\xbf") {
                self.buf.drain(..3);
            }
            if !trim_eol(&self.buf).iter().all(u8::is_ascii_whitespace) {
                return Ok(Some(self.current()));
            }
        }
    }
}

impl LineReader {
    fn current(&self) -> Line<'_> {
        Line {
            text: trim_eol(&self.buf),
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
