//! Keeping secrets and credentials out of what a server emits.
//!
//! A [`Redactor`] knows the secret values injected into one server and
//! replaces each with `[REDACTED:<ENV NAME>]`, not only byte for byte but
//! also in the encodings a leak would use to slip past a plain match:
//! base64 and base64url (at every byte alignment, so a secret inside a
//! larger encoded blob is caught too), hex, percent-encoding and JSON string
//! escapes. JSON messages are redacted after decoding, so `\u0067`-style
//! escapes hide nothing. Common credential shapes (GitHub, AWS, Slack tokens,
//! private-key blocks, JWTs) are replaced by `[REDACTED:<shape>]` whether or
//! not they were injected.
//!
//! What it cannot see: a secret transformed some other way (reversed,
//! encrypted, split across messages). The kernel layers are what keep such a
//! server from sending it anywhere but back to its client.

use std::{borrow::Cow, collections::BTreeMap, sync::LazyLock};

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine;
use serde_json::Value;

/// Secrets shorter than this cannot be redacted without mangling ordinary
/// output, so launches that inject one are refused.
pub const MIN_SECRET_LEN: usize = 8;

/// Credential shapes redacted in all server output, with the name used in
/// the replacement and in counts.
const SHAPES: &[(&str, &str)] = &[
    (
        "private_key",
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY-----",
    ),
    (
        "github_token",
        r"\b(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,247})\b",
    ),
    ("aws_access_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    ("slack_token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    (
        "jwt",
        r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    ),
];

/// Literals every match of [`SHAPES`] and [`CUT_SHAPES`] contains: text
/// with none of them skips the shape regexes (one scan instead of one per
/// shape; most text, and most exec arguments, hold no credential).
const SHAPE_ANCHORS: &[&str] = &[
    "-----BEGIN ",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "AKIA",
    "ASIA",
    "xoxa-",
    "xoxb-",
    "xoxp-",
    "xoxo-",
    "xoxs-",
    "xoxr-",
    "eyJ",
];

static ANCHORS: LazyLock<AhoCorasick> =
    LazyLock::new(|| AhoCorasick::new(SHAPE_ANCHORS).expect("literal patterns always build"));

/// Whether `hay` may hold a credential shape (false: it surely does not).
fn may_hold_shape(hay: &[u8]) -> bool {
    ANCHORS.is_match(hay)
}

/// The heads of [`SHAPES`], at the end of a text cut short: what is left
/// of a credential the cut split no longer has its whole shape, but is
/// still part of it.
const CUT_SHAPES: &[(&str, &str)] = &[
    (
        "private_key",
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*$",
    ),
    (
        "github_token",
        r"\b(?:gh[pousr]_[A-Za-z0-9]*|github_pat_[A-Za-z0-9_]*)$",
    ),
    ("aws_access_key", r"\b(?:AKIA|ASIA)[0-9A-Z]*$"),
    ("slack_token", r"\bxox[abposr]-[A-Za-z0-9-]*$"),
    ("jwt", r"\beyJ[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*){0,2}$"),
];

/// Bytes of a secret (in any of its forms) a cut text must end with to be
/// redacted as its head: fewer say little, and would match too often.
const MIN_CUT_HEAD: usize = 4;

static CUT_SHAPES_STR: LazyLock<Vec<(&'static str, regex::Regex)>> = LazyLock::new(|| {
    CUT_SHAPES
        .iter()
        .map(|(name, re)| (*name, regex::Regex::new(re).expect("shape regex compiles")))
        .collect()
});

static SHAPES_STR: LazyLock<Vec<(&'static str, regex::Regex)>> = LazyLock::new(|| {
    SHAPES
        .iter()
        .map(|(name, re)| (*name, regex::Regex::new(re).expect("shape regex compiles")))
        .collect()
});

static SHAPES_BYTES: LazyLock<Vec<(&'static str, regex::bytes::Regex)>> = LazyLock::new(|| {
    SHAPES
        .iter()
        .map(|(name, re)| {
            (
                *name,
                regex::bytes::Regex::new(re).expect("shape regex compiles"),
            )
        })
        .collect()
});

