//! `replay record` from the command line: the trace, the summary and the exit codes.

use std::path::Path;
use std::process::Command;

use workloads::{load_trace, LoadOptions};

fn replay() -> Command {
    Command::new(env!("CARGO_BIN_EXE_replay"))
}

#[test]
fn records_a_program_and_exits_with_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sh.csv.gz");
    let output = replay()
        .args(["record", "-o"])
        .arg(&out)
        .args(["--", "bash", "-c", "ls / > /dev/null; exit 3"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("events"), "{stderr}");
    assert!(stderr.contains("threads"), "{stderr}");
    let loaded = load_trace(&out, &LoadOptions::default()).unwrap();
    assert!(loaded.stats.events > 10, "{:?}", loaded.stats.events);
    assert!(loaded.sanitation.is_clean(), "{:?}", loaded.sanitation);
    let summary_events = format!("{} events", loaded.stats.events);
    assert!(stderr.contains(&summary_events), "{stderr}");
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.csv");
    let no_command = replay().args(["record", "-o"]).arg(&out).output().unwrap();
    assert_eq!(no_command.status.code(), Some(2));
    let no_out = replay().args(["record", "--", "true"]).output().unwrap();
    assert_eq!(no_out.status.code(), Some(2));
    let missing = replay()
        .args(["record", "-o"])
        .arg(&out)
        .args(["--", "/nonexistent/program"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/program"));
    assert!(!Path::new(&out).exists());
}
