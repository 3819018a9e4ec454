//! GBNF (llama.cpp's grammar format) read with llama.cpp's rules and written as llguidance
//! Lark rules of the same language.
//!
//! GBNF, as llama.cpp's `llama_grammar_parser` reads it:
//!
//! * rules `name ::= alternatives`, names of `a-z A-Z 0-9 -`; `root` is the start; a rule ends
//!   at a newline, except inside parentheses and after `|`; `#` comments to the end of a line;
//! * items: `"literal"`, `[class]` / `[^class]` (ranges `a-z`; a `-` before `]` is itself),
//!   `.` (any character, newlines too), rule names, `( ... )` groups; each may be followed by
//!   `*`, `+`, `?`, `{m}`, `{m,}`, `{m,n}` (m at most 2,000; a larger n means no limit);
//! * escapes in literals and classes: `\x..`, `\u....`, `\U........`, `\t \r \n \\ \" \[ \] \-`.
//!
//! Token references (`<[id]>`, `<|name|>`, `!<...>`) are refused: they are not text.
//!
//! The Lark rules keep the language exact: each character (a literal's, a class's, `.`) is a
//! lexeme of its own and every repetition is a rule-level one, so llguidance's lexer, which
//! takes the longest match, never has to choose between two lexemes of different lengths.

use super::{lark_str, ConstraintError};
use std::collections::HashMap;

/// llama.cpp's `MAX_REPETITION_THRESHOLD`.
const MAX_REPETITION: u64 = 2000;

#[derive(Clone, Debug, PartialEq)]
enum Item {
    /// A literal's characters (possibly none).
    Literal(Vec<char>),
    /// A character class: negated or not, inclusive ranges.
    Class {
        negated: bool,
        ranges: Vec<(u32, u32)>,
    },
    /// `.`
    Any,
    /// A rule, by name.
    Rule(String),
    /// `( ... )`
    Group(Vec<Vec<Item>>),
    /// `item{min,max}` (`max` None: no limit).
    Repeat {
        item: Box<Item>,
        min: u64,
        max: Option<u64>,
    },
}

/// A GBNF rule set, parsed.
#[derive(Debug)]
struct Rules {
    /// In order of definition; a name defined twice keeps its last definition (llama.cpp).
    rules: Vec<(String, Vec<Vec<Item>>)>,
}

fn err(msg: impl Into<String>) -> ConstraintError {
    ConstraintError::Unsupported(format!("GBNF grammar: {}", msg.into()))
}

