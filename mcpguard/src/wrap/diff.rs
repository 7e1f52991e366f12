//! A unified line diff for `--dry-run`, computed by `similar` and printed as
//! `@@` hunks with three lines of context. Hunk ranges are always written
//! `start,len` (`similar`'s own printer drops a length of 1).

use std::ops::Range;

use similar::{DiffOp, TextDiff};

/// Lines of unchanged context around each change.
const CONTEXT: usize = 3;

/// The unified diff from `old` to `new`, labelled `old_name`/`new_name`, or
/// an empty string if they are equal.
pub fn unified(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    if old == new {
        return String::new();
    }
    let diff = TextDiff::from_lines(old, new);
    let mut out = format!("--- {old_name}\n+++ {new_name}\n");
    for group in diff.grouped_ops(CONTEXT) {
        let (first, last) = (group[0], group[group.len() - 1]);
        out.push_str(&format!(
            "@@ -{} +{} @@\n",
            range(first.old_range().start..last.old_range().end),
            range(first.new_range().start..last.new_range().end)
        ));
        for change in group.iter().flat_map(|op: &DiffOp| diff.iter_changes(op)) {
            let line = change.value();
            out.push_str(&change.tag().to_string());
            out.push_str(line);
            if !line.ends_with('\n') {
                out.push_str("\n\\ No newline at end of file\n");
            }
        }
    }
    out
}

/// A hunk header range: 1-based start and length. An empty range names the
/// line before it, as `diff -u` does.
fn range(lines: Range<usize>) -> String {
    let len = lines.len();
    let start = if len == 0 {
        lines.start
    } else {
        lines.start + 1
    };
    format!("{start},{len}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rebuilds both sides from the diff of `a` and `b` (context lines and
    /// removals give `a`, context lines and additions give `b`).
    fn check(a: &str, b: &str) {
        let d = unified(a, b, "a", "b");
        if a == b {
            assert_eq!(d, "");
            return;
        }
        let body: String = d.split_inclusive('\n').skip(2).collect();
        let (mut old, mut new) = (String::new(), String::new());
        let mut last: Option<char> = None;
        for line in body.split_inclusive('\n') {
            if line.starts_with("\\ No newline") {
                let side = if last == Some('+') {
                    &mut new
                } else {
                    &mut old
                };
                side.pop();
                if last == Some(' ') {
                    new.pop();
                }
                continue;
            }
            let (tag, text) = line.split_at(1);
            last = tag.chars().next();
            match tag {
                " " => {
                    old.push_str(text);
                    new.push_str(text);
                }
                "-" => old.push_str(text),
                "+" => new.push_str(text),
                _ => assert!(tag == "@", "{d}"),
            }
        }
        // Three lines of context: short inputs are shown whole.
        assert_eq!((old.as_str(), new.as_str()), (a, b), "{d}");
    }

    #[test]
    fn diffs_rebuild_both_texts() {
        let cases = [
            ("", "a\n"),
            ("a\n", ""),
            ("a\nb\nc\n", "a\nx\nc\n"),
            ("a\nb\nc\nd\ne\n", "x\na\nc\ne\ny\n"),
            ("1\n2\n3\n4\n5\n", "1\n2\n3\nfour\n5\n"),
            ("a\nb", "a\nb\n"),
        ];
        for (a, b) in cases {
            check(a, b);
            check(b, a);
        }
    }

    #[test]
    fn unified_output() {
        let old =
            "{\n  \"a\": 1,\n  \"b\": 2,\n  \"c\": 3,\n  \"d\": 4,\n  \"e\": 5,\n  \"f\": 6\n}\n";
        let new = old.replace("\"b\": 2", "\"b\": 20");
        let d = unified(old, &new, "x.json", "x.json (wrapped)");
        assert_eq!(
            d,
            "--- x.json\n+++ x.json (wrapped)\n@@ -1,6 +1,6 @@\n {\n   \"a\": 1,\n-  \"b\": 2,\n+  \"b\": 20,\n   \"c\": 3,\n   \"d\": 4,\n   \"e\": 5,\n"
        );
        assert_eq!(unified(old, old, "x", "y"), "");
        let d = unified("a", "b", "x", "y");
        assert!(
            d.contains("-a\n\\ No newline at end of file\n+b\n\\ No newline"),
            "{d}"
        );
        assert_eq!(
            unified("", "a\n", "x", "y"),
            "--- x\n+++ y\n@@ -0,0 +1,1 @@\n+a\n"
        );
        let nine = "1\n2\n3\n4\n5\n6\n7\n8\n9\n";
        let d = unified(nine, &nine.replace("5\n", "five\n"), "x", "y");
        assert!(d.contains("@@ -2,7 +2,7 @@\n 2\n"), "{d}");
    }
}
