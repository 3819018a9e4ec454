//! Python's text formats, as ChatGLM3's protocol needs them: a parser of Python literals (the
//! subset `ast.literal_eval` accepts in a `tool_call(...)`), `repr` of JSON values, and
//! `json.dumps(indent=4, ensure_ascii=False)` with Python's float `repr`. One home for Python
//! formatting; the protocol itself (what a `tool_call` is) lives in `agent`.

use serde_json::{Map, Number, Value};

/// Why a `tool_call(...)` did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed tool call at byte {pos}: {msg}")]
pub struct CallError {
    pub pos: usize,
    pub msg: String,
}

pub(crate) struct Parser<'a> {
    pub(crate) s: &'a [u8],
    pub(crate) src: &'a str,
    pub(crate) i: usize,
    pub(crate) base: usize,
    /// Nesting of the value being read (lists, dicts, signs): capped like Python's parser,
    /// so a hostile reply cannot overflow the stack.
    pub(crate) depth: usize,
}

/// The deepest nesting of a literal (CPython's parser stops near 200).
const MAX_DEPTH: usize = 100;

impl Parser<'_> {
    pub(crate) fn err(&self, msg: &str) -> CallError {
        let near: String = self.src[self.i.min(self.src.len())..]
            .chars()
            .take(20)
            .collect();
        CallError {
            pos: self.base + self.i,
            msg: if near.is_empty() {
                format!("{msg} (at the end)")
            } else {
                format!("{msg} (near {near:?})")
            },
        }
    }
    pub(crate) fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    pub(crate) fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    pub(crate) fn expect(&mut self, c: u8) -> Result<(), CallError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.err(&format!("expected {:?}", c as char)))
        }
    }
    /// Whitespace (newlines included: everything is inside brackets) and `#` comments.
    pub(crate) fn ws(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => self.i += 1,
                b'\\' if self.s.get(self.i + 1) == Some(&b'\n') => self.i += 2,
                b'#' => {
                    while self.peek().is_some_and(|c| c != b'\n') {
                        self.i += 1;
                    }
                }
                _ => break,
            }
        }
    }
    pub(crate) fn ident(&mut self) -> Option<String> {
        let rest = &self.src[self.i..];
        let mut end = 0;
        for (k, ch) in rest.char_indices() {
            let ok = if k == 0 {
                ch == '_' || ch.is_alphabetic()
            } else {
                ch == '_' || ch.is_alphanumeric()
            };
            if !ok {
                break;
            }
            end = k + ch.len_utf8();
        }
        if end == 0 {
            return None;
        }
        self.i += end;
        Some(rest[..end].to_string())
    }
    pub(crate) fn eat_word(&mut self, w: &str) -> bool {
        let save = self.i;
        match self.ident() {
            Some(id) if id == w => true,
            _ => {
                self.i = save;
                false
            }
        }
    }

    pub(crate) fn value(&mut self) -> Result<Value, CallError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.err(&format!("a value nested more than {MAX_DEPTH} levels deep")));
        }
        self.depth += 1;
        let v = self.value_inner();
        self.depth -= 1;
        v
    }

    fn value_inner(&mut self) -> Result<Value, CallError> {
        self.ws();
        let start = self.i;
        match self.peek() {
            None => Err(self.err("expected a value")),
            Some(b'[') => {
                self.i += 1;
                Ok(Value::Array(self.items(b']')?))
            }
            Some(b'(') => {
                self.i += 1;
                self.ws();
                if self.eat(b')') {
                    return Ok(Value::Array(vec![]));
                }
                let first = self.value()?;
                self.ws();
                if self.eat(b')') {
                    return Ok(first); // parenthesized expression, not a tuple
                }
                self.expect(b',')?;
                let mut v = vec![first];
                v.extend(self.items(b')')?);
                Ok(Value::Array(v))
            }
            Some(b'{') => {
                self.i += 1;
                self.dict()
            }
            Some(b'-') | Some(b'+') => {
                let neg = self.peek() == Some(b'-');
                self.i += 1;
                self.ws();
                match self.value()? {
                    Value::Number(n) if neg => negate(&n).ok_or_else(|| {
                        self.i = start;
                        self.err("number out of range")
                    }),
                    v @ Value::Number(_) => Ok(v),
                    _ => {
                        self.i = start;
                        Err(self.err("unary sign on a non-number"))
                    }
                }
            }
            Some(c) if c.is_ascii_digit() || c == b'.' => self.number(),
            Some(b'\'') | Some(b'"') => self.strings(),
            Some(_) => {
                let save = self.i;
                let Some(id) = self.ident() else {
                    return Err(self.err("expected a literal value"));
                };
                match id.as_str() {
                    "True" => Ok(Value::Bool(true)),
                    "False" => Ok(Value::Bool(false)),
                    "None" => Ok(Value::Null),
                    _ if matches!(self.peek(), Some(b'\'') | Some(b'"'))
                        && matches!(id.to_ascii_lowercase().as_str(), "r" | "u") =>
                    {
                        self.i = save;
                        self.strings()
                    }
                    _ => {
                        self.i = save;
                        Err(self.err(&format!(
                            "only literals are allowed, not the name or expression {id:?}"
                        )))
                    }
                }
            }
        }
    }

    /// Comma-separated values up to `close` (trailing comma allowed); `[`/`(` already eaten.
    pub(crate) fn items(&mut self, close: u8) -> Result<Vec<Value>, CallError> {
        let mut v = Vec::new();
        loop {
            self.ws();
            if self.eat(close) {
                return Ok(v);
            }
            v.push(self.value()?);
            self.ws();
            if !self.eat(b',') {
                self.ws();
                self.expect(close)?;
                return Ok(v);
            }
        }
    }

    pub(crate) fn dict(&mut self) -> Result<Value, CallError> {
        let mut m = Map::new();
        loop {
            self.ws();
            if self.eat(b'}') {
                return Ok(Value::Object(m));
            }
            let kpos = self.i;
            let key = match self.value()? {
                Value::String(s) => s,
                // json.dumps turns these keys into strings the same way.
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Null => "null".into(),
                _ => {
                    self.i = kpos;
                    return Err(self.err("dict keys must be strings, numbers, booleans or None"));
                }
            };
            self.ws();
            if !self.eat(b':') {
                return Err(self.err("expected ':' (sets are not supported)"));
            }
            let v = self.value()?;
            m.insert(key, v);
            self.ws();
            if !self.eat(b',') {
                self.ws();
                self.expect(b'}')?;
                return Ok(Value::Object(m));
            }
        }
    }

    pub(crate) fn number(&mut self) -> Result<Value, CallError> {
        let start = self.i;
        let rest = &self.s[self.i..];
        let radix = match rest {
            [b'0', b'x' | b'X', ..] => 16,
            [b'0', b'o' | b'O', ..] => 8,
            [b'0', b'b' | b'B', ..] => 2,
            _ => 10,
        };
        if radix != 10 {
            self.i += 2;
            let d0 = self.i;
            while self
                .peek()
                .is_some_and(|c| c == b'_' || (c as char).is_digit(radix))
            {
                self.i += 1;
            }
            let digits: String = self.src[d0..self.i].chars().filter(|&c| c != '_').collect();
            return u64::from_str_radix(&digits, radix)
                .map(Value::from)
                .map_err(|_| {
                    self.i = start;
                    self.err("bad or too large integer literal")
                });
        }
        let mut is_float = false;
        while let Some(c) = self.peek() {
            match c {
                b'0'..=b'9' | b'_' => self.i += 1,
                b'.' => {
                    is_float = true;
                    self.i += 1;
                }
                b'e' | b'E' => {
                    is_float = true;
                    self.i += 1;
                    if matches!(self.peek(), Some(b'+') | Some(b'-')) {
                        self.i += 1;
                    }
                }
                _ => break,
            }
        }
        if self
            .peek()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        {
            return Err(self.err("bad number literal"));
        }
        let text: String = self.src[start..self.i]
            .chars()
            .filter(|&c| c != '_')
            .collect();
        let bad = |p: &mut Self| {
            p.i = start;
            p.err("bad number literal")
        };
        if is_float {
            let f: f64 = text.parse().map_err(|_| bad(self))?;
            if !f.is_finite() {
                return Err(bad(self));
            }
            Number::from_f64(f)
                .map(Value::Number)
                .ok_or_else(|| bad(self))
        } else {
            if text.len() > 1 && text.starts_with('0') && text.bytes().any(|b| b != b'0') {
                return Err(bad(self)); // Python 3 has no 0777 literals
            }
            match text.parse::<u64>() {
                Ok(u) => Ok(Value::from(u)),
                Err(_) => {
                    self.i = start;
                    Err(self.err("integer too large"))
                }
            }
        }
    }

    /// One or more adjacent string literals, concatenated as Python does.
    pub(crate) fn strings(&mut self) -> Result<Value, CallError> {
        let mut out = String::new();
        loop {
            self.string(&mut out)?;
            let save = self.i;
            self.ws();
            let prefixed = matches!(self.peek(), Some(b'r' | b'R' | b'u' | b'U'))
                && matches!(self.s.get(self.i + 1), Some(b'\'' | b'"'));
            if !(prefixed || matches!(self.peek(), Some(b'\'' | b'"'))) {
                self.i = save;
                return Ok(Value::String(out));
            }
        }
    }

    pub(crate) fn string(&mut self, out: &mut String) -> Result<(), CallError> {
        let start = self.i;
        let mut raw = false;
        if let Some(c) = self.peek() {
            if c.eq_ignore_ascii_case(&b'r') {
                raw = true;
                self.i += 1;
            } else if c.eq_ignore_ascii_case(&b'u') {
                self.i += 1;
            }
        }
        let q = self.peek().ok_or_else(|| self.err("expected a string"))?;
        let triple = self.s[self.i..].starts_with(&[q, q, q]);
        self.i += if triple { 3 } else { 1 };
        loop {
            let Some(c) = self.peek() else {
                self.i = start;
                return Err(self.err("unterminated string"));
            };
            if c == q && (!triple || self.s[self.i..].starts_with(&[q, q, q])) {
                self.i += if triple { 3 } else { 1 };
                return Ok(());
            }
            if c == b'\n' && !triple {
                self.i = start;
                return Err(self.err("unterminated string (newline in a single-quoted string)"));
            }
            if c == b'\\' {
                let Some(&e) = self.s.get(self.i + 1) else {
                    self.i = start;
                    return Err(self.err("unterminated string"));
                };
                if raw {
                    // Raw strings keep the backslash; it still protects a quote.
                    out.push('\\');
                    self.i += 1;
                    let ch = self.src[self.i..].chars().next().unwrap_or('\\');
                    out.push(ch);
                    self.i += ch.len_utf8();
                    continue;
                }
                self.i += 2;
                match e {
                    b'\n' => {}
                    b'\\' => out.push('\\'),
                    b'\'' => out.push('\''),
                    b'"' => out.push('"'),
                    b'a' => out.push('\x07'),
                    b'b' => out.push('\x08'),
                    b'f' => out.push('\x0c'),
                    b'n' => out.push('\n'),
                    b'r' => out.push('\r'),
                    b't' => out.push('\t'),
                    b'v' => out.push('\x0b'),
                    b'0'..=b'7' => {
                        let mut v = (e - b'0') as u32;
                        for _ in 0..2 {
                            match self.peek() {
                                Some(d @ b'0'..=b'7') => {
                                    v = v * 8 + (d - b'0') as u32;
                                    self.i += 1;
                                }
                                _ => break,
                            }
                        }
                        out.push(char::from_u32(v).unwrap_or('\u{fffd}'));
                    }
                    b'x' | b'u' | b'U' => {
                        let n = match e {
                            b'x' => 2,
                            b'u' => 4,
                            _ => 8,
                        };
                        let hex = self.src.get(self.i..self.i + n).unwrap_or("");
                        let ch = u32::from_str_radix(hex, 16)
                            .ok()
                            .filter(|_| {
                                hex.len() == n && hex.bytes().all(|b| b.is_ascii_hexdigit())
                            })
                            .and_then(char::from_u32);
                        match ch {
                            Some(ch) => {
                                out.push(ch);
                                self.i += n;
                            }
                            None => {
                                self.i -= 2;
                                return Err(self.err(&format!(
                                    "bad \\{} escape (expected {n} hex digits)",
                                    e as char
                                )));
                            }
                        }
                    }
                    b'N' => {
                        self.i -= 2;
                        return Err(self.err("\\N{...} escapes are not supported"));
                    }
                    _ => {
                        // Unknown escapes keep the backslash (Python warns, but does this).
                        self.i -= 1;
                        out.push('\\');
                    }
                }
                continue;
            }
            let ch = self.src[self.i..].chars().next().unwrap_or('\u{fffd}');
            out.push(ch);
            self.i += ch.len_utf8();
        }
    }
}