struct Reader<'a> {
    s: &'a str,
    i: usize,
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-'
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<char> {
        self.s[self.i..].chars().next()
    }
    fn peek2(&self) -> Option<char> {
        let mut it = self.s[self.i..].chars();
        it.next();
        it.next()
    }
    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.i += c.len_utf8();
        Some(c)
    }
    /// Line and column of the current position, for errors.
    fn at(&self) -> String {
        let before = &self.s[..self.i];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("line {line}, column {col}")
    }
    fn fail(&self, what: &str) -> ConstraintError {
        err(format!("{what} at {}", self.at()))
    }
    /// Blanks and comments; newlines too when `newline_ok`.
    fn space(&mut self, newline_ok: bool) {
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' => {
                    self.bump();
                }
                '#' => {
                    while self.peek().is_some_and(|c| c != '\r' && c != '\n') {
                        self.bump();
                    }
                }
                '\r' | '\n' if newline_ok => {
                    self.bump();
                }
                _ => break,
            }
        }
    }
    fn name(&mut self) -> Result<String, ConstraintError> {
        let start = self.i;
        while self.peek().is_some_and(is_word) {
            self.bump();
        }
        if start == self.i {
            return Err(self.fail("expected a rule name"));
        }
        Ok(self.s[start..self.i].to_string())
    }
    fn int(&mut self) -> Result<u64, ConstraintError> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
        }
        if start == self.i {
            return Err(self.fail("expected an integer"));
        }
        self.s[start..self.i]
            .parse()
            .map_err(|_| self.fail("integer too large"))
    }
    fn hex(&mut self, n: usize) -> Result<char, ConstraintError> {
        let mut v = 0u32;
        for _ in 0..n {
            let d = self
                .peek()
                .and_then(|c| c.to_digit(16))
                .ok_or_else(|| self.fail(&format!("expected {n} hex digits")))?;
            self.bump();
            v = v * 16 + d;
        }
        char::from_u32(v).ok_or_else(|| self.fail(&format!("U+{v:X} is not a character")))
    }
    /// One character of a literal or class, escapes read.
    fn char(&mut self) -> Result<char, ConstraintError> {
        match self.bump() {
            None => Err(self.fail("unexpected end of the grammar")),
            Some('\\') => match self.bump() {
                Some('x') => self.hex(2),
                Some('u') => self.hex(4),
                Some('U') => self.hex(8),
                Some('t') => Ok('\t'),
                Some('r') => Ok('\r'),
                Some('n') => Ok('\n'),
                Some(c @ ('\\' | '"' | '[' | ']' | '-')) => Ok(c),
                _ => Err(self.fail("unknown escape")),
            },
            Some(c) => Ok(c),
        }
    }

    fn rules(&mut self) -> Result<Rules, ConstraintError> {
        let mut rules: Vec<(String, Vec<Vec<Item>>)> = Vec::new();
        self.space(true);
        while self.peek().is_some() {
            let name = self.name()?;
            self.space(false);
            if !self.s[self.i..].starts_with("::=") {
                return Err(self.fail("expected ::="));
            }
            self.i += 3;
            self.space(true);
            let alts = self.alternates(false)?;
            match self.peek() {
                None => {}
                Some('\r') | Some('\n') => {
                    self.bump();
                }
                Some(_) => return Err(self.fail("expected a newline or the end")),
            }
            self.space(true);
            match rules.iter_mut().find(|(n, _)| *n == name) {
                Some(r) => r.1 = alts,
                None => rules.push((name, alts)),
            }
        }
        Ok(Rules { rules })
    }

    fn alternates(&mut self, nested: bool) -> Result<Vec<Vec<Item>>, ConstraintError> {
        let mut alts = vec![self.sequence(nested)?];
        while self.peek() == Some('|') {
            self.bump();
            self.space(true);
            alts.push(self.sequence(nested)?);
        }
        Ok(alts)
    }

    fn sequence(&mut self, nested: bool) -> Result<Vec<Item>, ConstraintError> {
        let mut seq: Vec<Item> = Vec::new();
        while let Some(c) = self.peek() {
            let item = match c {
                '"' => {
                    self.bump();
                    let mut chars = Vec::new();
                    while self.peek() != Some('"') {
                        chars.push(self.char()?);
                    }
                    self.bump();
                    Item::Literal(chars)
                }
                '[' => {
                    self.bump();
                    let negated = self.peek() == Some('^');
                    if negated {
                        self.bump();
                    }
                    let mut ranges = Vec::new();
                    while self.peek() != Some(']') {
                        let lo = self.char()?;
                        let mut hi = lo;
                        if self.peek() == Some('-') && self.peek2().is_some_and(|c| c != ']') {
                            self.bump();
                            hi = self.char()?;
                        }
                        ranges.push((lo as u32, hi as u32));
                    }
                    self.bump();
                    Item::Class { negated, ranges }
                }
                '<' | '!' => {
                    return Err(self.fail(
                        "token references (<[id]>, <name>, !<...>) are not supported; write the text instead",
                    ))
                }
                c if is_word(c) => Item::Rule(self.name()?),
                '(' => {
                    self.bump();
                    self.space(true);
                    let alts = self.alternates(true)?;
                    if self.peek() != Some(')') {
                        return Err(self.fail("expected ')'"));
                    }
                    self.bump();
                    Item::Group(alts)
                }
                '.' => {
                    self.bump();
                    Item::Any
                }
                '*' | '+' | '?' | '{' => {
                    let (min, max) = self.repetition()?;
                    let Some(last) = seq.pop() else {
                        return Err(self.fail("expected an item before */+/?/{"));
                    };
                    seq.push(Item::Repeat {
                        item: Box::new(last),
                        min,
                        max,
                    });
                    self.space(nested);
                    continue;
                }
                _ => break,
            };
            seq.push(item);
            self.space(nested);
        }
        Ok(seq)
    }

    /// `*`, `+`, `?`, `{m}`, `{m,}`, `{m,n}` as (min, max).
    fn repetition(&mut self) -> Result<(u64, Option<u64>), ConstraintError> {
        let op = self.bump();
        match op {
            Some('*') => return Ok((0, None)),
            Some('+') => return Ok((1, None)),
            Some('?') => return Ok((0, Some(1))),
            _ => {}
        }
        self.space(false);
        let min = self.int()?;
        self.space(false);
        let max = match self.bump() {
            Some('}') => Some(min),
            Some(',') => {
                self.space(false);
                let max = if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    Some(self.int()?)
                } else {
                    None
                };
                self.space(false);
                if self.bump() != Some('}') {
                    return Err(self.fail("expected '}'"));
                }
                max
            }
            _ => return Err(self.fail("expected ',' or '}'")),
        };
        if min > MAX_REPETITION {
            return Err(self.fail(&format!("{min} repetitions: more than {MAX_REPETITION}")));
        }
        if max.is_some_and(|m| m < min) {
            return Err(self.fail("a repetition's maximum is below its minimum"));
        }
        Ok((min, max.filter(|&m| m <= MAX_REPETITION)))
    }
}

