//! A restricted reader for the pickles inside PyTorch `.pth` files.
//!
//! It understands the opcodes `torch.save` emits (protocols 2–5) and rebuilds only plain data:
//! numbers, strings, containers, and tensors as references into the archive's storages. Any other
//! class a pickle names is kept as an inert [`Value::Object`]; nothing is ever imported or called,
//! unlike Python's `pickle.load`. (`serde-pickle` cannot read these files: it has no persistent ids,
//! which is how PyTorch refers to tensor storages.)

use std::collections::HashMap;

/// A tensor storage in the archive (`data/<key>`), as the persistent id describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageRef {
    pub key: String,
    /// The storage class name, e.g. `FloatStorage`.
    pub dtype: String,
    pub numel: i64,
}

/// A view into a storage, as `torch._utils._rebuild_tensor_v2` describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    pub storage: StorageRef,
    pub offset: i64,
    pub size: Vec<i64>,
    pub stride: Vec<i64>,
}

/// A decoded pickle value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    /// A class or function the pickle names (module, name); never resolved.
    Global(String, String),
    /// An instance of a class we do not rebuild, with its constructor arguments and state.
    Object {
        class: Box<Value>,
        args: Vec<Value>,
        state: Option<Box<Value>>,
    },
    Storage(StorageRef),
    Tensor(TensorRef),
}

/// Why a pickle could not be read.
#[derive(Debug)]
pub struct PickleError(pub String);

type Result<T> = std::result::Result<T, PickleError>;

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(PickleError(msg.into()))
}

enum Item {
    Mark,
    Value(Value),
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.pos + n > self.data.len() {
            return err("the pickle ends early (truncated file?)");
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn line(&mut self) -> Result<String> {
        let rest = &self.data[self.pos..];
        let n = rest.iter().position(|&b| b == b'\n').ok_or_else(|| PickleError("unterminated line".into()))?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }
    fn string(&mut self, n: usize) -> Result<String> {
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| PickleError("a string is not UTF-8".into()))
    }
}

/// Little-endian two's complement integer of `bytes` (LONG1/LONG4); `None` when over 64 bits.
fn long(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() {
        return Some(0);
    }
    if bytes.len() > 8 {
        return None;
    }
    let neg = bytes[bytes.len() - 1] & 0x80 != 0;
    let mut buf = [if neg { 0xff } else { 0 }; 8];
    buf[..bytes.len()].copy_from_slice(bytes);
    Some(i64::from_le_bytes(buf))
}

