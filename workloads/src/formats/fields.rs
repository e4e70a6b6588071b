//! Parsing of the values every format shares: integers, pointers, sizes, alignments.

use std::path::Path;

use crate::error::{Quoted, TraceError};

/// Requests above this many bytes (256 TiB) are taken as corrupt input, not a real size.
pub const MAX_SIZE_BYTES: u64 = 1 << 48;
/// Largest alignment accepted (1 GiB); more is corrupt input.
pub const MAX_ALIGN_BYTES: u64 = 1 << 30;

/// Strip ASCII whitespace and one pair of surrounding double quotes.
#[inline]
pub fn trim_field(mut f: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = f {
        if first.is_ascii_whitespace() {
            f = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = f {
        if last.is_ascii_whitespace() {
            f = rest;
        } else {
            break;
        }
    }
    if f.len() >= 2 && f[0] == b'"' && f[f.len() - 1] == b'"' {
        f = &f[1..f.len() - 1];
    }
    f
}

/// Decimal digits only; `None` on anything else, on empty input or on overflow.
#[inline]
pub fn parse_dec(f: &[u8]) -> Option<u64> {
    if f.is_empty() || f.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in f {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(d as u64)?;
    }
    Some(v)
}

/// Hex digits without prefix; `None` on anything else, on empty input or on overflow.
#[inline]
pub fn parse_hex_digits(f: &[u8]) -> Option<u64> {
    if f.is_empty() || f.len() > 16 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in f {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | d as u64;
    }
    Some(v)
}

/// `0x`-hex or decimal.
#[inline]
pub fn parse_int(f: &[u8]) -> Option<u64> {
    match f {
        [b'0', b'x' | b'X', hex @ ..] => parse_hex_digits(hex),
        _ => parse_dec(f),
    }
}

/// Reasons shared by every format, so messages read the same everywhere.
pub struct FieldContext<'a> {
    pub path: &'a Path,
    pub line: u64,
}

impl FieldContext<'_> {
    pub fn error(
        &self,
        field: &'static str,
        value: &[u8],
        reason: impl Into<String>,
    ) -> TraceError {
        TraceError::BadField {
            path: self.path.to_path_buf(),
            line: self.line,
            field,
            value: Quoted::new(value),
            reason: reason.into(),
        }
    }

    /// An unsigned integer (`0x`-hex or decimal).
    pub fn int(&self, field: &'static str, f: &[u8]) -> Result<u64, TraceError> {
        parse_int(f).ok_or_else(|| self.error(field, f, not_a_number_reason(f)))
    }

    /// A byte count: decimal, at most `MAX_SIZE_BYTES`.
    pub fn size(&self, field: &'static str, f: &[u8]) -> Result<u64, TraceError> {
        let v = parse_dec(f).ok_or_else(|| self.error(field, f, not_a_number_reason(f)))?;
        self.check_size(field, f, v)
    }

    pub fn check_size(&self, field: &'static str, f: &[u8], v: u64) -> Result<u64, TraceError> {
        if v > MAX_SIZE_BYTES {
            return Err(self.error(
                field,
                f,
                format!("larger than the limit of 2^48 = {MAX_SIZE_BYTES} bytes"),
            ));
        }
        Ok(v)
    }

    /// An alignment: 0 (none) or a power of two up to `MAX_ALIGN_BYTES`.
    pub fn align(&self, f: &[u8]) -> Result<u64, TraceError> {
        let v = parse_int(f).ok_or_else(|| self.error("align", f, not_a_number_reason(f)))?;
        if v != 0 && !v.is_power_of_two() {
            return Err(self.error("align", f, "not a power of two"));
        }
        if v > MAX_ALIGN_BYTES {
            return Err(self.error(
                "align",
                f,
                format!("larger than the limit of {MAX_ALIGN_BYTES} bytes"),
            ));
        }
        Ok(v)
    }
}

fn not_a_number_reason(f: &[u8]) -> &'static str {
    if f.is_empty() {
        "missing value"
    } else if f.first() == Some(&b'-') {
        "negative"
    } else if std::str::from_utf8(f).is_err() {
        "not a number (invalid UTF-8 / binary data)"
    } else {
        "not an unsigned integer"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_pointers() {
        assert_eq!(parse_int(b"0x55bd942f6910"), Some(0x55bd942f6910));
        assert_eq!(parse_int(b"0XFF"), Some(255));
        assert_eq!(parse_int(b"1234"), Some(1234));
        assert_eq!(parse_int(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_int(b"18446744073709551616"), None);
        assert_eq!(parse_int(b"0x"), None);
        assert_eq!(parse_int(b"12a"), None);
        assert_eq!(parse_int(b""), None);
        assert_eq!(parse_int(b"0x1ffffffffffffffff"), None);
        assert_eq!(trim_field(b" \"12\" "), b"12");
    }
}