/// Writes Lark rules for a GBNF grammar; `start` becomes the rule that matches `root`.
pub fn to_lark(text: &str, start: &str) -> Result<String, ConstraintError> {
    let rules = Reader { s: text, i: 0 }.rules()?;
    if !rules.rules.iter().any(|(n, _)| n == "root") {
        return Err(err("no root rule (the start is `root ::= ...`)"));
    }
    // every GBNF name gets a Lark name of its own (Lark names are lowercase)
    let mut names: HashMap<&str, String> = HashMap::new();
    for (i, (n, _)) in rules.rules.iter().enumerate() {
        let clean: String = n
            .chars()
            .map(|c| match c {
                'A'..='Z' => c.to_ascii_lowercase(),
                '-' => '_',
                c => c,
            })
            .collect();
        names.insert(n.as_str(), format!("g{i}_{clean}"));
    }
    let mut out = format!("{start}: {}\n", names["root"]);
    for (n, alts) in &rules.rules {
        out.push_str(&format!(
            "{}: {}\n",
            names[n.as_str()],
            alternatives(alts, &names)?
        ));
    }
    Ok(out)
}

fn alternatives(
    alts: &[Vec<Item>],
    names: &HashMap<&str, String>,
) -> Result<String, ConstraintError> {
    let mut parts = Vec::new();
    for seq in alts {
        let items = seq
            .iter()
            .map(|item| lark_item(item, names))
            .collect::<Result<Vec<_>, _>>()?;
        let items: Vec<String> = items.into_iter().filter(|s| !s.is_empty()).collect();
        // an empty alternative matches the empty string
        parts.push(if items.is_empty() {
            "\"\"".to_string()
        } else {
            items.join(" ")
        });
    }
    Ok(parts.join(" | "))
}

/// A character inside a regex class, as `\x{..}` (nothing needs escaping then).
fn class_char(c: u32) -> String {
    format!("\\x{{{c:X}}}")
}