fn negate(n: &Number) -> Option<Value> {
    if let Some(u) = n.as_u64() {
        if u <= i64::MAX as u64 {
            return Some(Value::from(-(u as i64)));
        }
        if u == i64::MAX as u64 + 1 {
            return Some(Value::from(i64::MIN));
        }
        return None;
    }
    if let Some(i) = n.as_i64() {
        return i.checked_neg().map(Value::from);
    }
    n.as_f64()
        .and_then(|f| Number::from_f64(-f))
        .map(Value::Number)
}

/// Python's `repr` of the value `json.loads` gives for `v`.
pub fn python_repr(v: &Value) -> String {
    let mut s = String::new();
    write_repr(v, &mut s);
    s
}

fn write_repr(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("None"),
        Value::Bool(b) => out.push_str(if *b { "True" } else { "False" }),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => out.push_str(&i.to_string()),
            (_, Some(u), _) => out.push_str(&u.to_string()),
            (_, _, Some(f)) => {
                let r = python_float_repr(f);
                out.push_str(match r.as_str() {
                    "Infinity" => "inf",
                    "-Infinity" => "-inf",
                    "NaN" => "nan",
                    _ => &r,
                });
            }
            _ => out.push_str(&n.to_string()),
        },
        Value::String(s) => out.push_str(&python_str_repr(s)),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(x, out);
            }
            out.push(']');
        }
        Value::Object(o) => {
            out.push('{');
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&python_str_repr(k));
                out.push_str(": ");
                write_repr(x, out);
            }
            out.push('}');
        }
    }
}

