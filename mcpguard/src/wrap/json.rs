//! A small JSON parser that remembers where every value and key sits in the
//! source text, so [`super::rewrite`] can replace a few values and leave every
//! other byte of the file (indentation, key order, escapes, comments) exactly
//! as the user or the MCP client wrote it. A re-serialising parser cannot
//! give that, and byte-for-byte preservation is what makes `unwrap` the exact
//! inverse of `wrap`.
//!
//! [`Syntax::Jsonc`] also accepts `//` and `/* */` comments and trailing
//! commas, which VS Code allows in `.vscode/mcp.json`.
//!
//! Kept rather than `jsonc-parser` (0.32, which does keep ranges): even with
//! every extension off it accepts raw control characters in strings and an
//! empty document, refuses a byte order mark, and words its errors (and
//! places some) differently, so `wrap` would accept files `JSON.parse`
//! refuses and print other errors.

use std::ops::Range;

/// Nesting deeper than this is refused rather than risking the stack; MCP
/// client configs nest a handful of levels.
const MAX_DEPTH: usize = 256;

/// Which dialect to accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syntax {
    /// RFC 8259 JSON.
    Strict,
    /// JSON with comments and trailing commas.
    Jsonc,
}

/// A parsed value and the byte range of its text.
#[derive(Debug, Clone)]
pub struct Node {
    pub span: Range<usize>,
    pub kind: Kind,
}

#[derive(Debug, Clone)]
pub enum Kind {
    Object(Vec<Member>),
    Array(Vec<Node>),
    /// The decoded string (escapes resolved).
    String(String),
    Number,
    Bool,
    Null,
}

/// One `"key": value` pair of an object.
#[derive(Debug, Clone)]
pub struct Member {
    /// The decoded key.
    pub key: String,
    /// The key's text, quotes included.
    pub key_span: Range<usize>,
    pub value: Node,
}

impl Node {
    pub fn as_object(&self) -> Option<&[Member]> {
        match &self.kind {
            Kind::Object(members) => Some(members),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Node]> {
        match &self.kind {
            Kind::Array(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::String(s) => Some(s),
            _ => None,
        }
    }

    /// The member named `key`. With duplicate keys the last one wins, as in
    /// `JSON.parse`, which is how the (JavaScript) MCP clients read the file.
    pub fn member(&self, key: &str) -> Option<&Member> {
        self.as_object()?.iter().rev().find(|m| m.key == key)
    }

    /// The value of the member named `key`.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.member(key).map(|m| &m.value)
    }
}

/// A syntax error at a byte offset of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub offset: usize,
    pub message: String,
}

impl SyntaxError {
    /// 1-based line and column (in characters) of the error in `text`.
    pub fn line_col(&self, text: &str) -> (usize, usize) {
        let mut offset = self.offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (
            before.matches('\n').count() + 1,
            before[line_start..].chars().count() + 1,
        )
    }
}

/// Parses one JSON document (an optional UTF-8 byte order mark, surrounding
/// whitespace and, for JSONC, comments are allowed).
pub fn parse(text: &str, syntax: Syntax) -> Result<Node, SyntaxError> {
    let mut p = Parser {
        src: text.as_bytes(),
        pos: 0,
        syntax,
        depth: 0,
    };
    if text.starts_with('\u{feff}') {
        p.pos = '\u{feff}'.len_utf8();
    }
    p.skip_blank()?;
    let node = p.value()?;
    p.skip_blank()?;
    if p.pos < p.src.len() {
        return Err(p.error("unexpected text after the end of the document"));
    }
    Ok(node)
}

/// The whitespace (spaces, tabs, newlines) that ends `text[..end]`, e.g. the
/// indentation and line break before a key.
pub fn whitespace_before(text: &str, end: usize) -> &str {
    let before = &text[..end];
    let trimmed = before.trim_end_matches([' ', '\t', '\n', '\r']);
    &before[trimmed.len()..]
}

struct Parser<'a> {
    src: &'a [u8],
    pos: usize,
    syntax: Syntax,
    depth: usize,
}

