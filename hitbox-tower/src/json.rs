//! Strict JSON for keys: a body is parsed once into a tree that keeps every
//! number as it was written, and written back in one canonical form.
//!
//! Why not `serde_json::Value`: a key must never let two bodies that an
//! origin could read differently share an entry. `serde_json` reads
//! `{"a":1,"a":2}` as `{"a":2}` (another parser may keep the first), and
//! turns numbers it cannot hold exactly (`12345678901234567890123`,
//! `0.10000000000000000001`) into the nearest `f64`, so two different
//! numbers could give one key. This parser refuses duplicate names, keeps
//! numbers as their text, refuses what RFC 8259 does not allow (a byte
//! order mark, invalid UTF-8, lone surrogates, control characters in
//! strings, trailing commas) and nests at most [`MAX_DEPTH`] deep.
//!
//! The canonical form: no whitespace, object members sorted by name (by
//! the bytes of their UTF-8), strings escaped only where they must be (`"`,
//! `\`, control characters as `\u00xx`), numbers as written. Two bodies
//! have the same canonical form exactly when they hold the same names,
//! strings (once unescaped) and number texts in the same arrays: key order,
//! whitespace and the spelling of escapes do not split entries, and nothing
//! else joins them.

/// How deep arrays and objects may nest; deeper bodies are refused (and
/// the parser's recursion stays bounded).
pub(crate) const MAX_DEPTH: usize = 64;

/// A JSON value, as the parser read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    /// The number's text, as written (valid by RFC 8259).
    Number(Box<str>),
    String(Box<str>),
    Array(Vec<Node>),
    /// Members sorted by name; names are unique.
    Object(Vec<(Box<str>, Node)>),
}

/// Parses `input` as one JSON text; `None` when it is not one (see the
/// module documentation for what is refused).
pub(crate) fn parse(input: &[u8]) -> Option<Node> {
    let mut parser = Parser { input, pos: 0 };
    parser.skip_whitespace();
    let node = parser.value(0)?;
    parser.skip_whitespace();
    (parser.pos == input.len()).then_some(node)
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn literal(&mut self, word: &[u8], node: Node) -> Option<Node> {
        if self.input[self.pos..].starts_with(word) {
            self.pos += word.len();
            Some(node)
        } else {
            None
        }
    }

    fn value(&mut self, depth: usize) -> Option<Node> {
        match self.peek()? {
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b'"' => self.string().map(Node::String),
            b't' => self.literal(b"true", Node::Bool(true)),
            b'f' => self.literal(b"false", Node::Bool(false)),
            b'n' => self.literal(b"null", Node::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn object(&mut self, depth: usize) -> Option<Node> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.pos += 1;
        let mut members: Vec<(Box<str>, Node)> = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Some(Node::Object(members));
        }
        loop {
            self.skip_whitespace();
            if self.peek() != Some(b'"') {
                return None;
            }
            let name = self.string()?;
            self.skip_whitespace();
            if self.peek() != Some(b':') {
                return None;
            }
            self.pos += 1;
            self.skip_whitespace();
            let value = self.value(depth)?;
            members.push((name, value));
            self.skip_whitespace();
            match self.peek()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    break;
                }
                _ => return None,
            }
        }
        // Stable, so that of two equal names the first stays first; then
        // any two neighbours with one name are a duplicate.
        members.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        if members.windows(2).any(|pair| pair[0].0 == pair[1].0) {
            return None;
        }
        Some(Node::Object(members))
    }

    fn array(&mut self, depth: usize) -> Option<Node> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Some(Node::Array(items));
        }
        loop {
            self.skip_whitespace();
            items.push(self.value(depth)?);
            self.skip_whitespace();
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    return Some(Node::Array(items));
                }
                _ => return None,
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Option<Node> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        // Only ASCII was consumed.
        let text = std::str::from_utf8(&self.input[start..self.pos]).ok()?;
        Some(Node::Number(text.into()))
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.input.get(self.pos..self.pos + 4)?;
        let mut value = 0;
        for &digit in digits {
            value = value * 16 + (digit as char).to_digit(16)?;
        }
        self.pos += 4;
        Some(value)
    }

    /// A string, unescaped; `None` for invalid UTF-8, a control character,
    /// an unknown escape or a lone surrogate.
    fn string(&mut self) -> Option<Box<str>> {
        self.pos += 1;
        let start = self.pos;
        // Most strings hold no escape: borrow them.
        loop {
            match self.peek()? {
                b'"' => {
                    let text = std::str::from_utf8(&self.input[start..self.pos]).ok()?;
                    self.pos += 1;
                    return Some(text.into());
                }
                b'\\' => break,
                0x00..=0x1f => return None,
                _ => self.pos += 1,
            }
        }
        let mut out = self.input[start..self.pos].to_vec();
        loop {
            match self.peek()? {
                b'"' => {
                    self.pos += 1;
                    return String::from_utf8(out).ok().map(String::into_boxed_str);
                }
                b'\\' => {
                    self.pos += 1;
                    let escaped = self.peek()?;
                    self.pos += 1;
                    let ch = match escaped {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let first = self.hex4()?;
                            let code = match first {
                                0xD800..=0xDBFF => {
                                    if !self.input[self.pos..].starts_with(b"\\u") {
                                        return None;
                                    }
                                    self.pos += 2;
                                    let second = self.hex4()?;
                                    if !(0xDC00..=0xDFFF).contains(&second) {
                                        return None;
                                    }
                                    0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                                }
                                0xDC00..=0xDFFF => return None,
                                other => other,
                            };
                            char::from_u32(code)?
                        }
                        _ => return None,
                    };
                    let mut buf = [0; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                0x00..=0x1f => return None,
                byte => {
                    out.push(byte);
                    self.pos += 1;
                }
            }
        }
    }
}

