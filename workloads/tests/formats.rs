//! Reading every supported format, compressed or not, and the global order.

use std::io::Write;
use std::path::{Path, PathBuf};

use workloads::{
    read_events, read_ordered_events, write_csv, Event, OpKind, TraceFormat, CSV_HEADER,
};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn events(path: &Path) -> Vec<Event> {
    read_events(path).unwrap().map(Result::unwrap).collect()
}

fn ordered(path: &Path) -> Vec<Event> {
    read_ordered_events(path)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn ev(thread: u64, op: OpKind, ptr: u64, size: u64) -> Event {
    Event {
        thread,
        time_ns: None,
        op,
        ptr,
        size,
        align: 0,
        old_ptr: 0,
        stream: None,
        device: None,
        line: 0,
    }
}

#[test]
fn canonical_csv_columns_in_any_order_hex_or_decimal() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "t.csv",
        b"ptr, op ,thread,extra,size,align,old_ptr,stream,device\r\n\
          0x55bd942f6910,alloc,0,ignored,5,16,,0x2,1\r\n\
          \r\n\
          4096,realloc,3,x,40,,0x55bd942f6910,,\r\n\
          4096,free,1,y,,,,,\r\n\
          0x0,free,1,y,,,,,\r\n",
    );
    let r = read_events(&p).unwrap();
    assert_eq!(r.format(), TraceFormat::Csv);
    let got: Vec<Event> = r.map(Result::unwrap).collect();
    assert_eq!(got.len(), 3, "free(NULL) is not an event");
    assert_eq!(
        got[0],
        Event {
            thread: 0,
            time_ns: None,
            op: OpKind::Alloc,
            ptr: 0x55bd942f6910,
            size: 5,
            align: 16,
            old_ptr: 0,
            stream: Some(2),
            device: Some(1),
            line: 2,
        }
    );
    assert_eq!(
        (got[1].op, got[1].ptr, got[1].old_ptr, got[1].size),
        (OpKind::Realloc, 4096, 0x55bd942f6910, 40)
    );
    assert_eq!((got[1].thread, got[1].line), (3, 4));
    assert_eq!((got[2].op, got[2].size, got[2].line), (OpKind::Free, 0, 5));
}

#[test]
fn design_md_example_reads() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "example.csv",
        b"thread,time_ns,op,ptr,size,align\n0,75632,alloc,0x55bd942f6910,5,16\n1,80861,free,0x55bd942f6910,,\n",
    );
    let got = ordered(&p);
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[1].thread, got[1].time_ns, got[1].op),
        (1, Some(80861), OpKind::Free)
    );
}

#[test]
fn rows_are_ordered_by_time_stably() {
    let dir = tempfile::tempdir().unwrap();
    // Thread 1's buffer was flushed before thread 0's; equal times keep file order.
    let p = write(
        dir.path(),
        "t.csv",
        b"thread,time_ns,op,ptr,size\n\
          1,20,alloc,0xb0,8\n1,30,free,0xb0,\n1,30,alloc,0xb1,8\n\
          0,10,alloc,0xa0,8\n0,30,free,0xa0,\n0,40,free,0xb1,\n",
    );
    let got: Vec<(u64, u64)> = ordered(&p).iter().map(|e| (e.thread, e.ptr)).collect();
    assert_eq!(
        got,
        vec![
            (0, 0xa0),
            (1, 0xb0),
            (1, 0xb0),
            (1, 0xb1),
            (0, 0xa0),
            (0, 0xb1)
        ]
    );
    // Without time_ns, file order is the order.
    let p = write(
        dir.path(),
        "u.csv",
        b"thread,op,ptr,size\n1,alloc,0xb0,8\n0,alloc,0xa0,8\n",
    );
    let got: Vec<u64> = ordered(&p).iter().map(|e| e.ptr).collect();
    assert_eq!(got, vec![0xb0, 0xa0]);
}