/// How many replacements were made, by secret name and by shape.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub secrets: BTreeMap<String, u64>,
    pub shapes: BTreeMap<&'static str, u64>,
}

impl Counts {
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty() && self.shapes.is_empty()
    }

    pub fn total(&self) -> u64 {
        self.secrets.values().chain(self.shapes.values()).sum()
    }

    pub fn add(&mut self, other: &Counts) {
        for (k, v) in &other.secrets {
            *self.secrets.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.shapes {
            *self.shapes.entry(k).or_default() += v;
        }
    }

    /// As JSON for audit records: names and counts only, never values.
    pub fn to_json(&self) -> Value {
        serde_json::json!({ "secrets": self.secrets, "shapes": self.shapes })
    }
}

/// Replaces one server's secrets (and credential shapes) in its output.
pub struct Redactor {
    /// Every encoded form of every secret; `owner[i]` is pattern i's secret.
    matcher: Option<AhoCorasick>,
    /// The forms themselves, for text cut short (see [`Redactor::cut_tail`]).
    patterns: Vec<Vec<u8>>,
    owner: Vec<usize>,
    names: Vec<String>,
}

impl Redactor {
    /// `secrets` are (environment name, value) pairs. Values must be at
    /// least [`MIN_SECRET_LEN`] bytes (the caller checks, with a message).
    pub fn new(secrets: &[(String, Vec<u8>)]) -> Redactor {
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        let mut owner = Vec::new();
        for (i, (_, value)) in secrets.iter().enumerate() {
            for p in variants(value) {
                if !patterns.contains(&p) {
                    patterns.push(p);
                    owner.push(i);
                }
            }
        }
        let matcher = (!patterns.is_empty()).then(|| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&patterns)
                .expect("literal patterns always build")
        });
        Redactor {
            matcher,
            patterns,
            owner,
            names: secrets.iter().map(|(n, _)| n.clone()).collect(),
        }
    }

    /// The redactor of a server without secrets: credential shapes only,
    /// for what every server's records and the daemon's logs must not hold
    /// (a token on a command line).
    pub fn shapes_only() -> &'static Redactor {
        static SHAPES_ONLY: LazyLock<Redactor> = LazyLock::new(|| Redactor::new(&[]));
        &SHAPES_ONLY
    }

    /// Whether any secret is known (shapes are redacted either way).
    pub fn has_secrets(&self) -> bool {
        self.matcher.is_some()
    }

    fn replace_secrets(&self, hay: &[u8], counts: &mut Counts) -> Option<Vec<u8>> {
        let ac = self.matcher.as_ref()?;
        let mut out = Vec::new();
        let mut last = 0;
        for m in ac.find_iter(hay) {
            let name = &self.names[self.owner[m.pattern().as_usize()]];
            out.extend_from_slice(&hay[last..m.start()]);
            out.extend_from_slice(format!("[REDACTED:{name}]").as_bytes());
            *counts.secrets.entry(name.clone()).or_default() += 1;
            last = m.end();
        }
        if last == 0 {
            return None;
        }
        out.extend_from_slice(&hay[last..]);
        Some(out)
    }

    /// Redact raw bytes: a line that is not JSON, or stderr output.
    pub fn bytes<'a>(&self, data: &'a [u8], counts: &mut Counts) -> Cow<'a, [u8]> {
        let mut cur: Cow<[u8]> = Cow::Borrowed(data);
        if let Some(replaced) = self.replace_secrets(&cur, counts) {
            cur = Cow::Owned(replaced);
        }
        let shapes: &[_] = if may_hold_shape(&cur) {
            &SHAPES_BYTES
        } else {
            &[]
        };
        for (name, re) in shapes {
            let n = re.find_iter(&cur).count();
            if n > 0 {
                *counts.shapes.entry(name).or_default() += n as u64;
                let tag = format!("[REDACTED:{name}]");
                cur = Cow::Owned(re.replace_all(&cur, tag.as_bytes()).into_owned());
            }
        }
        cur
    }

    /// Redact one decoded string.
    pub fn text<'a>(&self, s: &'a str, counts: &mut Counts) -> Cow<'a, str> {
        let mut cur: Cow<str> = Cow::Borrowed(s);
        if let Some(replaced) = self.replace_secrets(cur.as_bytes(), counts) {
            // Patterns are whole secrets or their ASCII encodings; a match
            // inside valid UTF-8 that cut a character would need a secret
            // that starts or ends mid-character, so lossy is only a guard.
            cur = Cow::Owned(String::from_utf8_lossy(&replaced).into_owned());
        }
        let shapes: &[_] = if may_hold_shape(cur.as_bytes()) {
            &SHAPES_STR
        } else {
            &[]
        };
        for (name, re) in shapes {
            let n = re.find_iter(&cur).count();
            if n > 0 {
                *counts.shapes.entry(name).or_default() += n as u64;
                let tag = format!("[REDACTED:{name}]");
                cur = Cow::Owned(re.replace_all(&cur, tag.as_str()).into_owned());
            }
        }
        cur
    }

    /// Redact the end of a text that was cut short (an exec argument the
    /// kernel kept only `ARG_LEN` bytes of), after [`Redactor::text`]: the
    /// head of a secret or of a credential shape that the cut left there.
    pub fn cut_tail<'a>(&self, s: &'a str, counts: &mut Counts) -> Cow<'a, str> {
        if let Some((start, name)) = self.secret_head(s) {
            *counts.secrets.entry(name.to_owned()).or_default() += 1;
            return Cow::Owned(format!("{}[REDACTED:{name}]", &s[..start]));
        }
        let shapes: &[_] = if may_hold_shape(s.as_bytes()) {
            &CUT_SHAPES_STR
        } else {
            &[]
        };
        for (name, re) in shapes {
            if let Some(m) = re.find(s) {
                *counts.shapes.entry(name).or_default() += 1;
                return Cow::Owned(format!("{}[REDACTED:{name}]", &s[..m.start()]));
            }
        }
        Cow::Borrowed(s)
    }

    /// Where the longest head (at least [`MIN_CUT_HEAD`] bytes, not the
    /// whole) of a secret's form that ends `s` starts, and whose it is.
    fn secret_head(&self, s: &str) -> Option<(usize, &str)> {
        let hay = s.as_bytes();
        let (len, i) = self
            .patterns
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                (MIN_CUT_HEAD..p.len().min(hay.len() + 1))
                    .rev()
                    .find(|&k| hay.ends_with(&p[..k]))
                    .map(|k| (k, i))
            })
            .max()?;
        // A head may end inside a character of a non-ASCII secret.
        let start = (0..=hay.len() - len)
            .rev()
            .find(|&b| s.is_char_boundary(b))
            .unwrap_or(0);
        Some((start, &self.names[self.owner[i]]))
    }

    /// Redact every string (and object key) in a JSON value in place;
    /// returns whether anything changed.
    pub fn json(&self, v: &mut Value, counts: &mut Counts) -> bool {
        match v {
            Value::String(s) => match self.text(s, counts) {
                Cow::Owned(new) => {
                    *s = new;
                    true
                }
                Cow::Borrowed(_) => false,
            },
            Value::Array(items) => items
                .iter_mut()
                .fold(false, |changed, item| self.json(item, counts) | changed),
            Value::Object(map) => {
                let mut changed = false;
                let old = std::mem::take(map);
                for (k, mut item) in old {
                    changed |= self.json(&mut item, counts);
                    let key = match self.text(&k, counts) {
                        Cow::Owned(new) => {
                            changed = true;
                            new
                        }
                        Cow::Borrowed(_) => k,
                    };
                    map.insert(key, item);
                }
                changed
            }
            _ => false,
        }
    }
}