impl Node {
    /// Appends the canonical form (see the module documentation).
    pub(crate) fn write_canonical(&self, out: &mut Vec<u8>) {
        match self {
            Node::Null => out.extend_from_slice(b"null"),
            Node::Bool(true) => out.extend_from_slice(b"true"),
            Node::Bool(false) => out.extend_from_slice(b"false"),
            Node::Number(text) => out.extend_from_slice(text.as_bytes()),
            Node::String(text) => write_string(text, out),
            Node::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write_canonical(out);
                }
                out.push(b']');
            }
            Node::Object(members) => {
                out.push(b'{');
                for (i, (name, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_string(name, out);
                    out.push(b':');
                    value.write_canonical(out);
                }
                out.push(b'}');
            }
        }
    }

    /// The canonical form, as bytes.
    pub(crate) fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_canonical(&mut out);
        out
    }

    /// The member `name` of an object.
    pub(crate) fn get(&self, name: &str) -> Option<&Node> {
        match self {
            Node::Object(members) => members
                .binary_search_by(|(key, _)| key.as_bytes().cmp(name.as_bytes()))
                .ok()
                .map(|at| &members[at].1),
            _ => None,
        }
    }

    /// The string this is, if it is one.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Node::String(text) => Some(text),
            _ => None,
        }
    }

    /// The value a JSON Pointer (RFC 6901) names, read as
    /// `serde_json::Value::pointer` reads it, so that a key part and a
    /// predicate agree on what a pointer selects: `""` is the whole value,
    /// other pointers start with `/`, `~1` is `/` and `~0` is `~`, and an
    /// array index is a decimal number without a sign or leading zero.
    pub(crate) fn pointer(&self, pointer: &str) -> Option<&Node> {
        if pointer.is_empty() {
            return Some(self);
        }
        let rest = pointer.strip_prefix('/')?;
        rest.split('/').try_fold(self, |target, token| {
            let token = token.replace("~1", "/").replace("~0", "~");
            match target {
                Node::Object(_) => target.get(&token),
                Node::Array(items) => array_index(&token).and_then(|at| items.get(at)),
                _ => None,
            }
        })
    }

    /// Whether this equals `value` as `serde_json` compares values: numbers
    /// by what `serde_json` reads from their text (`1` and `1.0` differ),
    /// objects whatever their member order. The same as comparing
    /// [`Node::to_value`] with it, without building the value.
    pub(crate) fn equals(&self, value: &serde_json::Value) -> bool {
        use serde_json::Value;
        match (self, value) {
            (Node::Null, Value::Null) => true,
            (Node::Bool(a), Value::Bool(b)) => a == b,
            (Node::Number(text), Value::Number(number)) => text
                .parse::<serde_json::Number>()
                .is_ok_and(|parsed| parsed == *number),
            (Node::String(a), Value::String(b)) => **a == **b,
            (Node::Array(items), Value::Array(values)) => {
                items.len() == values.len()
                    && items.iter().zip(values).all(|(item, value)| item.equals(value))
            }
            (Node::Object(members), Value::Object(map)) => {
                members.len() == map.len()
                    && members
                        .iter()
                        .all(|(name, node)| map.get(&**name).is_some_and(|value| node.equals(value)))
            }
            _ => false,
        }
    }

    /// The same value as a `serde_json::Value`, for predicates; `None`
    /// when a number is out of `serde_json`'s range.
    pub(crate) fn to_value(&self) -> Option<serde_json::Value> {
        use serde_json::Value;
        Some(match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Number(text) => Value::Number(text.parse().ok()?),
            Node::String(text) => Value::String(text.to_string()),
            Node::Array(items) => Value::Array(items.iter().map(Node::to_value).collect::<Option<_>>()?),
            Node::Object(members) => {
                let mut map = serde_json::Map::new();
                for (name, value) in members {
                    map.insert(name.to_string(), value.to_value()?);
                }
                Value::Object(map)
            }
        })
    }
}