/// Decodes one pickle.
// One function on purpose: the pickle machine is one loop over opcodes, an arm each, sharing
// the stack, the mark list and the memo; split up, each arm would take all three.
pub fn parse(data: &[u8]) -> Result<Value> {
    let mut r = Reader { data, pos: 0 };
    let mut stack: Vec<Item> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();

    fn pop(stack: &mut Vec<Item>) -> Result<Value> {
        match stack.pop() {
            Some(Item::Value(v)) => Ok(v),
            Some(Item::Mark) => err("unexpected mark on the stack"),
            None => err("stack underflow"),
        }
    }
    fn pop_mark(stack: &mut Vec<Item>) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        loop {
            match stack.pop() {
                Some(Item::Value(v)) => out.push(v),
                Some(Item::Mark) => break,
                None => return err("mark not found"),
            }
        }
        out.reverse();
        Ok(out)
    }
    fn top(stack: &mut [Item]) -> Result<&mut Value> {
        match stack.last_mut() {
            Some(Item::Value(v)) => Ok(v),
            _ => err("no value on the stack"),
        }
    }
    fn push(stack: &mut Vec<Item>, v: Value) {
        stack.push(Item::Value(v));
    }

    loop {
        let op = r.u8()?;
        match op {
            0x80 => {
                r.u8()?; // PROTO
            }
            0x95 => {
                r.u64()?; // FRAME
            }
            b'.' => return pop(&mut stack), // STOP
            b'(' => stack.push(Item::Mark),
            b'0' => {
                pop(&mut stack)?;
            }
            b'1' => {
                pop_mark(&mut stack)?;
            }
            b'2' => {
                let v = top(&mut stack)?.clone();
                push(&mut stack, v);
            }
            b'N' => push(&mut stack, Value::None),
            0x88 => push(&mut stack, Value::Bool(true)),
            0x89 => push(&mut stack, Value::Bool(false)),
            b'J' => push(&mut stack, Value::Int(r.u32()? as i32 as i64)),
            b'K' => push(&mut stack, Value::Int(r.u8()? as i64)),
            b'M' => push(&mut stack, Value::Int(r.u16()? as i64)),
            0x8a | 0x8b => {
                let n = if op == 0x8a { r.u8()? as usize } else { r.u32()? as usize };
                let bytes = r.take(n)?;
                push(&mut stack, long(bytes).map_or(Value::Float(f64::NAN), Value::Int));
            }
            b'G' => push(&mut stack, Value::Float(f64::from_be_bytes(r.take(8)?.try_into().expect("8 bytes")))),
            b'X' => {
                let n = r.u32()? as usize;
                push(&mut stack, Value::Str(r.string(n)?));
            }
            0x8c => {
                let n = r.u8()? as usize;
                push(&mut stack, Value::Str(r.string(n)?));
            }
            0x8d => {
                let n = r.u64()? as usize;
                push(&mut stack, Value::Str(r.string(n)?));
            }
            b'T' | b'U' => {
                let n = if op == b'T' { r.u32()? as usize } else { r.u8()? as usize };
                push(&mut stack, Value::Str(String::from_utf8_lossy(r.take(n)?).into_owned()));
            }
            b'B' | b'C' | 0x8e => {
                let n = match op {
                    b'B' => r.u32()? as usize,
                    b'C' => r.u8()? as usize,
                    _ => r.u64()? as usize,
                };
                push(&mut stack, Value::Bytes(r.take(n)?.to_vec()));
            }
            b'}' => push(&mut stack, Value::Dict(Vec::new())),
            b']' => push(&mut stack, Value::List(Vec::new())),
            b')' => push(&mut stack, Value::Tuple(Vec::new())),
            0x8f => push(&mut stack, Value::List(Vec::new())), // EMPTY_SET
            b't' => {
                let items = pop_mark(&mut stack)?;
                push(&mut stack, Value::Tuple(items));
            }
            b'l' => {
                let items = pop_mark(&mut stack)?;
                push(&mut stack, Value::List(items));
            }
            0x91 => {
                let items = pop_mark(&mut stack)?; // FROZENSET
                push(&mut stack, Value::List(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = (0..n).map(|_| pop(&mut stack)).collect::<Result<Vec<_>>>()?;
                items.reverse();
                push(&mut stack, Value::Tuple(items));
            }
            b'd' => {
                let items = pop_mark(&mut stack)?;
                push(&mut stack, Value::Dict(pairs(items)?));
            }
            b'a' => {
                let v = pop(&mut stack)?;
                if let Value::List(l) = top(&mut stack)? {
                    l.push(v);
                }
            }
            b'e' | 0x90 => {
                let items = pop_mark(&mut stack)?; // APPENDS, ADDITEMS
                if let Value::List(l) = top(&mut stack)? {
                    l.extend(items);
                }
            }
            b's' => {
                let v = pop(&mut stack)?;
                let k = pop(&mut stack)?;
                if let Value::Dict(d) = top(&mut stack)? {
                    d.push((k, v));
                }
            }
            b'u' => {
                let items = pairs(pop_mark(&mut stack)?)?;
                if let Value::Dict(d) = top(&mut stack)? {
                    d.extend(items);
                }
            }
            b'q' => {
                let k = r.u8()? as u32;
                memo.insert(k, top(&mut stack)?.clone());
            }
            b'r' => {
                let k = r.u32()?;
                memo.insert(k, top(&mut stack)?.clone());
            }
            0x94 => {
                let k = memo.len() as u32; // MEMOIZE
                memo.insert(k, top(&mut stack)?.clone());
            }
            b'h' | b'j' => {
                let k = if op == b'h' { r.u8()? as u32 } else { r.u32()? };
                let v = memo.get(&k).cloned().ok_or_else(|| PickleError(format!("memo entry {k} is missing")))?;
                push(&mut stack, v);
            }
            b'c' => {
                let module = r.line()?;
                let name = r.line()?;
                push(&mut stack, Value::Global(module, name));
            }
            0x93 => {
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => push(&mut stack, Value::Global(m, n)),
                    _ => return err("STACK_GLOBAL needs two strings"),
                }
            }
            b'Q' => {
                let pid = pop(&mut stack)?;
                push(&mut stack, persistent(pid)?);
            }
            b'R' => {
                let args = match pop(&mut stack)? {
                    Value::Tuple(a) => a,
                    _ => return err("REDUCE needs an argument tuple"),
                };
                let callable = pop(&mut stack)?;
                push(&mut stack, reduce(callable, args)?);
            }
            0x81 => {
                let args = match pop(&mut stack)? {
                    Value::Tuple(a) => a,
                    other => vec![other],
                };
                let class = pop(&mut stack)?;
                push(&mut stack, Value::Object { class: Box::new(class), args, state: None });
            }
            0x92 => {
                let _kwargs = pop(&mut stack)?;
                let args = match pop(&mut stack)? {
                    Value::Tuple(a) => a,
                    other => vec![other],
                };
                let class = pop(&mut stack)?;
                push(&mut stack, Value::Object { class: Box::new(class), args, state: None });
            }
            b'b' => {
                let state = pop(&mut stack)?;
                // Dicts (an OrderedDict's `_metadata`) and tensors keep what they are; other
                // objects record their state as data.
                if let Value::Object { state: s, .. } = top(&mut stack)? {
                    *s = Some(Box::new(state));
                }
            }
            other => return err(format!("unsupported pickle opcode 0x{other:02x} at byte {}", r.pos - 1)),
        }
    }
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>> {
    if !items.len().is_multiple_of(2) {
        return err("a dict with an odd number of items");
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn int(v: &Value, what: &str) -> Result<i64> {
    match v {
        Value::Int(i) => Ok(*i),
        _ => err(format!("{what} is not an integer")),
    }
}

fn ints(v: &Value, what: &str) -> Result<Vec<i64>> {
    match v {
        Value::Tuple(items) | Value::List(items) => items.iter().map(|i| int(i, what)).collect(),
        _ => err(format!("{what} is not a tuple")),
    }
}

/// PyTorch's persistent id of a storage: ('storage', <class FloatStorage>, key, location, numel).
fn persistent(pid: Value) -> Result<Value> {
    let items = match pid {
        Value::Tuple(items) if items.len() >= 5 => items,
        other => return err(format!("unknown persistent id {other:?}")),
    };
    let dtype = match &items[1] {
        Value::Global(_, name) => name.clone(),
        other => return err(format!("storage type {other:?} is not a class name")),
    };
    let key = match &items[2] {
        Value::Str(s) => s.clone(),
        other => return err(format!("storage key {other:?} is not a string")),
    };
    Ok(Value::Storage(StorageRef { key, dtype, numel: int(&items[4], "storage size")? }))
}

/// Applies the few callables we rebuild as data; anything else stays an inert object.
fn reduce(callable: Value, args: Vec<Value>) -> Result<Value> {
    let (module, name) = match &callable {
        Value::Global(m, n) => (m.as_str(), n.as_str()),
        _ => return Ok(Value::Object { class: Box::new(callable), args, state: None }),
    };
    match (module, name) {
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor" | "_rebuild_tensor_v3") => {
            let storage = match args.first() {
                Some(Value::Storage(s)) => s.clone(),
                _ => return err("a tensor without a storage"),
            };
            if args.len() < 4 {
                return err("a tensor without size and stride");
            }
            Ok(Value::Tensor(TensorRef {
                storage,
                offset: int(&args[1], "storage offset")?,
                size: ints(&args[2], "tensor size")?,
                stride: ints(&args[3], "tensor stride")?,
            }))
        }
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            args.into_iter().next().ok_or_else(|| PickleError("a parameter without data".into()))
        }
        ("torch._tensor", "_rebuild_from_type_v2") => match args.into_iter().take(3).collect::<Vec<_>>().as_slice() {
            [func, _, Value::Tuple(inner)] => reduce(func.clone(), inner.clone()),
            _ => err("malformed _rebuild_from_type_v2"),
        },
        ("collections", "OrderedDict") if args.is_empty() => Ok(Value::Dict(Vec::new())),
        ("builtins" | "__builtin__", "set" | "frozenset" | "list" | "tuple") => {
            Ok(args.into_iter().next().unwrap_or(Value::List(Vec::new())))
        }
        _ => Ok(Value::Object { class: Box::new(callable), args, state: None }),
    }
}
