//! Making strings a server controls safe to print on a terminal.
//!
//! File names, `serverInfo.name`, tool names, argv, DNS names and error
//! text all reach human output. Printed raw, an `ESC[1A ESC[2K` erases the
//! line above (a DENY) and an OSC sequence retitles or hyperlinks; a bidi
//! override reorders what follows it. [`escape`] is the one function every
//! human-readable output runs such strings through: each character that is
//! not plainly printable becomes a visible escape (`\x1b`, `\u{202e}`), so
//! one record stays one line that says what it holds.
//!
//! JSON output goes through [`escape_json`] instead: the same characters
//! as `\uXXXX` escapes, so the text stays the same JSON value (serde_json
//! escapes C0 controls itself but leaves C1, DEL and bidi characters raw).
//!
//! A backslash is left as it is: escaping is then idempotent (a line built
//! from already-escaped parts can be escaped again unchanged), and no
//! escape can make a line break or move the cursor. `--json` output keeps
//! the exact bytes for anyone who must tell `\x1b` typed from ESC.

use std::{borrow::Cow, fmt::Write as _};

/// Characters that render as nothing: Unicode tag characters (which can
/// spell out hidden ASCII), zero-width characters, bidi controls and the
/// byte-order mark.
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{E0000}'..='\u{E007F}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}'
        | '\u{FEFF}')
}

/// Whether `c` must not reach a terminal raw: C0 and C1 controls, DEL
/// (including `\n`, `\r` and `\t`, which would break a record's line or
/// align a forgery), the invisible and bidi characters the MCP tap flags,
/// and the other format characters and separators that render as nothing
/// or as a line break.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || is_invisible(c)
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{2065}'
                | '\u{206A}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FFA0}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{1D173}'..='\u{1D17A}'
        )
}

/// `s` with every [`is_unsafe`] character written as `\xNN` (below U+0100)
/// or `\u{NNNN}`; borrowed when there is nothing to escape.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            c if !is_unsafe(c) => out.push(c),
            c if (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    Cow::Owned(out)
}

/// One line of compact JSON with every [`is_unsafe`] character that is not
/// JSON whitespace written as a `\uXXXX` escape (a surrogate pair above
/// U+FFFF). Such characters can only stand inside strings in valid JSON,
/// where the escape means the same character: the value is unchanged.
pub fn escape_json(line: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| is_unsafe(c) && !matches!(c, '\t' | '\n' | '\r');
    if !line.chars().any(unsafe_char) {
        return Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 8);
    for c in line.chars() {
        if !unsafe_char(c) {
            out.push(c);
            continue;
        }
        let mut units = [0u16; 2];
        for unit in c.encode_utf16(&mut units) {
            let _ = write!(out, "\\u{unit:04x}");
        }
    }
    Cow::Owned(out)
}

/// Multi-line text (a report, an explanation) escaped line by line: its
/// own line breaks stay, everything else is escaped.
pub fn escape_lines(s: &str) -> String {
    s.split_inclusive('\n')
        .map(|line| match line.strip_suffix('\n') {
            Some(body) => format!("{}\n", escape(body)),
            None => escape(line).into_owned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for s in ["", "/home/u/notes.txt", "time — Zeit ⏰", r"C:\x1b literal"] {
            assert!(matches!(escape(s), Cow::Borrowed(t) if t == s), "{s}");
        }
    }

    #[test]
    fn controls_escape_and_bidi_become_visible() {
        let cases = [
            ("a\x1b[1A\x1b[2Kb", r"a\x1b[1A\x1b[2Kb"),
            ("\x1b]0;pwned\x07", r"\x1b]0;pwned\x07"),
            ("x\ny\rz\t", r"x\x0ay\x0dz\x09"),
            ("\u{9b}31m", r"\x9b31m"),
            ("del\x7f", r"del\x7f"),
            ("\u{202e}txt.exe", r"\u{202e}txt.exe"),
            ("\u{2066}a\u{2069}", r"\u{2066}a\u{2069}"),
            ("z\u{200b}w\u{feff}", r"z\u{200b}w\u{feff}"),
            ("tag\u{e0041}", r"tag\u{e0041}"),
            ("ls\u{2028}", r"ls\u{2028}"),
            ("soft\u{ad}", r"soft\xad"),
        ];
        for (raw, want) in cases {
            let got = escape(raw);
            assert_eq!(got, want, "{raw:?}");
            assert!(!got.chars().any(is_unsafe), "{got:?}");
        }
    }

    #[test]
    fn escaping_is_idempotent() {
        let once = escape("\x1b[2K\u{202e}DENY\n").into_owned();
        assert_eq!(escape(&once), once);
    }

    #[test]
    fn json_keeps_its_value_and_loses_raw_controls() {
        let value = serde_json::json!({"path": "a\u{9b}2K\u{202e}\x7f\x1b\u{e0041}", "n": 1});
        let line = serde_json::to_string(&value).unwrap();
        assert!(line.contains('\u{202e}'), "serde leaves bidi raw: {line}");
        let escaped = escape_json(&line);
        assert!(!escaped.chars().any(is_unsafe), "{escaped}");
        assert!(escaped.contains(r"\u202e") && escaped.contains(r"\udb40\udc41"));
        let back: serde_json::Value = serde_json::from_str(&escaped).unwrap();
        assert_eq!(back, value);
        assert!(matches!(
            escape_json(r#"{"a":"b\u001b"}"#),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn lines_keep_their_breaks_only() {
        assert_eq!(escape_lines("a\x1b\nb\r\nc"), "a\\x1b\nb\\x0d\nc");
    }
}