/// Python's `repr(str)`: single quotes unless the text has `'` and no `"`; `\\`, `\n`, `\r`,
/// `\t` and other control characters escaped; printable non-ASCII kept.
pub fn python_str_repr(s: &str) -> String {
    let q = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(q);
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == q => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || (0x7f..0xa0).contains(&(c as u32)) => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if matches!(c, '\u{2028}' | '\u{2029}' | '\u{ad}') => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(q);
    out
}

/// `json.dumps(v, indent=4, ensure_ascii=False)` of Python, byte for byte: separators
/// `","` (at line ends) and `": "`, non-ASCII kept, key order kept, floats as Python's `repr`
/// (`1.0`, `1e-05`, `1e+16`).
pub fn python_json_dumps(v: &Value) -> String {
    let mut out = String::new();
    write_json(v, 0, &mut out);
    out
}

fn indent(level: usize, out: &mut String) {
    out.push('\n');
    for _ in 0..level {
        out.push_str("    ");
    }
}

fn write_json(v: &Value, level: usize, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else if let Some(f) = n.as_f64() {
                out.push_str(&python_float_repr(f));
            } else {
                out.push_str(&n.to_string());
            }
        }
        // serde_json escapes exactly Python's set: \" \\ \b \f \n \r \t and \u00xx for the
        // other control characters; everything else (non-ASCII included) is kept.
        Value::String(s) => out.push_str(&serde_json::to_string(s).unwrap_or_default()),
        Value::Array(a) => {
            if a.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                indent(level + 1, out);
                write_json(x, level + 1, out);
            }
            indent(level, out);
            out.push(']');
        }
        Value::Object(o) => {
            if o.is_empty() {
                out.push_str("{}");
                return;
            }
            out.push('{');
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                indent(level + 1, out);
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push_str(": ");
                write_json(x, level + 1, out);
            }
            indent(level, out);
            out.push('}');
        }
    }
}

