//! A small unpickler for plain data: `None`, booleans, integers, floats, strings, bytes,
//! lists, tuples, dicts and sets, as Python's `pickle` writes them with protocols 2 to 5.
//!
//! It never imports or calls anything. The opcodes that would (`GLOBAL`, `STACK_GLOBAL`,
//! `REDUCE`, `BUILD`, `INST`, `OBJ`, `NEWOBJ`, `NEWOBJ_EX`, the extension registry and
//! persistent ids) and any opcode it does not know are refused with an error that names
//! the opcode, its byte offset and, for imports, the module and name asked for.
//!
//! Values live in one arena and refer to each other by index, so that memo references
//! share instead of copying (no memo bomb), cycles are harmless, and dropping the tree
//! never recurses (no stack overflow on deep nesting). Memory is bounded: the arena,
//! container items, text and memo together are counted against `MAX_HELD_BYTES`, and the
//! decoded pickle against `MAX_PICKLE_BYTES`; every opcode costs O(1) amortised time, so
//! decoding is linear in the input.

use std::collections::HashMap;
use std::io::{self, BufRead};

/// Decoded pickle bytes read at most (after decompression).
pub const MAX_PICKLE_BYTES: u64 = 4 << 30;
/// Host memory the decoded values may take (arena, items, text, memo, stack).
pub const MAX_HELD_BYTES: usize = 1 << 30;
/// Longest single string or bytes value.
pub const MAX_ITEM_BYTES: u64 = 16 << 20;

/// Index of a value in [`Pickle::values`].
pub type ValueId = u32;

/// One decoded value. Containers hold the ids of their items.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer that does not fit in 64 bits (kept only as a marker).
    BigInt,
    Float(f64),
    Str(Box<str>),
    Bytes(Box<[u8]>),
    List(Vec<ValueId>),
    Tuple(Vec<ValueId>),
    /// Keys and values interleaved: `[k0, v0, k1, v1, ...]`, in insertion order.
    Dict(Vec<ValueId>),
    Set(Vec<ValueId>),
}

impl Value {
    /// Python's name for the value's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Dict(_) => "dict",
            Value::Set(_) => "set",
        }
    }
}

/// A decoded pickle: the arena and the id of the top-level value.
#[derive(Debug)]
pub struct Pickle {
    pub values: Vec<Value>,
    pub root: ValueId,
}

impl Pickle {
    pub fn get(&self, id: ValueId) -> &Value {
        &self.values[id as usize]
    }
}

/// Why a pickle could not be decoded, and where (byte offset in the decoded stream).
#[derive(Debug)]
pub struct PickleError {
    pub offset: u64,
    pub reason: String,
    /// The underlying read error, when the input itself failed (truncated gzip, ...).
    pub io: Option<io::Error>,
}

/// Whether the first bytes are a binary pickle's `PROTO` opcode (protocol 2 to 5).
pub fn looks_like_pickle(head: &[u8]) -> bool {
    matches!(head, [0x80, 2..=5, ..])
}

struct Input<'a> {
    reader: &'a mut dyn BufRead,
    offset: u64,
}

