//! Every file in tests/bad_traces/ must fail to load with exactly the message listed for
//! it in EXPECTED.tsv (`<file>\t<message after "<path>:">`), and nothing may panic on
//! random input.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use workloads::{load_trace, LoadOptions, TraceError};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_traces")
}

#[test]
fn each_bad_trace_gives_its_error() {
    let dir = corpus_dir();
    let expected = std::fs::read_to_string(dir.join("EXPECTED.tsv")).unwrap();
    let mut listed = Vec::new();
    for row in expected.lines().filter(|l| !l.is_empty()) {
        let (name, message) = row.split_once('\t').unwrap();
        listed.push(name.to_string());
        let path = dir.join(name);
        let err = load_trace(&path, &LoadOptions::default())
            .err()
            .unwrap_or_else(|| panic!("{name}: loaded without error"));
        let text = err.to_string();
        let prefix = format!("{}:", path.display());
        assert!(text.starts_with(&prefix), "{name}: {text}");
        if message == "__DECOMPRESS__" {
            assert!(
                matches!(err, TraceError::Decompress { .. }),
                "{name}: {text}"
            );
            assert!(
                text.contains(": cannot decompress (gzip): "),
                "{name}: {text}"
            );
        } else {
            assert_eq!(&text[prefix.len()..], message, "{name}");
        }
        if !matches!(err, TraceError::Empty { .. }) {
            assert!(err.line().is_some(), "{name}: no line in {text}");
        }
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "EXPECTED.tsv")
        .collect();
    on_disk.sort();
    listed.sort();
    assert_eq!(on_disk, listed, "every corpus file has an expectation");
    assert!(listed.len() >= 30);
}

#[test]
fn missing_file_names_the_path() {
    let err = load_trace(Path::new("/nonexistent/t.csv"), &LoadOptions::default()).unwrap_err();
    assert!(err.to_string().starts_with("/nonexistent/t.csv: "), "{err}");
}

fn load_bytes(bytes: &[u8]) -> Result<(), TraceError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t");
    std::fs::write(&path, bytes).unwrap();
    let strict = bytes.first().is_some_and(|b| b & 1 == 1);
    load_trace(
        &path,
        &LoadOptions {
            strict,
            keep_times: true,
            ..Default::default()
        },
    )
    .map(|_| ())
}

const VALID_CSV: &str = "thread,time_ns,op,ptr,size,align,old_ptr\n\
    0,10,alloc,0x10,8,16,\n1,20,realloc,0x20,32,,0x10\n0,30,free,0x20,,,\n";
const VALID_RMM: &str = "Thread,Time,Action,Pointer,Size,Stream\n\
    1,23:59:59.999999,allocate,0x7f00,256,0x1\n2,00:00:00.000001,free,0x7f00,256,0x1\n";
const VALID_ANDROID: &str = "1: malloc 0x10 8\n2: realloc 0x20 0x10 16\n1: free 0x20\n";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = load_bytes(&bytes);
    }

    #[test]
    fn mutated_traces_never_panic(
        which in 0usize..3,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = [VALID_CSV, VALID_RMM, VALID_ANDROID][which].as_bytes().to_vec();
        for (at, b) in edits {
            let i = at % bytes.len();
            bytes[i] = b;
        }
        let _ = load_bytes(&bytes);
    }

    #[test]
    fn random_printable_lines_never_panic(text in "[0-9a-z:,. x()-]{0,200}(\n[0-9a-z:,. x()-]{0,80}){0,6}") {
        let _ = load_bytes(format!("thread,op,ptr,size,old_ptr,align\n{text}").as_bytes());
        let _ = load_bytes(text.as_bytes());
    }
}

#[test]
fn valid_seeds_of_the_mutation_test_load() {
    for text in [VALID_CSV, VALID_RMM, VALID_ANDROID] {
        load_bytes(text.as_bytes()).unwrap();
    }
}