fn array_index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return None;
    }
    token.parse().ok()
}

fn write_string(text: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &byte in text.as_bytes() {
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x00..=0x1f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(byte >> 4) as usize]);
                out.push(HEX[(byte & 0xf) as usize]);
            }
            _ => out.push(byte),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(text: &str) -> Option<String> {
        parse(text.as_bytes()).map(|node| String::from_utf8(node.canonical()).unwrap())
    }

    #[test]
    fn key_order_whitespace_and_escapes_do_not_matter() {
        let a = canon(r#" { "b" : [1, 2.50, {"y": null, "x": true}], "a": "\u0041\n" } "#).unwrap();
        let b = canon("{\"a\":\"A\\n\",\"b\":[1,2.50,{\"x\":true,\"y\":null}]}").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, r#"{"a":"A\u000a","b":[1,2.50,{"x":true,"y":null}]}"#);
        assert_eq!(canon(r#""\/\"\\""#).unwrap(), r#""/\"\\""#);
        assert_eq!(canon(r#""\ud83d\ude00""#).unwrap(), "\"\u{1F600}\"");
        assert_eq!(canon("\"é\"").unwrap(), "\"é\"");
    }

    #[test]
    fn what_could_be_read_two_ways_is_refused() {
        for bad in [
            r#"{"a":1,"a":2}"#,
            r#"{"a":1,"b":{"c":1,"c":1}}"#,
            r#"{"a":1,}"#,
            "[1,]",
            "\u{feff}{}",
            r#""\ud800""#,
            r#""\udc00""#,
            r#""\ud800\u0041""#,
            "\"a\u{1}\"",
            r#""\x""#,
            "01",
            "1.",
            ".5",
            "+1",
            "1e",
            "-",
            "NaN",
            "tru",
            "nul",
            "{} {}",
            "",
            " ",
            "{'a':1}",
            r#"{"a" 1}"#,
            "[1 2]",
            "\"unterminated",
        ] {
            assert_eq!(canon(bad), None, "{bad:?}");
        }
        assert_eq!(parse(b"\"\xff\""), None);
        assert_eq!(parse(b"{\"\xc3\":1}"), None);
    }

    #[test]
    fn numbers_keep_their_text() {
        assert_ne!(canon("1"), canon("1.0"));
        assert_ne!(canon("12345678901234567890123"), canon("12345678901234567890124"));
        assert_ne!(canon("0.1"), canon("0.10000000000000000001"));
        assert_eq!(canon("-0.5E+10").unwrap(), "-0.5E+10");
        assert_eq!(canon("[0, -0, 1e400]").unwrap(), "[0,-0,1e400]");
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(canon(&deep(MAX_DEPTH)).is_some());
        assert!(canon(&deep(MAX_DEPTH + 1)).is_none());
        // Far past the bound, and no stack overflow.
        assert!(canon(&deep(100_000)).is_none());
        let objects = |n: usize| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n));
        assert!(canon(&objects(MAX_DEPTH)).is_some());
        assert!(canon(&objects(MAX_DEPTH + 1)).is_none());
    }

    #[test]
    fn pointers_select_as_serde_json_does() {
        let text = r#"{"a":{"b":[10,{"c/d":1,"e~f":2,"":3}]},"0":"zero","list":[1,2,3]}"#;
        let node = parse(text.as_bytes()).unwrap();
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        for pointer in [
            "",
            "/a",
            "/a/b",
            "/a/b/0",
            "/a/b/1/c~1d",
            "/a/b/1/e~0f",
            "/a/b/1/",
            "/0",
            "/list/2",
            "/list/3",
            "/list/01",
            "/list/+1",
            "/list/-",
            "/list/-1",
            "/missing",
            "a",
            "/a/b/0/x",
            "/a//",
        ] {
            let ours = node.pointer(pointer).map(|n| n.to_value().unwrap());
            assert_eq!(ours.as_ref(), value.pointer(pointer), "{pointer:?}");
        }
    }

    #[test]
    fn equality_is_serde_jsons() {
        use serde_json::json;
        let values = [
            json!(null),
            json!(true),
            json!(false),
            json!(1),
            json!(-1),
            json!(1.0),
            json!(1.5),
            json!("1"),
            json!(""),
            json!([]),
            json!([1, "a"]),
            json!(["a", 1]),
            json!({}),
            json!({"a": 1, "b": [null]}),
            json!({"b": [null], "a": 1}),
            json!({"a": 1}),
        ];
        let texts = [
            "null",
            "true",
            "false",
            "1",
            "-1",
            "1.0",
            "1.5",
            "1.50",
            "10e-1",
            "\"1\"",
            "\"\"",
            "[]",
            "[1,\"a\"]",
            "[\"a\",1]",
            "{}",
            "{\"b\":[null],\"a\":1}",
            "{\"a\":1}",
            "{\"a\":1.0}",
            "1e400",
        ];
        for text in texts {
            let node = parse(text.as_bytes()).unwrap();
            for value in &values {
                let converted = node.to_value();
                assert_eq!(
                    node.equals(value),
                    converted.as_ref() == Some(value),
                    "{text} against {value}"
                );
            }
        }
    }

    #[test]
    fn member_lookup_and_values() {
        let node = parse(br#"{"q":"x","n":null,"v":{"b":2,"a":1}}"#).unwrap();
        assert_eq!(node.get("q").and_then(Node::as_str), Some("x"));
        assert_eq!(node.get("n"), Some(&Node::Null));
        assert_eq!(node.get("z"), None);
        assert_eq!(Node::Null.get("q"), None);
        assert_eq!(
            node.to_value().unwrap(),
            serde_json::json!({"q": "x", "n": null, "v": {"a": 1, "b": 2}})
        );
        assert_eq!(parse(b"1e400").unwrap().to_value(), None);
    }
}
