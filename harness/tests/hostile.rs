//! Hostile input, answered in bounded memory and time: each case runs the `replay` binary
//! on a file made here (the large ones are generated at test time, mostly as sparse or
//! compressed files), and checks the exit code, the exact message, the child's peak RSS
//! (under 1 GiB) and its wall time (under 10 s, on a loaded 2-core machine).
//!
//! The small malformed traces are in `workloads/tests/bad_traces/` (the loader's corpus).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MAX_RSS_BYTES: u64 = 1 << 30;
const MAX_WALL: Duration = Duration::from_secs(10);

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
    peak_rss_bytes: u64,
    wall: Duration,
}

/// Run `replay args...`, with its peak RSS from `wait4`.
fn replay(args: &[&str]) -> Outcome {
    let out_dir = tempfile::tempdir().unwrap();
    let stdout_path = out_dir.path().join("stdout");
    let stderr_path = out_dir.path().join("stderr");
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_replay"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: all-zero is a valid `rusage`.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child, with valid out-pointers; `child` is not waited
    // for again (its `Drop` does not wait).
    let rc = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(rc, child.id() as libc::pid_t, "wait4 failed");
    let wall = started.elapsed();
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -libc::WTERMSIG(status)
    };
    Outcome {
        code,
        stdout: std::fs::read_to_string(&stdout_path).unwrap(),
        stderr: std::fs::read_to_string(&stderr_path).unwrap(),
        // ru_maxrss is in KiB on Linux.
        peak_rss_bytes: usage.ru_maxrss as u64 * 1024,
        wall,
    }
}

/// The case answered with `code` and a message containing `message`, within bounds.
fn expect(case: &str, o: &Outcome, code: i32, message: &str) {
    eprintln!(
        "{case}: exit {}, peak RSS {} MiB, {:.2} s",
        o.code,
        o.peak_rss_bytes >> 20,
        o.wall.as_secs_f64()
    );
    assert_eq!(o.code, code, "{case}: stderr: {}", o.stderr);
    assert!(
        o.stderr.contains(message),
        "{case}: expected {message:?} in stderr:\n{}",
        o.stderr
    );
    assert!(
        o.peak_rss_bytes < MAX_RSS_BYTES,
        "{case}: peak RSS {} MiB",
        o.peak_rss_bytes >> 20
    );
    assert!(o.wall < MAX_WALL, "{case}: took {:?}", o.wall);
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A zstd file of `bytes` zeros: no line end anywhere.
fn zstd_zeros(dir: &Path, bytes: u64) -> PathBuf {
    let path = dir.join("zeros.zst");
    let mut enc = zstd::stream::write::Encoder::new(std::fs::File::create(&path).unwrap(), 3)
        .unwrap()
        .auto_finish();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..bytes / chunk.len() as u64 {
        enc.write_all(&chunk).unwrap();
    }
    drop(enc);
    path
}

#[test]
fn a_line_without_end_is_cut_at_one_mib() {
    let dir = tempfile::tempdir().unwrap();
    // 1 GiB of zeros in ~32 KiB of zstd (the reported case was 4 GiB in 132 KB; the
    // reader stops after the first MiB either way).
    let zst = zstd_zeros(dir.path(), 1 << 30);
    let message = format!(
        "{}:1: trace too large: line longer than 1048576 bytes (1 MiB) with no line end: not \
         a text trace, or line ends that are neither LF nor CRLF",
        zst.display()
    );
    for command in [&["stats"][..], &["convert", "-o", "/dev/null"][..], &[][..]] {
        let mut args = command.to_vec();
        args.push(path_str(&zst));
        expect(
            &format!("zstd zeros {command:?}"),
            &replay(&args),
            2,
            &message,
        );
    }
    // A 5 GiB sparse file: the same, read from disk.
    let sparse = dir.path().join("sparse.csv");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(5 << 30)
        .unwrap();
    expect(
        "sparse 5 GiB",
        &replay(&["stats", path_str(&sparse)]),
        2,
        &format!(
            "{}:1: trace too large: line longer than 1048576 bytes",
            sparse.display()
        ),
    );
}

#[test]
fn a_zip_bomb_is_answered_fast() {
    let dir = tempfile::tempdir().unwrap();
    // One 64 KiB block of rows (a header would be needed only once: the first copy
    // starts with it, and the rest repeat rows only).
    let mut rows = Vec::new();
    while rows.len() < 60_000 {
        rows.extend_from_slice(b"0,alloc,0x1000,64\n0,free,0x1000,\n");
    }
    let header = b"thread,op,ptr,size\n";
    let path = dir.path().join("bomb.zip");
    // About 4 GiB of rows in about 2 MB; a limit on events or input bytes stops it early.
    zip_bomb(&path, header, &rows, 70_000);
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size < 4 << 20, "bomb is {size} bytes");
    let o = replay(&["stats", path_str(&path)]);
    expect(
        "zip bomb stats",
        &o,
        2,
        "trace too large: more than 16777216 events (the limit; raise it with --max-events)",
    );
    let o = replay(&["--backends", "system", "--runs", "1", path_str(&path)]);
    expect(
        "zip bomb replay",
        &o,
        2,
        "trace too large: more than 16777216 events",
    );
    let o = replay(&["stats", "--max-input-bytes", "64MiB", path_str(&path)]);
    expect(
        "zip bomb, input limit",
        &o,
        2,
        "trace too large: more than 67108864 bytes of decompressed input (the limit; raise it \
         with --max-input-bytes)",
    );
}

