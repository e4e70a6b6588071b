//! The global order of canonical CSV with `time_ns` (docs/formats.md: a stable sort by time) and
//! what holding the events for it costs.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use workloads::gen::{generate, GenKind, GenParams};
use workloads::{read_events, read_ordered_events, CsvWriter, Event, OpKind};

/// The order as docs/formats.md states it, computed the obvious way: every event in memory,
/// stably sorted by time.
fn reference_order(path: &Path) -> Vec<Event> {
    let mut all: Vec<Event> = read_events(path).unwrap().map(Result::unwrap).collect();
    all.sort_by_key(|e| e.time_ns);
    all
}

fn ordered(path: &Path) -> Vec<Event> {
    read_ordered_events(path)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn write_csv_rows(dir: &Path, rows: &[String]) -> PathBuf {
    let path = dir.join("t.csv");
    let mut text = String::from("thread,time_ns,op,ptr,size,align,old_ptr,stream,device\n");
    for r in rows {
        text.push_str(r);
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// One row per (thread, time step, op code, stream code).
fn row(thread: u64, time_ns: u64, code: u8, n: usize) -> String {
    let ptr = 0x1000 + n as u64 * 16;
    let stream = match code % 3 {
        0 => String::new(),
        1 => format!("{:#x}", code % 5),
        _ => "7".to_string(),
    };
    let device = if code & 3 == 0 { "1" } else { "" };
    match code % 3 {
        0 => format!(
            "{thread},{time_ns},alloc,{ptr:#x},{},16,,{stream},{device}",
            code
        ),
        1 => format!("{thread},{time_ns},free,{ptr:#x},,,,{stream},{device}"),
        _ => format!(
            "{thread},{time_ns},realloc,{ptr:#x},{},,{:#x},{stream},{device}",
            n * 3,
            ptr + 8
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Threads flushed in random interleavings (each thread's rows in its program order),
    /// times with ties across and within threads, and some threads whose times step back.
    #[test]
    fn merged_order_equals_the_stable_sort_by_time(
        threads in proptest::collection::vec(
            proptest::collection::vec((0u64..6, any::<u8>()), 0..40),
            1..7,
        ),
        monotonic in any::<bool>(),
        flush in proptest::collection::vec(any::<u8>(), 1..200),
        thread_ids in proptest::collection::vec(0u64..1_000_000, 7),
    ) {
        // Each thread's rows in program order.
        let mut per_thread: Vec<Vec<String>> = Vec::new();
        let mut n = 0;
        for (t, steps) in threads.iter().enumerate() {
            let mut time_ns = 1_000;
            let mut rows = Vec::new();
            for &(step, code) in steps {
                time_ns = if monotonic || step != 5 { time_ns + step } else { time_ns - 3 };
                rows.push(row(thread_ids[t], time_ns, code, n));
                n += 1;
            }
            per_thread.push(rows);
        }
        // Flush: take a random-length run from a random thread until all are written.
        let mut cursors = vec![0usize; per_thread.len()];
        let mut file = Vec::new();
        let mut f = flush.iter().cycle();
        while file.len() < n {
            let open: Vec<usize> =
                (0..per_thread.len()).filter(|&t| cursors[t] < per_thread[t].len()).collect();
            let t = open[*f.next().unwrap() as usize % open.len()];
            let run = 1 + *f.next().unwrap() as usize % 8;
            let end = (cursors[t] + run).min(per_thread[t].len());
            file.extend_from_slice(&per_thread[t][cursors[t]..end]);
            cursors[t] = end;
        }
        prop_assume!(n > 0);
        let dir = tempfile::tempdir().unwrap();
        let path = write_csv_rows(dir.path(), &file);
        prop_assert_eq!(ordered(&path), reference_order(&path));
    }
}

#[test]
fn hundreds_of_threads_and_wide_stream_tables() {
    // More distinct (stream, device) pairs than fit in the packed word, and many threads.
    let mut rows = Vec::new();
    for i in 0..3000u64 {
        let thread = i % 257;
        let time_ns = 1_000_000 - (i % 7) * 10 + i / 3;
        rows.push(format!(
            "{thread},{time_ns},alloc,{:#x},{},,,{:#x},{}",
            0x10 + i,
            i + 1,
            i % 400,
            i % 3
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = write_csv_rows(dir.path(), &rows);
    let got = ordered(&path);
    assert_eq!(got.len(), 3000);
    assert_eq!(got, reference_order(&path));
    assert!(got.iter().any(|e| e.stream == Some(399)));
}

#[test]
fn held_events_take_32_bytes_each_plus_8_per_realloc() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("size-mix.csv");
    let mut w = CsvWriter::new(std::fs::File::create(&path).unwrap()).unwrap();
    let params = GenParams {
        seed: 3,
        events: 1_000_000,
        threads: 8,
    };
    let mut reallocs = 0u64;
    generate(GenKind::SizeMix, &params, &mut |e| {
        reallocs += (e.op == OpKind::Realloc) as u64;
        w.write(&e).unwrap()
    });
    assert!(reallocs > 0);
    w.finish().unwrap();
    let events = read_ordered_events(&path).unwrap();
    let held = events.held_bytes();
    let n = events.count() as f64;
    let per_event = held as f64 / n;
    // 32 bytes packed, 8 per realloc, at most one partly filled chunk per column.
    assert!(
        (32.0..=36.0).contains(&per_event),
        "{per_event:.2} bytes/event"
    );
}
