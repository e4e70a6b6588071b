//! Writing canonical CSV: every column, in the order of docs/formats.md's example, pointers in
//! hex, empty fields for what an event does not have. Reading the output back gives the
//! same events (the round trip `convert(convert(x)) == convert(x)` is tested).

use std::io::{self, BufWriter, Write};

use crate::event::{Event, OpKind};

pub const CSV_HEADER: &str = "thread,time_ns,op,ptr,size,align,old_ptr,stream,device";

/// Streams events out as canonical CSV.
pub struct CsvWriter<W: Write> {
    out: BufWriter<W>,
    events: u64,
}

impl<W: Write> CsvWriter<W> {
    /// Write the header.
    pub fn new(writer: W) -> io::Result<Self> {
        let mut out = BufWriter::with_capacity(256 * 1024, writer);
        writeln!(out, "{CSV_HEADER}")?;
        Ok(CsvWriter { out, events: 0 })
    }

    pub fn write(&mut self, e: &Event) -> io::Result<()> {
        let out = &mut self.out;
        write!(out, "{},", e.thread)?;
        if let Some(t) = e.time_ns {
            write!(out, "{t}")?;
        }
        write!(out, ",{},{:#x},", e.op.as_str(), e.ptr)?;
        if e.op != OpKind::Free {
            write!(out, "{}", e.size)?;
        }
        out.write_all(b",")?;
        if e.align != 0 {
            write!(out, "{}", e.align)?;
        }
        out.write_all(b",")?;
        if e.op == OpKind::Realloc && e.old_ptr != 0 {
            write!(out, "{:#x}", e.old_ptr)?;
        }
        out.write_all(b",")?;
        if let Some(s) = e.stream {
            write!(out, "{s:#x}")?;
        }
        out.write_all(b",")?;
        if let Some(d) = e.device {
            write!(out, "{d}")?;
        }
        out.write_all(b"\n")?;
        self.events += 1;
        Ok(())
    }

    /// Flush and return the writer and the number of events written.
    pub fn finish(self) -> io::Result<(W, u64)> {
        let events = self.events;
        let w = self.out.into_inner().map_err(|e| e.into_error())?;
        Ok((w, events))
    }
}

/// Write `events` as canonical CSV to `writer`; returns the number of events written.
pub fn write_csv<I, W>(events: I, writer: W) -> io::Result<u64>
where
    I: IntoIterator<Item = Event>,
    W: Write,
{
    let mut w = CsvWriter::new(writer)?;
    for e in events {
        w.write(&e)?;
    }
    let (mut inner, n) = w.finish()?;
    inner.flush()?;
    Ok(n)
}