/// A zip archive whose one entry inflates to `header` then `copies` times `rows`: each
/// part is deflated once and ends on a byte boundary (a sync flush, not final), so the
/// compressed `rows` can be repeated as they are; an empty final block closes the stream.
/// This makes a 2 MB bomb without deflating gigabytes here.
fn zip_bomb(path: &Path, header: &[u8], rows: &[u8], copies: u64) {
    let sync_flushed = |bytes: &[u8]| {
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(bytes).unwrap();
        enc.flush().unwrap();
        enc.get_ref().clone()
    };
    let mut stream = sync_flushed(header);
    let one = sync_flushed(rows);
    stream.reserve(one.len() * copies as usize + 2);
    for _ in 0..copies {
        stream.extend_from_slice(&one);
    }
    write_zip(
        path,
        &stream,
        rows.len() as u64 * copies + header.len() as u64,
    );
}

fn write_zip(path: &Path, deflate_without_final: &[u8], inflated: u64) {
    let mut data = deflate_without_final.to_vec();
    data.extend_from_slice(&[0x03, 0x00]);
    let name = b"bomb.csv";
    let usize32 = |v: u64| (v.min(u32::MAX as u64) as u32).to_le_bytes();
    let mut zip = Vec::new();
    zip.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
    zip.extend_from_slice(&20u16.to_le_bytes());
    zip.extend_from_slice(&0u16.to_le_bytes());
    zip.extend_from_slice(&8u16.to_le_bytes());
    zip.extend_from_slice(&[0; 4]);
    zip.extend_from_slice(&0u32.to_le_bytes());
    zip.extend_from_slice(&usize32(data.len() as u64));
    zip.extend_from_slice(&usize32(inflated));
    zip.extend_from_slice(&(name.len() as u16).to_le_bytes());
    zip.extend_from_slice(&0u16.to_le_bytes());
    zip.extend_from_slice(name);
    zip.extend_from_slice(&data);
    let central_at = zip.len() as u32;
    zip.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
    zip.extend_from_slice(&20u16.to_le_bytes());
    zip.extend_from_slice(&20u16.to_le_bytes());
    zip.extend_from_slice(&0u16.to_le_bytes());
    zip.extend_from_slice(&8u16.to_le_bytes());
    zip.extend_from_slice(&[0; 4]);
    zip.extend_from_slice(&0u32.to_le_bytes());
    zip.extend_from_slice(&usize32(data.len() as u64));
    zip.extend_from_slice(&usize32(inflated));
    zip.extend_from_slice(&(name.len() as u16).to_le_bytes());
    zip.extend_from_slice(&[0; 12]);
    zip.extend_from_slice(&0u32.to_le_bytes());
    zip.extend_from_slice(name);
    let central_len = zip.len() as u32 - central_at;
    zip.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    zip.extend_from_slice(&[0; 4]);
    zip.extend_from_slice(&1u16.to_le_bytes());
    zip.extend_from_slice(&1u16.to_le_bytes());
    zip.extend_from_slice(&central_len.to_le_bytes());
    zip.extend_from_slice(&central_at.to_le_bytes());
    zip.extend_from_slice(&0u16.to_le_bytes());
    std::fs::write(path, zip).unwrap();
}