const RMM_LOG: &str = "Thread,Time,Action,Pointer,Size,Stream\n\
140043,23:59:59.999000,allocate,0x7f5c7e000000,1024,0x0\n\
140043,23:59:59.999500,allocate failure,(nil),1099511627776,0x2\n\
140044,23:59:59.998900,allocate,0x7f5c7e100000,2048,0x2\n\
140044,00:00:00.000100,free,0x7f5c7e000000,1024,0x0\n\
140043,00:00:00.000200,deallocate,0x7f5c7e100000,2048,0x2\n\
140043,00:00:00.000300,free,(nil),0,0x0\n";

#[test]
fn rmm_log_times_wrap_at_midnight_and_failures_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "rmm.csv", RMM_LOG.as_bytes());
    let mut r = read_events(&p).unwrap();
    assert_eq!(r.format(), TraceFormat::Rmm);
    let got: Vec<Event> = r.by_ref().map(Result::unwrap).collect();
    assert_eq!(r.alloc_failures(), 1);
    assert_eq!(got.len(), 4, "failure and free((nil)) are not events");
    let day = 86_400_000_000_000u64;
    let times: Vec<u64> = got.iter().map(|e| e.time_ns.unwrap()).collect();
    // 23:59:59.998900 is jitter behind the previous line: clamped, file order wins.
    assert_eq!(
        times,
        vec![
            day - 1_000_000,
            day - 1_000_000,
            day + 100_000,
            day + 200_000
        ]
    );
    assert_eq!(got[1].stream, Some(2));
    assert_eq!(
        (got[2].op, got[2].ptr, got[2].size),
        (OpKind::Free, 0x7f5c7e000000, 0)
    );
    assert_eq!(got[3].op, OpKind::Free);
    assert_eq!(got[0].thread, 140043);
}

#[test]
fn rmm_two_midnights() {
    let dir = tempfile::tempdir().unwrap();
    let log = "Thread,Time,Action,Pointer,Size,Stream\n\
        1,23:00:00.0,allocate,0x10,8,0x0\n1,01:00:00.0,free,0x10,8,0x0\n\
        1,23:00:00.0,allocate,0x10,8,0x0\n1,01:00:00.0,free,0x10,8,0x0\n";
    let p = write(dir.path(), "rmm.log", log.as_bytes());
    let h = 3_600_000_000_000u64;
    let times: Vec<u64> = events(&p).iter().map(|e| e.time_ns.unwrap()).collect();
    assert_eq!(times, vec![23 * h, 25 * h, 47 * h, 49 * h]);
}

const ANDROID: &str = "1234: malloc 0xb6038060 20\n\
1234: calloc 0xb6038070 4 16\n\
1235: memalign 0xb6039000 64 128 1000 1100\n\
1235: realloc 0xb603a000 0xb6038060 40\n\
1235: realloc b603b000 0x0 10\n\
1234: free 0x0\n\
1234: malloc 0x0 99\n\
1234: free 0xb603a000\n\
1234: thread_done 0x0\n";

#[test]
fn android_memory_replay() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "dump.txt", ANDROID.as_bytes());
    let mut r = read_events(&p).unwrap();
    assert_eq!(r.format(), TraceFormat::Android);
    let got: Vec<Event> = r.by_ref().map(Result::unwrap).collect();
    assert_eq!(r.alloc_failures(), 1, "malloc returning NULL");
    let summary: Vec<(u64, OpKind, u64, u64, u64, u64)> = got
        .iter()
        .map(|e| (e.thread, e.op, e.ptr, e.size, e.align, e.old_ptr))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1234, OpKind::Alloc, 0xb6038060, 20, 0, 0),
            (1234, OpKind::Alloc, 0xb6038070, 64, 0, 0),
            (1235, OpKind::Alloc, 0xb6039000, 128, 64, 0),
            (1235, OpKind::Realloc, 0xb603a000, 40, 0, 0xb6038060),
            (1235, OpKind::Realloc, 0xb603b000, 10, 0, 0),
            (1234, OpKind::Free, 0xb603a000, 0, 0, 0),
        ]
    );
    assert_eq!(got[5].line, 8);
}

