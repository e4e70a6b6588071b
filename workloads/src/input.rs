//! Opening a trace file: compression is recognised by magic bytes, not by file name, and
//! undone on the fly so a large compressed trace never sits in memory.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use crate::error::TraceError;

/// Read buffer for trace input: large enough that the per-read overhead vanishes.
const INPUT_BUFFER_BYTES: usize = 256 * 1024;

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const ZIP_MAGIC: &[u8] = &[b'P', b'K', 0x03, 0x04];

/// How the bytes of a trace file are wrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
    /// The first file entry of a zip archive.
    Zip,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Zip => "zip",
        }
    }
}

/// The decompressed byte stream of a trace file.
pub struct Input {
    pub reader: Box<dyn BufRead + Send>,
    pub compression: Compression,
}

/// Open `path` and undo any compression (gzip, zstd, zip: first file entry).
pub fn open(path: &Path) -> Result<Input, TraceError> {
    let io_err = |e| TraceError::io(path, e);
    let mut file = File::open(path).map_err(io_err)?;
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < magic.len() {
        match file.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(e)),
        }
    }
    file.seek(SeekFrom::Start(0)).map_err(io_err)?;
    let magic = &magic[..got];
    let decompress_err = |format: &'static str, e: io::Error| TraceError::Decompress {
        path: path.to_path_buf(),
        line: 1,
        format,
        error: e,
    };
    if magic.starts_with(GZIP_MAGIC) {
        let decoder =
            flate2::read::MultiGzDecoder::new(BufReader::with_capacity(INPUT_BUFFER_BYTES, file));
        Ok(Input {
            reader: Box::new(BufReader::with_capacity(INPUT_BUFFER_BYTES, decoder)),
            compression: Compression::Gzip,
        })
    } else if magic.starts_with(ZSTD_MAGIC) {
        let decoder =
            zstd::stream::read::Decoder::new(file).map_err(|e| decompress_err("zstd", e))?;
        Ok(Input {
            reader: Box::new(BufReader::with_capacity(INPUT_BUFFER_BYTES, decoder)),
            compression: Compression::Zstd,
        })
    } else if magic.starts_with(ZIP_MAGIC) {
        open_zip_first_entry(path, file).map_err(|e| decompress_err("zip", e))
    } else {
        Ok(Input {
            reader: Box::new(BufReader::with_capacity(INPUT_BUFFER_BYTES, file)),
            compression: Compression::None,
        })
    }
}

/// Stream the first file entry of a zip archive. The archive's central directory gives the
/// entry's data offset and method; the data is then read through a fresh handle, so the
/// returned reader owns everything it needs.
fn open_zip_first_entry(path: &Path, file: File) -> io::Result<Input> {
    let mut archive = zip::ZipArchive::new(file).map_err(io::Error::other)?;
    let mut found = None;
    for index in 0..archive.len() {
        let entry = archive.by_index_raw(index).map_err(io::Error::other)?;
        if entry.is_dir() {
            continue;
        }
        found = Some((
            entry.data_start(),
            entry.compressed_size(),
            entry.compression(),
        ));
        break;
    }
    let (start, compressed_bytes, method) = found.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "the archive holds no file entry",
        )
    })?;
    let mut data = File::open(path)?;
    data.seek(SeekFrom::Start(start))?;
    let raw = BufReader::with_capacity(INPUT_BUFFER_BYTES, data).take(compressed_bytes);
    let reader: Box<dyn BufRead + Send> = match method {
        zip::CompressionMethod::Stored => Box::new(raw),
        zip::CompressionMethod::Deflated => Box::new(BufReader::with_capacity(
            INPUT_BUFFER_BYTES,
            flate2::read::DeflateDecoder::new(raw),
        )),
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unsupported zip compression method {other} (expected stored or deflate)"),
            ))
        }
    };
    Ok(Input {
        reader,
        compression: Compression::Zip,
    })
}