/// Every form of `value` the redactor looks for.
fn variants(value: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![value.to_vec()];
    // Multi-line secrets (PEM keys) reach a line-based relay line by line.
    if value.contains(&b'\n') {
        out.extend(
            value
                .split(|&b| b == b'\n')
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                .filter(|l| l.len() >= MIN_SECRET_LEN)
                .map(<[u8]>::to_vec),
        );
    }
    if let Ok(text) = std::str::from_utf8(value) {
        let json = serde_json::to_string(text).expect("strings serialise");
        let escaped = json[1..json.len() - 1].to_string();
        out.push(escaped.clone().into_bytes());
        out.push(escaped.replace('/', "\\/").into_bytes());
    }
    for engine in [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::URL_SAFE,
    ] {
        for skew in 0..3 {
            out.push(aligned_base64(engine, value, skew));
        }
    }
    out.push(hex(value, false));
    out.push(hex(value, true));
    for upper in [false, true] {
        out.push(percent(value, upper, false));
        out.push(percent(value, upper, true));
    }
    out.retain(|p| p.len() >= MIN_SECRET_LEN.min(value.len()).max(4));
    out.sort();
    out.dedup();
    out
}

/// The base64 characters that depend only on `value` when it starts
/// `skew` bytes into a larger encoded buffer.
fn aligned_base64(engine: &base64::engine::GeneralPurpose, value: &[u8], skew: usize) -> Vec<u8> {
    let mut buf = vec![0u8; skew];
    buf.extend_from_slice(value);
    let enc = engine.encode(&buf);
    let first = (skew * 8).div_ceil(6);
    let last = ((skew + value.len()) * 8) / 6; // exclusive: chars fully inside
    enc.as_bytes()
        .get(first..last.min(enc.len()))
        .unwrap_or_default()
        .to_vec()
}

