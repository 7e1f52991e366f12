//! A unified line diff for `--dry-run`: Myers' algorithm on the lines that
//! differ, printed as `@@` hunks with three lines of context.

/// Lines of unchanged context around each change.
const CONTEXT: usize = 3;

/// Beyond this many differing lines Myers' trace gets large; such a diff is
/// shown as everything removed, then everything added. `wrap` changes a few
/// lines per server, far below it.
const MAX_EDIT_DISTANCE: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Same(usize, usize),
    Delete(usize),
    Insert(usize),
}

/// The unified diff from `old` to `new`, labelled `old_name`/`new_name`, or
/// an empty string if they are equal.
pub fn unified(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    if old == new {
        return String::new();
    }
    let a: Vec<&str> = old.split_inclusive('\n').collect();
    let b: Vec<&str> = new.split_inclusive('\n').collect();
    let ops = script(&a, &b);
    let mut out = format!("--- {old_name}\n+++ {new_name}\n");
    for hunk in hunks(&ops) {
        let ops = &ops[hunk];
        let (mut old_start, mut new_start, mut old_len, mut new_len) = (None, None, 0, 0);
        for op in ops {
            match *op {
                Op::Same(i, j) => {
                    old_start.get_or_insert(i);
                    new_start.get_or_insert(j);
                    old_len += 1;
                    new_len += 1;
                }
                Op::Delete(i) => {
                    old_start.get_or_insert(i);
                    old_len += 1;
                }
                Op::Insert(j) => {
                    new_start.get_or_insert(j);
                    new_len += 1;
                }
            }
        }
        out.push_str(&format!(
            "@@ -{} +{} @@\n",
            range(old_start, old_len, ops, true),
            range(new_start, new_len, ops, false)
        ));
        for op in ops {
            let (sign, line) = match *op {
                Op::Same(i, _) => (' ', a[i]),
                Op::Delete(i) => ('-', a[i]),
                Op::Insert(j) => ('+', b[j]),
            };
            out.push(sign);
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
fn range(start: Option<usize>, len: usize, ops: &[Op], old: bool) -> String {
    let start = match start {
        Some(s) => s + 1,
        // Nothing on this side: the position of the line before the hunk.
        None => ops
            .iter()
            .find_map(|op| match (*op, old) {
                (Op::Insert(j), true) | (Op::Delete(j), false) => Some(j),
                _ => None,
            })
            .unwrap_or(0),
    };
    format!("{start},{len}")
}

/// The edit script turning `a` into `b`.
fn script(a: &[&str], b: &[&str]) -> Vec<Op> {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (mid_a, mid_b) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    let mut ops: Vec<Op> = (0..prefix).map(|i| Op::Same(i, i)).collect();
    let mid = myers(mid_a, mid_b).unwrap_or_else(|| {
        (0..mid_a.len())
            .map(Op::Delete)
            .chain((0..mid_b.len()).map(Op::Insert))
            .collect()
    });
    ops.extend(mid.into_iter().map(|op| match op {
        Op::Same(i, j) => Op::Same(i + prefix, j + prefix),
        Op::Delete(i) => Op::Delete(i + prefix),
        Op::Insert(j) => Op::Insert(j + prefix),
    }));
    let (sa, sb) = (a.len() - suffix, b.len() - suffix);
    ops.extend((0..suffix).map(|k| Op::Same(sa + k, sb + k)));
    ops
}

/// Myers' O((N+M)·D) shortest edit script, or `None` past
/// [`MAX_EDIT_DISTANCE`]. `trace[d]` keeps the furthest-reaching x of each
/// diagonal k in -d..=d after round d-1, so memory is O(D²).
fn myers(a: &[&str], b: &[&str]) -> Option<Vec<Op>> {
    let (n, m) = (a.len() as isize, b.len() as isize);
    let max = (a.len() + b.len()).min(MAX_EDIT_DISTANCE) as isize;
    let off = max + 1;
    let mut v = vec![0isize; 2 * max as usize + 3];
    let at = |k: isize| (k + off) as usize;
    let mut trace: Vec<Vec<isize>> = Vec::new();
    let mut found = false;
    'rounds: for d in 0..=max {
        trace.push(v[at(-d)..=at(d)].to_vec());
        for k in (-d..=d).step_by(2) {
            let mut x = if k == -d || (k != d && v[at(k - 1)] < v[at(k + 1)]) {
                v[at(k + 1)]
            } else {
                v[at(k - 1)] + 1
            };
            let mut y = x - k;
            while x < n && y < m && a[x as usize] == b[y as usize] {
                x += 1;
                y += 1;
            }
            v[at(k)] = x;
            if x >= n && y >= m {
                found = true;
                break 'rounds;
            }
        }
    }
    if !found {
        return None;
    }
    let mut ops = Vec::new();
    let (mut x, mut y) = (n, m);
    for d in (0..trace.len() as isize).rev() {
        let row = &trace[d as usize];
        let get = |k: isize| row[(k + d) as usize];
        let k = x - y;
        let prev_k = if k == -d || (k != d && get(k - 1) < get(k + 1)) {
            k + 1
        } else {
            k - 1
        };
        let prev_x = if d == 0 { 0 } else { get(prev_k) };
        let prev_y = prev_x - prev_k;
        while x > prev_x && y > prev_y.max(0) {
            x -= 1;
            y -= 1;
            ops.push(Op::Same(x as usize, y as usize));
        }
        if d > 0 {
            if x == prev_x {
                ops.push(Op::Insert((y - 1) as usize));
            } else {
                ops.push(Op::Delete((x - 1) as usize));
            }
        }
        x = prev_x;
        y = prev_y;
    }
    ops.reverse();
    Some(ops)
}

/// Index ranges of `ops` to show: each change with up to [`CONTEXT`] lines
/// around it, merging changes closer than twice that.
fn hunks(ops: &[Op]) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        if matches!(op, Op::Same(..)) {
            continue;
        }
        let start = i.saturating_sub(CONTEXT);
        let end = (i + 1 + CONTEXT).min(ops.len());
        match out.last_mut() {
            Some(last) if start <= last.end => last.end = end,
            _ => out.push(start..end),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies a diff's script to `a` and checks it yields `b`.
    fn check(a: &str, b: &str) {
        let la: Vec<&str> = a.split_inclusive('\n').collect();
        let lb: Vec<&str> = b.split_inclusive('\n').collect();
        let ops = script(&la, &lb);
        let mut rebuilt = String::new();
        let (mut seen_a, mut seen_b) = (0, 0);
        for op in &ops {
            match *op {
                Op::Same(i, j) => {
                    assert_eq!(la[i], lb[j]);
                    assert_eq!((i, j), (seen_a, seen_b));
                    rebuilt.push_str(lb[j]);
                    seen_a += 1;
                    seen_b += 1;
                }
                Op::Delete(i) => {
                    assert_eq!(i, seen_a);
                    seen_a += 1;
                }
                Op::Insert(j) => {
                    assert_eq!(j, seen_b);
                    rebuilt.push_str(lb[j]);
                    seen_b += 1;
                }
            }
        }
        assert_eq!((seen_a, seen_b), (la.len(), lb.len()));
        assert_eq!(rebuilt, b);
    }

    #[test]
    fn scripts_rebuild_the_new_text() {
        let cases = [
            ("", "a\n"),
            ("a\n", ""),
            ("a\nb\nc\n", "a\nx\nc\n"),
            ("a\nb\nc\nd\ne\n", "x\na\nc\ne\ny\n"),
            (
                "1\n2\n3\n4\n5\n6\n7\n8\n9\n",
                "1\n2\n3\nfour\n5\n6\n7\n8\nnine\nten\n",
            ),
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
    }
}