impl Input<'_> {
    fn err(&self, reason: String) -> PickleError {
        PickleError {
            offset: self.offset,
            reason,
            io: None,
        }
    }

    fn io_err(&self, e: io::Error) -> PickleError {
        PickleError {
            offset: self.offset,
            reason: "cannot read the pickle".into(),
            io: Some(e),
        }
    }

    fn byte(&mut self) -> Result<u8, PickleError> {
        let mut b = [0u8; 1];
        self.exact(&mut b)?;
        Ok(b[0])
    }

    fn exact(&mut self, out: &mut [u8]) -> Result<(), PickleError> {
        let mut got = 0;
        while got < out.len() {
            let buf = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_err(e)),
            };
            if buf.is_empty() {
                return Err(self.err(format!(
                    "the pickle ends early (needed {} more bytes): truncated file?",
                    out.len() - got
                )));
            }
            let n = buf.len().min(out.len() - got);
            out[got..got + n].copy_from_slice(&buf[..n]);
            self.reader.consume(n);
            got += n;
            self.offset += n as u64;
            if self.offset > MAX_PICKLE_BYTES {
                return Err(self.err(format!(
                    "the pickle is larger than the importer's limit of {MAX_PICKLE_BYTES} bytes"
                )));
            }
        }
        Ok(())
    }

    fn le<const N: usize>(&mut self) -> Result<[u8; N], PickleError> {
        let mut b = [0u8; N];
        self.exact(&mut b)?;
        Ok(b)
    }

    /// `len` bytes, read in pieces so that a lying length costs no more than the input.
    fn bytes(&mut self, len: u64) -> Result<Vec<u8>, PickleError> {
        if len > MAX_ITEM_BYTES {
            return Err(self.err(format!(
                "a string or bytes value of {len} bytes (the importer's limit is {MAX_ITEM_BYTES})"
            )));
        }
        let mut out = Vec::new();
        let mut left = len as usize;
        let mut piece = [0u8; 4096];
        while left > 0 {
            let n = left.min(piece.len());
            self.exact(&mut piece[..n])?;
            out.extend_from_slice(&piece[..n]);
            left -= n;
        }
        Ok(out)
    }

    /// A newline-terminated argument (GLOBAL's module and name), at most 256 bytes.
    fn line(&mut self) -> Result<String, PickleError> {
        let mut out = Vec::new();
        loop {
            let b = self.byte()?;
            if b == b'\n' || out.len() >= 256 {
                break;
            }
            out.push(b);
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// Every opcode a pickle may hold: the name for messages, or `None` when unknown.
fn opcode_name(op: u8) -> Option<&'static str> {
    Some(match op {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'L' => "LONG",
        b'M' => "BININT2",
        b'N' => "NONE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'X' => "BINUNICODE",
        b'a' => "APPEND",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'd' => "DICT",
        b'}' => "EMPTY_DICT",
        b'e' => "APPENDS",
        b'g' => "GET",
        b'h' => "BINGET",
        b'i' => "INST",
        b'j' => "LONG_BINGET",
        b'l' => "LIST",
        b']' => "EMPTY_LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        b's' => "SETITEM",
        b't' => "TUPLE",
        b')' => "EMPTY_TUPLE",
        b'u' => "SETITEMS",
        b'G' => "BINFLOAT",
        0x80 => "PROTO",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        0x8a => "LONG1",
        0x8b => "LONG4",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => return None,
    })
}

/// Bytes of bookkeeping charged per value, per container item, per memo entry and per
/// stack slot (the arena slot, the `Vec` header, hash-map overhead): an upper estimate.
const VALUE_COST_BYTES: usize = std::mem::size_of::<Value>();
const ITEM_COST_BYTES: usize = std::mem::size_of::<ValueId>();
const MEMO_COST_BYTES: usize = 24;

struct Machine {
    values: Vec<Value>,
    stack: Vec<ValueId>,
    marks: Vec<usize>,
    memo: HashMap<u64, ValueId>,
    held_bytes: usize,
}

impl Machine {
    fn charge(&mut self, input: &Input<'_>, bytes: usize) -> Result<(), PickleError> {
        self.held_bytes = self.held_bytes.saturating_add(bytes);
        if self.held_bytes > MAX_HELD_BYTES {
            return Err(input.err(format!(
                "the decoded pickle needs more than the importer's memory limit of {} MiB",
                MAX_HELD_BYTES >> 20
            )));
        }
        Ok(())
    }

    fn push_new(&mut self, input: &Input<'_>, v: Value) -> Result<(), PickleError> {
        let extra = match &v {
            Value::Str(s) => s.len(),
            Value::Bytes(b) => b.len(),
            Value::List(items) | Value::Tuple(items) | Value::Dict(items) | Value::Set(items) => {
                items.len() * ITEM_COST_BYTES
            }
            _ => 0,
        };
        self.charge(input, VALUE_COST_BYTES + ITEM_COST_BYTES + extra)?;
        let id = ValueId::try_from(self.values.len())
            .map_err(|_| input.err("more than 2^32 values".into()))?;
        self.values.push(v);
        self.stack.push(id);
        Ok(())
    }

    fn push_id(&mut self, input: &Input<'_>, id: ValueId) -> Result<(), PickleError> {
        self.charge(input, ITEM_COST_BYTES)?;
        self.stack.push(id);
        Ok(())
    }

    fn pop(&mut self, input: &Input<'_>, op: &str) -> Result<ValueId, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(input.err(format!("{op} on an empty stack: malformed pickle")));
        }
        Ok(self.stack.pop().expect("checked above"))
    }

    fn top(&self, input: &Input<'_>, op: &str) -> Result<ValueId, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(input.err(format!("{op} on an empty stack: malformed pickle")));
        }
        Ok(*self.stack.last().expect("checked above"))
    }

    /// The items pushed since the last MARK, removed from the stack with the mark.
    fn pop_mark(&mut self, input: &Input<'_>, op: &str) -> Result<Vec<ValueId>, PickleError> {
        let Some(mark) = self.marks.pop() else {
            return Err(input.err(format!("{op} without a MARK: malformed pickle")));
        };
        Ok(self.stack.split_off(mark))
    }

    fn memo_put(&mut self, input: &Input<'_>, key: u64, op: &str) -> Result<(), PickleError> {
        let id = self.top(input, op)?;
        self.charge(input, MEMO_COST_BYTES)?;
        self.memo.insert(key, id);
        Ok(())
    }

    fn memo_get(&mut self, input: &Input<'_>, key: u64) -> Result<(), PickleError> {
        let id = *self.memo.get(&key).ok_or_else(|| {
            input.err(format!(
                "memo entry {key} read before it was written: malformed pickle"
            ))
        })?;
        self.push_id(input, id)
    }

    /// Add `items` to the container `target` (APPEND(S), SETITEM(S), ADDITEMS).
    fn extend(
        &mut self,
        input: &Input<'_>,
        target: ValueId,
        items: Vec<ValueId>,
        op: &str,
    ) -> Result<(), PickleError> {
        self.charge(input, items.len() * ITEM_COST_BYTES)?;
        let container = &mut self.values[target as usize];
        match (op, container) {
            ("APPEND" | "APPENDS", Value::List(v))
            | ("SETITEM" | "SETITEMS", Value::Dict(v))
            | ("ADDITEMS", Value::Set(v)) => {
                if op.starts_with("SETITEM") && items.len() & 1 != 0 {
                    return Err(input.err(format!(
                        "{op} with an odd number of items ({}): malformed pickle",
                        items.len()
                    )));
                }
                v.extend(items);
                Ok(())
            }
            (_, other) => Err(input.err(format!(
                "{op} on a {}: only plain lists, dicts and sets are read (an object's own \
                 {op} would run its code)",
                other.type_name()
            ))),
        }
    }

    fn str_value(&self, id: ValueId) -> Option<&str> {
        match &self.values[id as usize] {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

fn int_le(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Int(0);
    }
    if bytes.len() > 8 {
        // Fits in 64 bits only if the extra bytes are sign extension.
        let sign = if bytes[7] & 0x80 != 0 { 0xff } else { 0 };
        if bytes[8..].iter().any(|&b| b != sign) {
            return Value::BigInt;
        }
        return int_le(&bytes[..8]);
    }
    let fill = if bytes[bytes.len() - 1] & 0x80 != 0 {
        0xff
    } else {
        0
    };
    let mut b = [fill; 8];
    b[..bytes.len()].copy_from_slice(bytes);
    Value::Int(i64::from_le_bytes(b))
}

fn text(input: &Input<'_>, bytes: Vec<u8>) -> Result<Value, PickleError> {
    String::from_utf8(bytes)
        .map(|s| Value::Str(s.into_boxed_str()))
        .map_err(|_| input.err("a string that is not UTF-8: malformed pickle".into()))
}

/// Decode one pickle from `reader`. Reads up to the `STOP` opcode; what follows is not read.
pub fn decode(reader: &mut dyn BufRead) -> Result<Pickle, PickleError> {
    let mut input = Input { reader, offset: 0 };
    let mut m = Machine {
        values: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        held_bytes: 0,
    };
    loop {
        let at = input.offset;
        let op = input.byte()?;
        let name = opcode_name(op).ok_or_else(|| PickleError {
            offset: at,
            reason: format!("unknown opcode 0x{op:02x}: not a pickle, or a corrupt one"),
            io: None,
        })?;
        match op {
            0x80 => {
                let proto = input.byte()?;
                if !(2..=5).contains(&proto) {
                    return Err(input.err(format!(
                        "pickle protocol {proto} (expected 2 to 5, what Python 3 writes)"
                    )));
                }
            }
            0x95 => {
                // FRAME: a length hint for buffering; the opcodes follow as usual.
                input.le::<8>()?;
            }
            b'.' => {
                let root = m.pop(&input, name)?;
                return Ok(Pickle {
                    values: m.values,
                    root,
                });
            }
            b'(' => {
                m.charge(&input, std::mem::size_of::<usize>())?;
                m.marks.push(m.stack.len());
            }
            b'0' => {
                m.pop(&input, name)?;
            }
            b'1' => {
                m.pop_mark(&input, name)?;
            }
            b'2' => {
                let id = m.top(&input, name)?;
                m.push_id(&input, id)?;
            }
            b'N' => m.push_new(&input, Value::None)?,
            0x88 => m.push_new(&input, Value::Bool(true))?,
            0x89 => m.push_new(&input, Value::Bool(false))?,
            b'J' => {
                let v = i32::from_le_bytes(input.le::<4>()?);
                m.push_new(&input, Value::Int(v.into()))?;
            }
            b'K' => {
                let v = input.byte()?;
                m.push_new(&input, Value::Int(v.into()))?;
            }
            b'M' => {
                let v = u16::from_le_bytes(input.le::<2>()?);
                m.push_new(&input, Value::Int(v.into()))?;
            }
            0x8a => {
                let n = input.byte()?;
                let b = input.bytes(n.into())?;
                m.push_new(&input, int_le(&b))?;
            }
            0x8b => {
                let n = u32::from_le_bytes(input.le::<4>()?);
                let b = input.bytes(n.into())?;
                m.push_new(&input, int_le(&b))?;
            }
            b'G' => {
                let v = f64::from_be_bytes(input.le::<8>()?);
                m.push_new(&input, Value::Float(v))?;
            }
            0x8c => {
                let n = input.byte()?;
                let b = input.bytes(n.into())?;
                let v = text(&input, b)?;
                m.push_new(&input, v)?;
            }
            b'X' => {
                let n = u32::from_le_bytes(input.le::<4>()?);
                let b = input.bytes(n.into())?;
                let v = text(&input, b)?;
                m.push_new(&input, v)?;
            }
            0x8d => {
                let n = u64::from_le_bytes(input.le::<8>()?);
                let b = input.bytes(n)?;
                let v = text(&input, b)?;
                m.push_new(&input, v)?;
            }
            b'C' | b'U' => {
                let n = input.byte()?;
                let b = input.bytes(n.into())?;
                m.push_new(&input, Value::Bytes(b.into_boxed_slice()))?;
            }
            b'B' | b'T' => {
                let n = u32::from_le_bytes(input.le::<4>()?);
                let b = input.bytes(n.into())?;
                m.push_new(&input, Value::Bytes(b.into_boxed_slice()))?;
            }
            0x8e => {
                let n = u64::from_le_bytes(input.le::<8>()?);
                let b = input.bytes(n)?;
                m.push_new(&input, Value::Bytes(b.into_boxed_slice()))?;
            }
            b']' => m.push_new(&input, Value::List(Vec::new()))?,
            b')' => m.push_new(&input, Value::Tuple(Vec::new()))?,
            b'}' => m.push_new(&input, Value::Dict(Vec::new()))?,
            0x8f => m.push_new(&input, Value::Set(Vec::new()))?,
            b'l' => {
                let items = m.pop_mark(&input, name)?;
                m.push_new(&input, Value::List(items))?;
            }
            b't' => {
                let items = m.pop_mark(&input, name)?;
                m.push_new(&input, Value::Tuple(items))?;
            }
            0x91 => {
                let items = m.pop_mark(&input, name)?;
                m.push_new(&input, Value::Set(items))?;
            }
            b'd' => {
                let items = m.pop_mark(&input, name)?;
                if items.len() & 1 != 0 {
                    return Err(input.err("DICT with an odd number of items".into()));
                }
                m.push_new(&input, Value::Dict(items))?;
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let floor = m.marks.last().copied().unwrap_or(0);
                if m.stack.len() < floor + n {
                    return Err(input.err(format!("{name} on a short stack: malformed pickle")));
                }
                let items = m.stack.split_off(m.stack.len() - n);
                m.push_new(&input, Value::Tuple(items))?;
            }
            b'a' => {
                let item = m.pop(&input, name)?;
                let list = m.top(&input, name)?;
                m.extend(&input, list, vec![item], name)?;
            }
            b's' => {
                let value = m.pop(&input, name)?;
                let key = m.pop(&input, name)?;
                let dict = m.top(&input, name)?;
                m.extend(&input, dict, vec![key, value], name)?;
            }
            b'e' | b'u' | 0x90 => {
                let items = m.pop_mark(&input, name)?;
                let target = m.top(&input, name)?;
                m.extend(&input, target, items, name)?;
            }
            b'q' => {
                let k = input.byte()?;
                m.memo_put(&input, k.into(), name)?;
            }
            b'r' => {
                let k = u32::from_le_bytes(input.le::<4>()?);
                m.memo_put(&input, k.into(), name)?;
            }
            0x94 => {
                let k = m.memo.len() as u64;
                m.memo_put(&input, k, name)?;
            }
            b'h' => {
                let k = input.byte()?;
                m.memo_get(&input, k.into())?;
            }
            b'j' => {
                let k = u32::from_le_bytes(input.le::<4>()?);
                m.memo_get(&input, k.into())?;
            }
            b'c' | b'i' => {
                let module = input.line()?;
                let attr = input.line()?;
                return Err(PickleError {
                    offset: at,
                    reason: format!(
                        "refused opcode {name}: it imports '{module}.{attr}' (a memory \
                         snapshot holds plain data only; poolbench never imports or calls \
                         anything from a pickle)"
                    ),
                    io: None,
                });
            }
            0x93 => {
                let found = match m.stack.as_slice() {
                    [.., module, attr] => match (m.str_value(*module), m.str_value(*attr)) {
                        (Some(module), Some(attr)) => format!(" '{module}.{attr}'"),
                        _ => String::new(),
                    },
                    _ => String::new(),
                };
                return Err(PickleError {
                    offset: at,
                    reason: format!(
                        "refused opcode STACK_GLOBAL: it imports{found} (a memory snapshot \
                         holds plain data only; poolbench never imports or calls anything \
                         from a pickle)"
                    ),
                    io: None,
                });
            }
            _ => {
                let why = match op {
                    b'R' | b'b' | b'o' | 0x81 | 0x92 => "it calls code from the pickle",
                    b'P' | b'Q' => "persistent ids need the writer's own loader",
                    0x82..=0x84 => "the extension registry imports objects",
                    b'F' | b'I' | b'L' | b'S' | b'V' | b'p' | b'g' => {
                        "protocol 0 text opcodes are not read (PyTorch writes protocol 2 or later)"
                    }
                    _ => "out-of-band buffers and bytearrays are not snapshot data",
                };
                return Err(PickleError {
                    offset: at,
                    reason: format!("refused opcode {name} (0x{op:02x}): {why}"),
                    io: None,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_bytes(b: &[u8]) -> Result<Pickle, PickleError> {
        decode(&mut &b[..])
    }

    #[test]
    fn plain_values() {
        // pickle.dumps({'a': [1, -2, 70000, None, True], 'b': (1.5, 'x')}, protocol=4)
        let p = b"\x80\x04\x95\x2d\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01a\x94]\x94(K\x01J\xfe\xff\xff\xffJp\x11\x01\x00N\x88e\x8c\x01b\x94G?\xf8\x00\x00\x00\x00\x00\x00\x8c\x01x\x94\x86\x94u.";
        let v = decode_bytes(p).unwrap();
        let Value::Dict(items) = v.get(v.root) else {
            panic!("not a dict")
        };
        assert_eq!(items.len(), 4);
        assert_eq!(v.get(items[0]), &Value::Str("a".into()));
        let Value::List(list) = v.get(items[1]) else {
            panic!()
        };
        let got: Vec<_> = list.iter().map(|&i| v.get(i).clone()).collect();
        assert_eq!(
            got,
            vec![
                Value::Int(1),
                Value::Int(-2),
                Value::Int(70000),
                Value::None,
                Value::Bool(true)
            ]
        );
        let Value::Tuple(t) = v.get(items[3]) else {
            panic!()
        };
        assert_eq!(v.get(t[0]), &Value::Float(1.5));
    }

    #[test]
    fn long1_sign_and_width() {
        assert_eq!(int_le(&[0xff]), Value::Int(-1));
        assert_eq!(int_le(&[0x00, 0x80]), Value::Int(-32768));
        assert_eq!(int_le(&[0xff, 0x00]), Value::Int(255));
        assert_eq!(
            int_le(&[0, 0, 0, 0, 0, 0, 0, 0x80, 0xff]),
            Value::Int(i64::MIN)
        );
        assert_eq!(int_le(&[0, 0, 0, 0, 0, 0, 0, 0, 1]), Value::BigInt);
    }

    #[test]
    fn refuses_code() {
        let e = decode_bytes(b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85q\x02Rq\x03.")
            .unwrap_err();
        assert!(
            e.reason.contains("GLOBAL") && e.reason.contains("os.system"),
            "{}",
            e.reason
        );
        assert_eq!(e.offset, 2);
        let e = decode_bytes(b"\x80\x04\x8c\x02os\x8c\x06system\x93.").unwrap_err();
        assert!(e.reason.contains("STACK_GLOBAL") && e.reason.contains("os.system"));
        let e = decode_bytes(b"\x80\x04]\x94)R.").unwrap_err();
        assert!(e.reason.contains("REDUCE"), "{}", e.reason);
        let e = decode_bytes(b"\x80\x04\xff").unwrap_err();
        assert!(e.reason.contains("unknown opcode 0xff"), "{}", e.reason);
    }

    #[test]
    fn malformed_is_an_error() {
        for bad in [
            &b"\x80\x04"[..],
            b"\x80\x04.",
            b"\x80\x04a.",
            b"\x80\x04K\x01e.",
            b"\x80\x04h\x07.",
            b"\x80\x04X\xff\xff\xff\x7f",
            b"\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\xff",
            b"\x80\x04K\x01K\x02a.",
            b"\x80\x09.",
        ] {
            assert!(decode_bytes(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn memo_shares_instead_of_copying() {
        // A list appended to itself many times: each append is a memo get (shared id).
        let mut p = b"\x80\x04]\x94".to_vec();
        for _ in 0..100_000 {
            p.extend_from_slice(b"h\x00a");
        }
        p.push(b'.');
        let v = decode_bytes(&p).unwrap();
        assert_eq!(v.values.len(), 1);
    }

    #[test]
    fn deep_nesting_drops_without_recursion() {
        // [[[[...]]]] a million deep, built with memo gets: dropping must not overflow.
        let mut p = b"\x80\x04]\x94".to_vec();
        for i in 0..1_000_000u32 {
            p.push(b'j');
            p.extend_from_slice(&i.to_le_bytes());
            p.extend_from_slice(b"]\x94a0");
        }
        p.extend_from_slice(b"j\x00\x00\x00\x00.");
        let v = decode_bytes(&p).unwrap();
        assert_eq!(v.values.len(), 1_000_001);
        drop(v);
    }
}
