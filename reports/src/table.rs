//! The one table renderer behind every terminal table (`replay`, `replay stats`,
//! `replay recommend`, `replay compare` / `gate`) and the markdown tables of the reports.
//!
//! A table is headers, rows of strings and an alignment per column. Text tables pad each
//! column to its widest cell (counted in characters, so `±` and `…` take one), put two
//! spaces between columns and trim trailing spaces. Adding a column is one more header and
//! one more cell per row; columns past the last one given an alignment take the alignment
//! set with [`Table::align_from`] (left unless set).

use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// Spaces between two columns of a text table.
const GAP: &str = "  ";

#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Empty for a table without a header line.
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    /// Alignment of the first columns; the others take `rest`.
    aligns: Vec<Align>,
    rest: Option<Align>,
    /// A line of `-` under the headers (text only).
    rule: bool,
    /// Spaces before every line (text only).
    indent: usize,
}

impl Table {
    /// A table with these headers (none: no header line), every column left-aligned.
    pub fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            ..Table::default()
        }
    }

    /// Column `column` aligned as `align`.
    pub fn align(mut self, column: usize, align: Align) -> Self {
        if self.aligns.len() <= column {
            let fill = self.rest.unwrap_or(Align::Left);
            self.aligns.resize(column + 1, fill);
        }
        self.aligns[column] = align;
        self
    }

    /// Column `first` and every column after it aligned as `align`.
    pub fn align_from(mut self, first: usize, align: Align) -> Self {
        let fill = self.rest.unwrap_or(Align::Left);
        self.aligns.resize(first, fill);
        self.rest = Some(align);
        self
    }

    /// A rule of `-` under the header line.
    pub fn with_rule(mut self) -> Self {
        self.rule = true;
        self
    }

    /// Indent every line by `spaces`.
    pub fn indent(mut self, spaces: usize) -> Self {
        self.indent = spaces;
        self
    }

    /// Append a row (shorter rows leave their last columns empty).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn align_of(&self, column: usize) -> Align {
        self.aligns
            .get(column)
            .copied()
            .unwrap_or(self.rest.unwrap_or(Align::Left))
    }

    fn columns(&self) -> usize {
        self.rows
            .iter()
            .map(Vec::len)
            .chain([self.headers.len()])
            .max()
            .unwrap_or(0)
    }

    /// The table as aligned text, one line per row (after the header, if any).
    pub fn text(&self) -> String {
        let columns = self.columns();
        let mut widths = vec![0; columns];
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            for (w, cell) in widths.iter_mut().zip(line) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let mut push_line = |cells: &[String]| {
            let mut line = " ".repeat(self.indent);
            for (c, width) in widths.iter().enumerate() {
                let cell = cells.get(c).map_or("", String::as_str);
                let pad = width.saturating_sub(cell.chars().count());
                if c > 0 {
                    line.push_str(GAP);
                }
                match self.align_of(c) {
                    Align::Left => {
                        line.push_str(cell);
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(cell);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        };
        if !self.headers.is_empty() {
            push_line(&self.headers);
            if self.rule {
                let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                push_line(&rule);
            }
        }
        for row in &self.rows {
            push_line(row);
        }
        out
    }

    /// The table as GitHub markdown; `|` in cells is escaped, newlines become spaces.
    pub fn markdown(&self) -> String {
        let columns = self.columns();
        let escape = |s: &str| s.replace('|', "\\|").replace('\n', " ");
        let line = |cells: &[String]| -> String {
            let cells: Vec<String> = (0..columns)
                .map(|c| escape(cells.get(c).map_or("", String::as_str)))
                .collect();
            format!("| {} |\n", cells.join(" | "))
        };
        let mut out = line(&self.headers);
        let _ = writeln!(out, "|{}", "---|".repeat(columns));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn text_pads_by_characters_and_aligns_per_column() {
        let mut t = Table::new(&["name", "ops/s", "note"])
            .align_from(1, Align::Right)
            .align(2, Align::Left);
        t.row(cells(&["pool-fixed", "12.3M", "±5%"]));
        t.row(cells(&["system", "850k", ""]));
        assert_eq!(
            t.text(),
            "name        ops/s  note\n\
             pool-fixed  12.3M  ±5%\n\
             system       850k\n"
        );
    }

    #[test]
    fn columns_added_later_take_the_trailing_alignment() {
        let mut t = Table::new(&["a", "b"]).align_from(1, Align::Right);
        t.row(cells(&["x", "1", "22"]));
        assert_eq!(t.text(), "a  b\nx  1  22\n");
    }

    #[test]
    fn rule_indent_and_headless_tables() {
        let mut t = Table::new(&["k", "value"]).with_rule().indent(2);
        t.row(cells(&["alpha", "1"]));
        assert_eq!(t.text(), "  k      value\n  -----  -----\n  alpha  1\n");
        let mut h = Table::new(&[]).align(0, Align::Right);
        h.row(cells(&["7", "x"]));
        h.row(cells(&["100", "y"]));
        assert_eq!(h.text(), "  7  x\n100  y\n");
    }

    #[test]
    fn markdown_escapes_pipes_and_fills_short_rows() {
        let mut t = Table::new(&["a", "b"]);
        t.row(cells(&["x|y"]));
        assert_eq!(t.markdown(), "| a | b |\n|---|---|\n| x\\|y |  |\n");
    }
}