fn hex(value: &[u8], upper: bool) -> Vec<u8> {
    value
        .iter()
        .flat_map(|b| {
            if upper {
                format!("{b:02X}")
            } else {
                format!("{b:02x}")
            }
            .into_bytes()
        })
        .collect()
}

/// Percent-encoding: of the bytes URLs must escape, or (`all`) of every
/// byte, as a leak trying to dodge the usual form would.
fn percent(value: &[u8], upper: bool, all: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in value {
        if !all && (b.is_ascii_alphanumeric() || b"-._~".contains(&b)) {
            out.push(b);
        } else if upper {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.extend_from_slice(format!("%{b:02x}").as_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    use super::*;

    const SECRET: &str = "s3cr3t-T0ken/with+odd?chars";

    fn redactor() -> Redactor {
        Redactor::new(&[("API_TOKEN".into(), SECRET.as_bytes().to_vec())])
    }

    fn red(s: &str) -> (String, Counts) {
        let mut c = Counts::default();
        let out = String::from_utf8(redactor().bytes(s.as_bytes(), &mut c).into_owned()).unwrap();
        (out, c)
    }

    #[test]
    fn a_cut_text_loses_the_head_of_a_secret_or_shape_at_its_end() {
        let r = redactor();
        let mut c = Counts::default();
        assert_eq!(
            r.cut_tail("--token=s3cr3t-T0k", &mut c),
            "--token=[REDACTED:API_TOKEN]"
        );
        // Any of its forms: the head of the base64 one.
        let b64 = STANDARD.encode(SECRET);
        let cut = format!("--token={}", &b64[..10]);
        assert_eq!(r.cut_tail(&cut, &mut c), "--token=[REDACTED:API_TOKEN]");
        assert_eq!(
            r.cut_tail("Authorization: token ghp_abcdefghijklmnop", &mut c),
            "Authorization: token [REDACTED:github_token]"
        );
        assert_eq!(
            r.cut_tail("key=AKIAIOSFOD", &mut c),
            "key=[REDACTED:aws_access_key]"
        );
        assert_eq!(
            r.cut_tail("-----BEGIN PRIVATE KEY-----\nMIIBVQIBADAN", &mut c),
            "[REDACTED:private_key]"
        );
        assert_eq!(c.secrets["API_TOKEN"], 2);
        assert_eq!(c.total(), 5);
        // Fewer than MIN_CUT_HEAD bytes of a secret, and plain text, stay.
        for plain in ["--flag=s3c", "an ordinary argument", "ghp"] {
            assert!(
                matches!(r.cut_tail(plain, &mut c), Cow::Borrowed(_)),
                "{plain}"
            );
        }
    }

    #[test]
    fn raw_and_every_encoding_are_redacted() {
        let encodings = [
            SECRET.to_string(),
            STANDARD.encode(SECRET),
            URL_SAFE_NO_PAD.encode(SECRET),
            SECRET.bytes().map(|b| format!("{b:02x}")).collect(),
            SECRET.bytes().map(|b| format!("{b:02X}")).collect(),
            SECRET.bytes().map(|b| format!("%{b:02X}")).collect(),
            "s3cr3t-T0ken%2Fwith%2Bodd%3Fchars".to_string(),
            "s3cr3t-T0ken\\/with+odd?chars".to_string(),
        ];
        for enc in encodings {
            let (out, counts) = red(&format!("before {enc} after"));
            assert!(!out.contains(&enc), "{enc} survived: {out}");
            assert!(out.contains("[REDACTED:API_TOKEN]"), "{out}");
            assert_eq!(counts.secrets["API_TOKEN"], 1, "{enc}");
        }
    }

    #[test]
    fn a_secret_inside_a_larger_base64_blob_is_found_at_every_alignment() {
        for skew in 0..3 {
            let mut blob = b"xyz"[..skew].to_vec();
            blob.extend_from_slice(SECRET.as_bytes());
            blob.extend_from_slice(b"trailing data");
            for enc in [STANDARD.encode(&blob), URL_SAFE_NO_PAD.encode(&blob)] {
                let (out, _) = red(&enc);
                assert!(out.contains("[REDACTED:API_TOKEN]"), "skew {skew}: {out}");
            }
        }
    }

    #[test]
    fn json_is_redacted_after_decoding_escapes() {
        let escaped: String = SECRET
            .chars()
            .map(|c| format!("\\u{:04x}", c as u32))
            .collect();
        let line = format!(r#"{{"result":{{"content":[{{"text":"token={escaped}"}}]}}}}"#);
        let mut v: Value = serde_json::from_str(&line).unwrap();
        let mut counts = Counts::default();
        assert!(redactor().json(&mut v, &mut counts));
        assert_eq!(
            v["result"]["content"][0]["text"],
            "token=[REDACTED:API_TOKEN]"
        );
        assert_eq!(counts.total(), 1);
    }

    #[test]
    fn credential_shapes_are_redacted_without_any_secret() {
        let r = Redactor::new(&[]);
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        let cases = [
            ("ghp_0123456789abcdefghijABCDEFGHIJ012345", "github_token"),
            ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", "github_token"),
            ("AKIAIOSFODNN7EXAMPLE", "aws_access_key"),
            ("xoxb-1234567890-abcdefghij", "slack_token"),
            (jwt, "jwt"),
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEA\n-----END OPENSSH PRIVATE KEY-----",
                "private_key",
            ),
        ];
        for (cred, shape) in cases {
            let mut c = Counts::default();
            let input = format!("x {cred} y");
            let out = r.text(&input, &mut c);
            assert_eq!(out, format!("x [REDACTED:{shape}] y"));
            assert_eq!(c.shapes[shape], 1);
        }
        let mut c = Counts::default();
        assert!(matches!(
            r.text("plain words, ghp_short", &mut c),
            Cow::Borrowed(_)
        ));
        assert!(c.is_empty());
    }

    #[test]
    fn multi_line_secrets_are_caught_line_by_line() {
        let key = "line-one-of-the-key\nline-two-of-the-key";
        let r = Redactor::new(&[("KEY".into(), key.as_bytes().to_vec())]);
        let mut c = Counts::default();
        let out = r.bytes(b"line-two-of-the-key", &mut c);
        assert_eq!(&*out, b"[REDACTED:KEY]");
    }

    #[test]
    fn counts_never_carry_values() {
        let (_, counts) = red(SECRET);
        assert!(!counts.to_json().to_string().contains(SECRET));
    }
}