#[test]
fn compressed_inputs_read_by_magic_bytes_not_name() {
    let dir = tempfile::tempdir().unwrap();
    let plain = ANDROID.as_bytes();
    let expected = events(&write(dir.path(), "plain.txt", plain));

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(plain).unwrap();
    let p = write(dir.path(), "no-extension", &gz.finish().unwrap());
    assert_eq!(events(&p), expected);

    let zst = zstd::encode_all(plain, 3).unwrap();
    let p = write(dir.path(), "trace.zst", &zst);
    assert_eq!(events(&p), expected);

    for method in [
        zip::CompressionMethod::Deflated,
        zip::CompressionMethod::Stored,
    ] {
        let mut buf = std::io::Cursor::new(Vec::new());
        {
            let mut z = zip::ZipWriter::new(&mut buf);
            let opts = zip::write::SimpleFileOptions::default().compression_method(method);
            z.add_directory("dir/", opts).unwrap();
            z.start_file("dir/dump.txt", opts).unwrap();
            z.write_all(plain).unwrap();
            z.start_file("second.txt", opts).unwrap();
            z.write_all(b"ignored").unwrap();
            z.finish().unwrap();
        }
        let p = write(dir.path(), "trace.zip", buf.get_ref());
        assert_eq!(events(&p), expected, "{method:?}");
    }

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(RMM_LOG.as_bytes()).unwrap();
    let p = write(dir.path(), "rmm.csv.gz", &gz.finish().unwrap());
    assert_eq!(read_events(&p).unwrap().format(), TraceFormat::Rmm);
}

#[test]
fn csv_written_reads_back_identically() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = ev(7, OpKind::Alloc, 0x1000, 100);
    a.align = 64;
    a.stream = Some(3);
    a.device = Some(1);
    a.time_ns = Some(5);
    let mut r = ev(8, OpKind::Realloc, 0x2000, 200);
    r.old_ptr = 0x1000;
    r.time_ns = Some(6);
    let mut f = ev(7, OpKind::Free, 0x2000, 0);
    f.time_ns = Some(7);
    let mut out = Vec::new();
    write_csv([a, r, f], &mut out).unwrap();
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(text.starts_with(CSV_HEADER));
    assert_eq!(
        text.lines().nth(2),
        Some("8,6,realloc,0x2000,200,,0x1000,,")
    );
    let p = write(dir.path(), "out.csv", &out);
    let back = events(&p);
    let strip = |mut e: Event| {
        e.line = 0;
        e
    };
    assert_eq!(
        back.into_iter().map(strip).collect::<Vec<_>>(),
        vec![a, r, f]
    );
}

/// `convert` as the CLI does it: global order, written as canonical CSV.
fn convert(input: &Path, output: &Path) {
    let mut w = workloads::CsvWriter::new(std::fs::File::create(output).unwrap()).unwrap();
    for e in read_ordered_events(input).unwrap() {
        w.write(&e.unwrap()).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn convert_of_convert_is_convert() {
    let dir = tempfile::tempdir().unwrap();
    let unordered = "thread,op,ptr,size,time_ns,old_ptr,align,stream\n\
        1,alloc,4096,8,20,,,\n0,alloc,0x10,8,10,,64,2\n1,realloc,0x20,16,30,4096,,\n0,free,16,,40,,,\n";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(RMM_LOG.as_bytes()).unwrap();
    let inputs = [
        write(dir.path(), "a.txt", ANDROID.as_bytes()),
        write(dir.path(), "r.gz", &gz.finish().unwrap()),
        write(dir.path(), "u.csv", unordered.as_bytes()),
    ];
    for input in inputs {
        let once = dir.path().join("once.csv");
        let twice = dir.path().join("twice.csv");
        convert(&input, &once);
        convert(&once, &twice);
        let a = std::fs::read(&once).unwrap();
        assert_eq!(a, std::fs::read(&twice).unwrap(), "{}", input.display());
        assert!(a.starts_with(CSV_HEADER.as_bytes()));
    }
}
