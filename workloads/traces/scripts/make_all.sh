#!/bin/sh
# Re-make the sample traces in workloads/traces/ (run from the workspace root).
# REPLAY overrides the binary; by default it is built and run through cargo.
set -e
REPLAY=${REPLAY:-"cargo run --quiet --bin replay --"}
T=workloads/traces
S=$T/scripts
$REPLAY record -o $T/python-json.csv -- python3 $S/python_json.py
$REPLAY record -o $T/python-threads.csv.zst -- python3 $S/python_threads.py
$REPLAY record -o $T/sqlite.csv.zst -- sqlite3 :memory: ".read $S/sqlite.sql" > /dev/null
$REPLAY record -o $T/perl-text.csv.zst -- perl $S/perl_text.pl