fn lark_item(item: &Item, names: &HashMap<&str, String>) -> Result<String, ConstraintError> {
    Ok(match item {
        Item::Literal(chars) => chars
            .iter()
            .map(|c| lark_str(&c.to_string()))
            .collect::<Vec<_>>()
            .join(" "),
        Item::Class { negated, ranges } => {
            let mut class = String::new();
            for &(lo, hi) in ranges {
                if hi < lo {
                    continue; // an empty range, as llama.cpp matches it: nothing
                }
                class.push_str(&class_char(lo));
                if hi > lo {
                    class.push('-');
                    class.push_str(&class_char(hi));
                }
            }
            match (negated, class.is_empty()) {
                // `[]` matches nothing; `[^]` any character
                (false, true) => return Err(err("an empty character class [] matches nothing")),
                (true, true) => "/[\\x{0}-\\x{10FFFF}]/".to_string(),
                (false, false) => format!("/[{class}]/"),
                (true, false) => format!("/[^{class}]/"),
            }
        }
        Item::Any => "/[\\x{0}-\\x{10FFFF}]/".to_string(),
        Item::Rule(n) => names
            .get(n.as_str())
            .cloned()
            .ok_or_else(|| err(format!("rule {n:?} is used but not defined")))?,
        Item::Group(alts) => format!("({})", alternatives(alts, names)?),
        Item::Repeat { item, min, max } => {
            let inner = lark_item(item, names)?;
            let atom = match &**item {
                Item::Literal(chars) => chars.len() == 1,
                _ => true, // a group is in parentheses already
            };
            let inner = if inner.is_empty() {
                "\"\"".to_string()
            } else if atom {
                inner
            } else {
                format!("({inner})")
            };
            match (min, max) {
                (0, None) => format!("{inner}*"),
                (1, None) => format!("{inner}+"),
                (0, Some(1)) => format!("{inner}?"),
                (m, None) => format!("{inner}{{{m},}}"),
                (m, Some(n)) => format!("{inner}{{{m},{n}}}"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_gbnf_as_llama_cpp_does() {
        let g = r#"
# arithmetic
root ::= expr "\n"?
expr ::= term (("+" | "-") term)*   # a comment
term ::= [0-9]+ | "(" expr ")"
ws-x ::= [ \t\-a-]{2,3} | [^"\\] | . | "\x41\u00e9"
"#;
        let lark = to_lark(g, "start").unwrap();
        assert!(lark.starts_with("start: g0_root\n"), "{lark}");
        assert!(
            lark.contains("g1_expr: g2_term ((\"+\" | \"-\") g2_term)*"),
            "{lark}"
        );
        assert!(
            lark.contains("g2_term: /[\\x{30}-\\x{39}]/+ | \"(\" g1_expr \")\""),
            "{lark}"
        );
        assert!(
            lark.contains("/[\\x{20}\\x{9}\\x{2D}\\x{61}\\x{2D}]/{2,3}"),
            "{lark}"
        );
        assert!(lark.contains("\"A\" \"é\""), "{lark}");
    }

    #[test]
    fn bad_grammars_name_the_place() {
        for (g, want) in [
            ("root ::= foo", "rule \"foo\" is used but not defined"),
            ("expr ::= \"a\"", "no root rule"),
            ("root ::= \"a\" <[12]>", "token references"),
            ("root ::= \"a", "unexpected end"),
            ("root = \"a\"", "expected ::= at line 1, column 6"),
            ("root ::= \"\\q\"", "unknown escape"),
            ("root ::= *", "expected an item"),
            ("root ::= \"a\"{3,1}", "maximum is below"),
            ("root ::= \"a\"{2001}", "more than 2000"),
            ("root ::= \"a\" )", "expected a newline"),
        ] {
            let e = to_lark(g, "start").unwrap_err().to_string();
            assert!(
                e.starts_with("GBNF grammar: ") && e.contains(want),
                "{g}: {e}"
            );
        }
    }

    #[test]
    fn newlines_end_rules_except_in_groups_and_after_bars() {
        let g = "root ::= (\"a\"\n  \"b\") |\n  \"c\"\nother ::= \"d\"";
        let lark = to_lark(g, "s").unwrap();
        assert!(lark.contains("g0_root: (\"a\" \"b\") | \"c\""), "{lark}");
        assert!(lark.contains("g1_other: \"d\""), "{lark}");
    }
}