impl Parser<'_> {
    fn error(&self, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            offset: self.pos,
            message: message.into(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    /// Skips whitespace and, for JSONC, comments.
    fn skip_blank(&mut self) -> Result<(), SyntaxError> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\n' | b'\r') => self.pos += 1,
                Some(b'/') if self.syntax == Syntax::Jsonc => self.comment()?,
                _ => return Ok(()),
            }
        }
    }

    fn comment(&mut self) -> Result<(), SyntaxError> {
        match self.src.get(self.pos + 1) {
            Some(b'/') => {
                while self.peek().is_some_and(|c| c != b'\n') {
                    self.pos += 1;
                }
                Ok(())
            }
            Some(b'*') => {
                let start = self.pos;
                self.pos += 2;
                loop {
                    match self.peek() {
                        None => {
                            self.pos = start;
                            return Err(self.error("unterminated /* comment"));
                        }
                        Some(b'*') if self.src.get(self.pos + 1) == Some(&b'/') => {
                            self.pos += 2;
                            return Ok(());
                        }
                        Some(_) => self.pos += 1,
                    }
                }
            }
            _ => Err(self.error("expected a value, found `/`")),
        }
    }

    fn value(&mut self) -> Result<Node, SyntaxError> {
        let start = self.pos;
        let kind = match self.peek() {
            Some(b'{') => self.nested(Self::object)?,
            Some(b'[') => self.nested(Self::array)?,
            Some(b'"') => Kind::String(self.string()?),
            Some(b'-' | b'0'..=b'9') => {
                self.number()?;
                Kind::Number
            }
            Some(b't') => self.literal("true", Kind::Bool)?,
            Some(b'f') => self.literal("false", Kind::Bool)?,
            Some(b'n') => self.literal("null", Kind::Null)?,
            Some(_) => return Err(self.error(format!("expected a value, found {}", self.shown()))),
            None => return Err(self.error("expected a value, found the end of the file")),
        };
        Ok(Node {
            span: start..self.pos,
            kind,
        })
    }

    /// How the character at the cursor reads in a message.
    fn shown(&self) -> String {
        let rest = std::str::from_utf8(&self.src[self.pos..]).unwrap_or("");
        match rest.chars().next() {
            Some(c) if c.is_control() => format!("{c:?}"),
            Some(c) => format!("`{c}`"),
            None => "the end of the file".to_owned(),
        }
    }

    fn nested(
        &mut self,
        parse: fn(&mut Self) -> Result<Kind, SyntaxError>,
    ) -> Result<Kind, SyntaxError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error(format!("nested more than {MAX_DEPTH} levels deep")));
        }
        self.depth += 1;
        let kind = parse(self);
        self.depth -= 1;
        kind
    }

    fn literal(&mut self, word: &str, kind: Kind) -> Result<Kind, SyntaxError> {
        if self.src[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(kind)
        } else {
            Err(self.error(format!("expected `{word}`")))
        }
    }

    fn object(&mut self) -> Result<Kind, SyntaxError> {
        self.pos += 1; // '{'
        let mut members = Vec::new();
        loop {
            self.skip_blank()?;
            match self.peek() {
                Some(b'}') if members.is_empty() || self.syntax == Syntax::Jsonc => {
                    self.pos += 1;
                    return Ok(Kind::Object(members));
                }
                Some(b'"') => {}
                _ => {
                    return Err(self.error(format!(
                        "expected a key in double quotes, found {}",
                        self.shown()
                    )))
                }
            }
            let key_start = self.pos;
            let key = self.string()?;
            let key_span = key_start..self.pos;
            self.skip_blank()?;
            if self.peek() != Some(b':') {
                return Err(self.error(format!("expected `:`, found {}", self.shown())));
            }
            self.pos += 1;
            self.skip_blank()?;
            let value = self.value()?;
            members.push(Member {
                key,
                key_span,
                value,
            });
            self.skip_blank()?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Kind::Object(members));
                }
                _ => {
                    return Err(self.error(format!("expected `,` or `}}`, found {}", self.shown())))
                }
            }
        }
    }

    fn array(&mut self) -> Result<Kind, SyntaxError> {
        self.pos += 1; // '['
        let mut items = Vec::new();
        loop {
            self.skip_blank()?;
            if self.peek() == Some(b']') && (items.is_empty() || self.syntax == Syntax::Jsonc) {
                self.pos += 1;
                return Ok(Kind::Array(items));
            }
            items.push(self.value()?);
            self.skip_blank()?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Kind::Array(items));
                }
                _ => return Err(self.error(format!("expected `,` or `]`, found {}", self.shown()))),
            }
        }
    }

    fn string(&mut self) -> Result<String, SyntaxError> {
        self.pos += 1; // opening quote
        let mut out = String::new();
        loop {
            // Copy the run of plain characters in one go; the input is a
            // `&str`, so any run that ends at an ASCII byte is valid UTF-8.
            let run_start = self.pos;
            while let Some(c) = self.peek() {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.push_str(
                std::str::from_utf8(&self.src[run_start..self.pos])
                    .map_err(|_| self.error("invalid UTF-8 in a string"))?,
            );
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    out.push(self.escape()?);
                }
                Some(_) => return Err(self.error("control character in a string (escape it)")),
                None => return Err(self.error("unterminated string")),
            }
        }
    }

    fn escape(&mut self) -> Result<char, SyntaxError> {
        let c = self
            .peek()
            .ok_or_else(|| self.error("unterminated string"))?;
        self.pos += 1;
        Ok(match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let high = self.hex4()?;
                if (0xD800..0xDC00).contains(&high) {
                    // A surrogate pair is two escapes: \uD83D\uDE00.
                    if !self.src[self.pos..].starts_with(b"\\u") {
                        return Err(self.error("lone UTF-16 surrogate in \\u escape"));
                    }
                    self.pos += 2;
                    let low = self.hex4()?;
                    if !(0xDC00..0xE000).contains(&low) {
                        return Err(self.error("invalid UTF-16 surrogate pair in \\u escape"));
                    }
                    let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                    char::from_u32(code).ok_or_else(|| self.error("invalid \\u escape"))?
                } else {
                    char::from_u32(high)
                        .ok_or_else(|| self.error("lone UTF-16 surrogate in \\u escape"))?
                }
            }
            _ => {
                self.pos -= 1;
                return Err(self.error(format!("invalid escape `\\{}`", self.shown_raw())));
            }
        })
    }

    fn shown_raw(&self) -> String {
        let rest = std::str::from_utf8(&self.src[self.pos..]).unwrap_or("");
        rest.chars().next().map(String::from).unwrap_or_default()
    }

    fn hex4(&mut self) -> Result<u32, SyntaxError> {
        let digits = self
            .src
            .get(self.pos..self.pos + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| self.error("expected 4 hex digits after \\u"))?;
        let value = u32::from_str_radix(digits, 16)
            .map_err(|_| self.error("expected 4 hex digits after \\u"))?;
        self.pos += 4;
        Ok(value)
    }

    fn number(&mut self) -> Result<(), SyntaxError> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error("expected a digit")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(self.error("expected a digit after `.`"));
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(self.error("expected a digit in the exponent"));
            }
            self.digits();
        }
        Ok(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict(text: &str) -> Node {
        parse(text, Syntax::Strict).unwrap_or_else(|e| panic!("{text:?}: {e:?}"))
    }

    fn strict_err(text: &str) -> (usize, usize, String) {
        match parse(text, Syntax::Strict) {
            Ok(n) => panic!("{text:?} parsed as {n:?}"),
            Err(e) => {
                let (line, col) = e.line_col(text);
                (line, col, e.message)
            }
        }
    }

    #[test]
    fn spans_point_at_the_source_text() {
        let text = "{\n  \"a\": [1, \"x\\u00e9\", true],\n  \"b\": {\"c\": null}\n}\n";
        let doc = strict(text);
        let a = doc.member("a").expect("a");
        assert_eq!(&text[a.key_span.clone()], "\"a\"");
        assert_eq!(&text[a.value.span.clone()], "[1, \"x\\u00e9\", true]");
        let items = a.value.as_array().expect("array");
        assert_eq!(items[1].as_str(), Some("xé"));
        assert_eq!(&text[items[1].span.clone()], "\"x\\u00e9\"");
        let b = doc.get("b").expect("b");
        assert_eq!(&text[b.span.clone()], "{\"c\": null}");
    }

    #[test]
    fn agrees_with_serde_json_on_strings() {
        for s in [
            r#""plain""#,
            r#""esc \" \\ \/ \b \f \n \r \t""#,
            r#""\ud83d\ude00 é ü 日本""#,
        ] {
            let ours = strict(s);
            let theirs: String = serde_json::from_str(s).expect("serde_json");
            assert_eq!(ours.as_str(), Some(theirs.as_str()), "{s}");
        }
    }

    #[test]
    fn last_duplicate_key_wins() {
        let doc = strict(r#"{"k": 1, "k": "two"}"#);
        assert_eq!(doc.get("k").and_then(Node::as_str), Some("two"));
    }

    #[test]
    fn errors_give_line_and_column() {
        assert_eq!(strict_err("{\n  \"a\": 1,\n}").0, 3);
        let (line, col, msg) = strict_err("{\n  \"a\" 1\n}");
        assert_eq!((line, col), (2, 7), "{msg}");
        assert!(msg.contains("`:`"), "{msg}");
        let (line, col, _) = strict_err("[1, 2");
        assert_eq!((line, col), (1, 6));
        let (_, _, msg) = strict_err("{\"a\": \"b\nc\"}");
        assert!(msg.contains("control character"), "{msg}");
        for bad in [
            "",
            "01",
            "1.",
            "-",
            "tru",
            "\"\\x\"",
            "\"\\ud800\"",
            "[1,]",
            "{} {}",
            "// c\n{}",
        ] {
            assert!(parse(bad, Syntax::Strict).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn jsonc_allows_comments_and_trailing_commas() {
        let text = "// top\n{\n  /* a */ \"a\": [1, 2,], // end\n  \"b\": 3,\n}\n";
        assert!(parse(text, Syntax::Strict).is_err());
        let doc = parse(text, Syntax::Jsonc).expect("jsonc");
        assert_eq!(
            doc.get("a").and_then(Node::as_array).map(<[_]>::len),
            Some(2)
        );
        assert!(parse("{/* open", Syntax::Jsonc).is_err());
    }

    #[test]
    fn deep_nesting_is_refused_not_a_crash() {
        let text = "[".repeat(100_000);
        let e = parse(&text, Syntax::Strict).expect_err("too deep");
        assert!(e.message.contains("nested"), "{}", e.message);
    }

    #[test]
    fn byte_order_mark_is_skipped() {
        assert!(strict("\u{feff}{}").as_object().is_some());
    }

    #[test]
    fn whitespace_before_stops_at_text() {
        let text = "{\n\t\t\"k\"";
        assert_eq!(whitespace_before(text, text.len() - 3), "\n\t\t");
        assert_eq!(whitespace_before("[\"a\"", 1), "");
    }
}
