//! Writing policy TOML for people to read and edit (`wrap`'s starter
//! policies, `learn`'s proposals): quoted strings, arrays one item a line
//! with comments, and comment text that stays one comment.
//!
//! Strings are quoted here rather than by `toml_writer` (which `toml` uses):
//! that leaves C1 controls such as CSI (U+009B) raw, and a policy is text a
//! reviewer reads in a terminal; here every control character is escaped.

/// `s` as a TOML basic string, every control character written `\uXXXX`.
pub fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Text that cannot end a TOML comment early or be refused in one.
pub fn comment_safe(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// One element of a [`block_array`], with optional comments.
#[derive(Clone, Copy, Debug, Default)]
pub struct Item<'a> {
    pub value: &'a str,
    /// A comment on its own line above the element.
    pub above: Option<&'a str>,
    /// A comment after the element, on its line.
    pub after: Option<&'a str>,
}

impl<'a> Item<'a> {
    pub fn new(value: &'a str) -> Item<'a> {
        Item {
            value,
            ..Item::default()
        }
    }
}

/// A TOML array of strings, one element a line (indented four spaces),
/// without a trailing newline; `[]` when empty.
pub fn block_array<'a>(items: impl IntoIterator<Item = Item<'a>>) -> String {
    let mut out = String::from("[\n");
    let mut empty = true;
    for item in items {
        empty = false;
        if let Some(above) = item.above {
            out.push_str(&format!("    # {}\n", comment_safe(above)));
        }
        out.push_str(&format!("    {},", quote(item.value)));
        if let Some(after) = item.after {
            out.push_str(&format!(" # {}", comment_safe(after)));
        }
        out.push('\n');
    }
    if empty {
        return "[]".into();
    }
    out.push(']');
    out
}

/// A TOML array of strings on one line: `["a", "b"]`.
pub fn inline_array<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = items.into_iter().map(quote).collect();
    format!("[{}]", quoted.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_quote_escapes_and_controls() {
        assert_eq!(quote(r#"a "b" \c"#), r#""a \"b\" \\c""#);
        assert_eq!(quote("x\ny\u{7f}\u{9b}é"), r#""x\u000Ay\u007F\u009Bé""#);
        let parsed: toml::Value =
            toml::from_str(&format!("v = {}", quote("x\ny\u{7f}\u{9b}\"\\é"))).expect("valid TOML");
        assert_eq!(parsed["v"].as_str(), Some("x\ny\u{7f}\u{9b}\"\\é"));
    }

    #[test]
    fn arrays() {
        assert_eq!(block_array([]), "[]");
        let items = [
            Item {
                above: Some("why\nnot"),
                ..Item::new("a")
            },
            Item {
                after: Some("called"),
                ..Item::new("b")
            },
        ];
        assert_eq!(
            block_array(items),
            "[\n    # why?not\n    \"a\",\n    \"b\", # called\n]"
        );
        assert_eq!(inline_array(["PATH", "x\"y"]), r#"["PATH", "x\"y"]"#);
        assert_eq!(inline_array([]), "[]");
    }
}