/// Python's `repr(float)`: the shortest round-trip digits, positional when the decimal
/// exponent is in -4..16, else `d.ddde±XX`.
pub fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e-7", "1e16", "0e0".
    let e = format!("{:e}", f);
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mant) = match mant.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mant),
    };
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let decpt = exp + 1; // value = 0.d1d2... * 10^decpt
    let mut s = String::new();
    if neg {
        s.push('-');
    }
    if f != 0.0 && (decpt <= -4 || decpt > 16) {
        s.push_str(&digits[..1]);
        if digits.len() > 1 {
            s.push('.');
            s.push_str(&digits[1..]);
        }
        let x = decpt - 1;
        s.push('e');
        s.push(if x < 0 { '-' } else { '+' });
        s.push_str(&format!("{:02}", x.abs()));
    } else if decpt <= 0 {
        s.push_str("0.");
        for _ in 0..(-decpt) {
            s.push('0');
        }
        s.push_str(&digits);
    } else {
        let d = decpt as usize;
        if digits.len() <= d {
            s.push_str(&digits);
            for _ in digits.len()..d {
                s.push('0');
            }
            s.push_str(".0");
        } else {
            s.push_str(&digits[..d]);
            s.push('.');
            s.push_str(&digits[d..]);
        }
    }
    s
}
