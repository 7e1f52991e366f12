//! A tool call's result as its `tools_call` record tells it: what kinds of
//! content came back and how big, never the content itself, unless the
//! policy's `[tools] excerpt` names the tool, which adds the first
//! [`EXCERPT_CHARS`] characters of its text.
//!
//! The summary is made from the message after redaction (the tap redacts
//! every server message first), so an excerpt never holds a secret the
//! redactor knows or a credential shape it recognises.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::parse;

/// Characters of text content an opted-in excerpt keeps.
pub const EXCERPT_CHARS: usize = 200;
/// Content types the MCP spec defines; others are counted as `other`, so
/// a server cannot grow the record with type names of its own.
const TYPES: &[&str] = &["text", "image", "audio", "resource", "resource_link"];

/// `{"content": {"<type>": {"count", "bytes"}}, "structured_bytes",
/// "excerpt"}` for a `tools/call` result. `bytes` are the JSON bytes of
/// the items of that type; `structured_bytes` is there only when the result
/// has `structuredContent`; `excerpt` only with `excerpt` set, and only
/// when the result has text content.
pub fn summarize(result: &Value, excerpt: bool) -> Value {
    let mut by_type: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let items = result.get("content").and_then(Value::as_array);
    for item in items.into_iter().flatten() {
        let ty = item.get("type").and_then(Value::as_str).unwrap_or("");
        let ty = TYPES.iter().find(|t| **t == ty).copied().unwrap_or("other");
        let (count, bytes) = by_type.entry(ty).or_default();
        *count += 1;
        *bytes += parse::json_len(item);
    }
    let content: Map<String, Value> = by_type
        .into_iter()
        .map(|(ty, (count, bytes))| (ty.into(), json!({ "count": count, "bytes": bytes })))
        .collect();
    let mut out = json!({ "content": content });
    if let Some(structured) = result.get("structuredContent") {
        out["structured_bytes"] = parse::json_len(structured).into();
    }
    if excerpt {
        if let Some(text) = text_excerpt(items.map_or(&[][..], Vec::as_slice)) {
            out["excerpt"] = text.into();
        }
    }
    out
}

/// The first [`EXCERPT_CHARS`] characters of the text items, joined by
/// newlines; `…` marks a cut.
fn text_excerpt(items: &[Value]) -> Option<String> {
    let mut texts = items
        .iter()
        .filter(|i| i.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|i| i.get("text").and_then(Value::as_str))
        .peekable();
    texts.peek()?;
    let mut out = String::new();
    let mut chars = 0;
    for (n, text) in texts.enumerate() {
        let parts = (n > 0).then_some("\n").into_iter().chain([text]);
        for c in parts.flat_map(str::chars) {
            if chars == EXCERPT_CHARS {
                out.push('…');
                return Some(out);
            }
            out.push(c);
            chars += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_content_type_is_counted_with_its_bytes_and_unknown_types_are_other() {
        let text = json!({"type": "text", "text": "hello"});
        let image = json!({"type": "image", "data": "iVBORw0KGgo=", "mimeType": "image/png"});
        let items = json!([
            text,
            text,
            image,
            {"type": "audio", "data": "UklGRg==", "mimeType": "audio/wav"},
            {"type": "resource", "resource": {"uri": "file:///x", "text": "body"}},
            {"type": "resource_link", "uri": "file:///y", "name": "y"},
            {"type": "my_own_type"},
            {"no": "type"},
        ]);
        let s = summarize(&json!({ "content": items }), false);
        let c = &s["content"];
        assert_eq!(c["text"]["count"], 2);
        assert_eq!(c["text"]["bytes"], 2 * parse::json_len(&text));
        assert_eq!(c["image"]["bytes"], parse::json_len(&image));
        for ty in ["image", "audio", "resource", "resource_link"] {
            assert_eq!(c[ty]["count"], 1, "{ty}: {s}");
        }
        assert_eq!(c["other"]["count"], 2);
        assert_eq!(c.as_object().unwrap().len(), 6);
        assert!(s.get("structured_bytes").is_none());
        assert!(s.get("excerpt").is_none(), "no excerpt unless opted in");
        assert!(!s.to_string().contains("hello"), "never the content: {s}");
    }

    #[test]
    fn structured_content_is_sized() {
        let s = summarize(
            &json!({"content": [], "structuredContent": {"temp": 21.5}}),
            false,
        );
        assert_eq!(s["structured_bytes"], r#"{"temp":21.5}"#.len());
        assert_eq!(s["content"], json!({}));
    }

    #[test]
    fn an_excerpt_is_the_first_characters_of_the_text_only_when_asked() {
        let long = "é".repeat(EXCERPT_CHARS + 50);
        let r = json!({"content": [
            {"type": "image", "data": "AAAA"},
            {"type": "text", "text": "first"},
            {"type": "text", "text": long},
        ]});
        let e = summarize(&r, true)["excerpt"].as_str().unwrap().to_owned();
        assert!(e.starts_with("first\néé"), "{e}");
        assert_eq!(e.chars().count(), EXCERPT_CHARS + 1);
        assert!(e.ends_with('…'));
        let short = json!({"content": [{"type": "text", "text": "tiny"}]});
        assert_eq!(summarize(&short, true)["excerpt"], "tiny");
        let none = json!({"content": [{"type": "image", "data": "AAAA"}]});
        assert!(summarize(&none, true).get("excerpt").is_none());
    }
}
