//! GraphQL over HTTP, cached as reads: only `query` operations, never
//! `mutation` or `subscription`.
//!
//! A rule with [`Rule::graphql`](crate::Rule::graphql) caches `GET` and
//! `POST` requests to its route whose selected operation is a query:
//!
//! - **`POST`** with a JSON body (`application/json` or another `+json`
//!   type, not compressed): `{"query": …, "operationName": …, "variables":
//!   …, "extensions": …}`. The key holds a digest of the whole body in a
//!   canonical form: member order, whitespace and the spelling of string
//!   escapes do not split entries, while any other difference (a variable,
//!   the operation name, an extension, the text of the document) does. The
//!   document itself is keyed exactly as sent.
//! - **`GET`** with the same fields as URL parameters (`?query=…&variables=…`):
//!   keyed by the decoded parameters.
//!
//! Which operation runs is found the way a server finds it: the one named
//! by `operationName`, or the only operation of the document (`{ … }` is a
//! query). Only enough of the document is read to know its operations'
//! types and names: a small lexer skips strings, block strings, comments
//! and the insides of selection sets, argument lists and values. Whatever
//! it cannot read with certainty passes through uncached: a document with
//! a type definition, a character outside the language, an unbalanced
//! bracket, several operations and no `operationName`, an anonymous
//! operation beside others, two operations of one name, an `operationName`
//! the document does not define, a batch (a JSON array). The `Cache-Status`
//! then says `fwd=bypass; detail=not-a-query`, and for a body that is not
//! JSON `detail=invalid-json`.
//!
//! # Persisted queries
//!
//! Automatic persisted queries (the `extensions.persistedQuery.sha256Hash`
//! of Apollo's protocol) are keyed by their hash along with the rest of the
//! body. A request that carries only the hash cannot tell whether it is a
//! query: the layer caches it only when it knows the document behind the
//! hash. It learns a document from a request that carries both the
//! document and its hash, once the SHA-256 of the document matches the
//! hash (a request whose hash does not match its document passes through,
//! and teaches nothing), and it can be told documents up front
//! ([`GraphQl::persisted_query`], for a manifest of trusted documents).
//! What it learns is kept in this process, up to
//! [`GraphQl::remember`] hashes; another instance learns on its own (or
//! from the same manifest).
//!
//! ```
//! use hitbox_tower::graphql::{GraphQl, OperationType, operation_type};
//!
//! let document = "# mutation in a comment\nquery Feed { posts(filter: \"mutation {\") { id } }\nmutation Like { like }";
//! assert_eq!(operation_type(document, Some("Feed")), Some(OperationType::Query));
//! assert_eq!(operation_type(document, Some("Like")), Some(OperationType::Mutation));
//! // Two operations and none named: a server would refuse it, and it is not cached.
//! assert_eq!(operation_type(document, None), None);
//! assert_eq!(operation_type("{ me { name } }", None), Some(OperationType::Query));
//!
//! let graphql = GraphQl::new().persisted_query("query Me { me { name } }");
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::request::Parts;
use sha2::{Digest, Sha256};

use crate::headers::BypassReason;
use crate::json::{self, Node};

/// How many persisted-query hashes a [`GraphQl`] remembers by default.
pub const DEFAULT_REMEMBERED_HASHES: usize = 10_000;

/// The type of a GraphQL operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationType {
    /// `query`, or the `{ … }` shorthand: a read, cached.
    Query,
    /// `mutation`: never cached.
    Mutation,
    /// `subscription`: never cached.
    Subscription,
}

/// The type of the operation a server would run for `document` and
/// `operation_name`, or `None` when that cannot be told with certainty (see
/// the [module documentation](self)).
pub fn operation_type(document: &str, operation_name: Option<&str>) -> Option<OperationType> {
    select(&operations(document)?, operation_name)
}

/// One operation of a document: its name (`None` when anonymous) and type.
type Operation<'a> = (Option<&'a str>, OperationType);

/// The operations `document` defines, in order; `None` unless it is an
/// executable document of operations and fragments this lexer reads whole.
fn operations(document: &str) -> Option<Vec<Operation<'_>>> {
    let mut lexer = Lexer {
        source: document,
        pos: 0,
    };
    let mut found = Vec::new();
    while let Some(token) = lexer.next()? {
        match token {
            Token::Punct(b'{') => {
                lexer.skip_group(b'{')?;
                found.push((None, OperationType::Query));
            }
            Token::Name(keyword @ ("query" | "mutation" | "subscription")) => {
                let kind = match keyword {
                    "query" => OperationType::Query,
                    "mutation" => OperationType::Mutation,
                    _ => OperationType::Subscription,
                };
                let mut token = lexer.next()??;
                let mut name = None;
                if let Token::Name(given) = token {
                    name = Some(given);
                    token = lexer.next()??;
                }
                lexer.skip_to_selection_set(token)?;
                found.push((name, kind));
            }
            Token::Name("fragment") => {
                // `fragment Name on Type`, directives, a selection set.
                match lexer.next()?? {
                    Token::Name(name) if name != "on" => {}
                    _ => return None,
                }
                if lexer.next()?? != Token::Name("on") {
                    return None;
                }
                if !matches!(lexer.next()??, Token::Name(_)) {
                    return None;
                }
                let token = lexer.next()??;
                lexer.skip_to_selection_set(token)?;
            }
            // A type system definition, a stray token: not something this
            // cache reads.
            _ => return None,
        }
    }
    (!found.is_empty()).then_some(found)
}

/// The operation a server runs: the one `name` names, or the only one.
/// `None` for a document a server refuses to run (GraphQL's "Operation
/// Name Uniqueness" and "Lone Anonymous Operation" rules) or without that
/// operation.
fn select(operations: &[Operation<'_>], name: Option<&str>) -> Option<OperationType> {
    if operations.len() > 1 && operations.iter().any(|(n, _)| n.is_none()) {
        return None;
    }
    for (at, (n, _)) in operations.iter().enumerate() {
        if operations[..at].iter().any(|(m, _)| m == n) {
            return None;
        }
    }
    match name {
        None if operations.len() == 1 => Some(operations[0].1),
        None => None,
        Some(name) => operations
            .iter()
            .find(|(n, _)| *n == Some(name))
            .map(|(_, kind)| *kind),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    /// One of `! $ & ( ) : = @ [ ] { | }`, or `.` for `...`.
    Punct(u8),
    Name(&'a str),
    /// A string, block string or number: its content never matters here.
    Value,
}

/// The GraphQL lexer, as far as finding definitions needs: it skips what
/// the language ignores (white space, line terminators, commas, comments,
/// a byte order mark) and reads names, punctuators, strings and numbers.
struct Lexer<'a> {
    source: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn rest(&self) -> &'a [u8] {
        &self.source.as_bytes()[self.pos..]
    }

    /// The next token; `Some(None)` at the end, `None` for text that is not
    /// GraphQL.
    fn next(&mut self) -> Option<Option<Token<'a>>> {
        loop {
            let Some(&byte) = self.rest().first() else {
                return Some(None);
            };
            match byte {
                b' ' | b'\t' | b'\n' | b'\r' | b',' => self.pos += 1,
                b'#' => {
                    let len = self
                        .rest()
                        .iter()
                        .position(|&b| b == b'\n' || b == b'\r')
                        .unwrap_or(self.rest().len());
                    self.pos += len;
                }
                _ if self.rest().starts_with("\u{feff}".as_bytes()) => self.pos += 3,
                b'!' | b'$' | b'&' | b'(' | b')' | b':' | b'=' | b'@' | b'[' | b']' | b'{' | b'|' | b'}' => {
                    self.pos += 1;
                    return Some(Some(Token::Punct(byte)));
                }
                b'.' => {
                    if !self.rest().starts_with(b"...") {
                        return None;
                    }
                    self.pos += 3;
                    return Some(Some(Token::Punct(b'.')));
                }
                b'"' => {
                    self.string()?;
                    return Some(Some(Token::Value));
                }
                b'_' | b'A'..=b'Z' | b'a'..=b'z' => {
                    let len = self
                        .rest()
                        .iter()
                        .position(|&b| !(b == b'_' || b.is_ascii_alphanumeric()))
                        .unwrap_or(self.rest().len());
                    let name = &self.source[self.pos..self.pos + len];
                    self.pos += len;
                    return Some(Some(Token::Name(name)));
                }
                b'-' | b'0'..=b'9' => {
                    self.pos += 1;
                    let len = self
                        .rest()
                        .iter()
                        .position(|&b| !matches!(b, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-'))
                        .unwrap_or(self.rest().len());
                    self.pos += len;
                    // A number is never directly followed by a name.
                    if let Some(&next) = self.rest().first()
                        && (next == b'_' || next.is_ascii_alphabetic())
                    {
                        return None;
                    }
                    return Some(Some(Token::Value));
                }
                _ => return None,
            }
        }
    }

    /// Skips a string or a block string, the opening quote included.
    fn string(&mut self) -> Option<()> {
        if self.rest().starts_with(b"\"\"\"") {
            self.pos += 3;
            loop {
                let rest = self.rest();
                if rest.starts_with(b"\\\"\"\"") {
                    self.pos += 4;
                } else if rest.starts_with(b"\"\"\"") {
                    self.pos += 3;
                    return Some(());
                } else if rest.is_empty() {
                    return None;
                } else {
                    self.pos += 1;
                }
            }
        }
        self.pos += 1;
        loop {
            match *self.rest().first()? {
                b'"' => {
                    self.pos += 1;
                    return Some(());
                }
                // A line terminator ends no string: the document is broken.
                b'\n' | b'\r' => return None,
                b'\\' => {
                    match self.rest().get(1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' | b'u' => {}
                        _ => return None,
                    }
                    self.pos += 2;
                }
                _ => self.pos += 1,
            }
        }
    }

    /// Skips to the end of the group `open` began, across nested groups of
    /// `()`, `[]` and `{}`, which must close in order.
    fn skip_group(&mut self, open: u8) -> Option<()> {
        let closer = |open: u8| match open {
            b'{' => b'}',
            b'(' => b')',
            _ => b']',
        };
        let mut expected = vec![closer(open)];
        while let Some(&want) = expected.last() {
            match self.next()?? {
                Token::Punct(b @ (b'{' | b'(' | b'[')) => expected.push(closer(b)),
                Token::Punct(b @ (b'}' | b')' | b']')) => {
                    if b != want {
                        return None;
                    }
                    expected.pop();
                }
                _ => {}
            }
        }
        Some(())
    }

    /// From `token` on: variable definitions, directives (`@name(…)`), then
    /// the selection set, skipped whole.
    fn skip_to_selection_set(&mut self, mut token: Token<'a>) -> Option<()> {
        loop {
            match token {
                Token::Punct(b'(') => self.skip_group(b'(')?,
                Token::Punct(b'@') => {
                    if !matches!(self.next()??, Token::Name(_)) {
                        return None;
                    }
                }
                Token::Punct(b'{') => return self.skip_group(b'{'),
                _ => return None,
            }
            token = self.next()??;
        }
    }
}

/// The GraphQL preset of a rule: see the [module documentation](self).
///
/// Cheap to clone: clones share what was learned about persisted queries.
///
/// ```
/// use hitbox_tower::Rule;
/// use hitbox_tower::graphql::GraphQl;
/// use hitbox_tower::predicate::Path;
///
/// let rule = Rule::new()
///     .when(Path::exact("/graphql"))
///     .graphql(GraphQl::new().remember(1_000));
/// ```
#[derive(Clone)]
pub struct GraphQl {
    /// Documents given up front, by hash: never forgotten.
    trusted: Arc<HashMap<String, KnownOperations>>,
    learned: Arc<Learned>,
}

/// The operations of a known document, owned.
type KnownOperations = Arc<[(Option<Box<str>>, OperationType)]>;

/// Persisted-query hashes learned from requests, with the operations each
/// document defines.
struct Learned {
    capacity: usize,
    documents: Mutex<HashMap<String, KnownOperations>>,
}

impl Learned {
    fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Learned {
            capacity,
            documents: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, KnownOperations>> {
        // The table holds plain data: a panic elsewhere leaves it usable.
        self.documents
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for GraphQl {
    fn default() -> Self {
        GraphQl::new()
    }
}

impl std::fmt::Debug for GraphQl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphQl")
            .field("persisted_queries", &self.trusted.len())
            .field("remember", &self.learned.capacity)
            .field("learned", &self.learned_hashes())
            .finish()
    }
}

impl GraphQl {
    /// Queries cached, mutations and subscriptions passed through, and up
    /// to [`DEFAULT_REMEMBERED_HASHES`] persisted-query hashes learned.
    pub fn new() -> Self {
        GraphQl {
            trusted: Arc::new(HashMap::new()),
            learned: Learned::new(DEFAULT_REMEMBERED_HASHES),
        }
    }

    /// How many persisted-query hashes are learned from requests (default
    /// [`DEFAULT_REMEMBERED_HASHES`]); zero learns none. When the table is
    /// full it is emptied, and requests that carry only a hash pass through
    /// until their documents are seen again. Documents given with
    /// [`GraphQl::persisted_query`] are never forgotten.
    pub fn remember(mut self, hashes: usize) -> Self {
        self.learned = Learned::new(hashes);
        self
    }

    /// Knows `document` from the start, under its SHA-256 (hex, lower
    /// case), so that requests carrying only that hash are cached from the
    /// first one, on every instance given the same documents. A document
    /// this cache cannot read is not added (its requests pass through).
    pub fn persisted_query(mut self, document: &str) -> Self {
        match operations(document) {
            Some(found) => {
                Arc::make_mut(&mut self.trusted).insert(sha256_hex(document), owned(&found));
            }
            None => tracing::warn!("a persisted GraphQL document that cannot be read was ignored"),
        }
        self
    }

    /// How many persisted-query hashes were learned from requests and are
    /// remembered now.
    pub fn learned_hashes(&self) -> usize {
        self.learned.lock().len()
    }

    fn learn(&self, hash: &str, found: &[Operation<'_>]) {
        if self.learned.capacity == 0 || self.trusted.contains_key(hash) {
            return;
        }
        let mut documents = self.learned.lock();
        if documents.contains_key(hash) {
            return;
        }
        if documents.len() >= self.learned.capacity {
            documents.clear();
        }
        documents.insert(hash.to_owned(), owned(found));
    }

    fn known(&self, hash: &str, name: Option<&str>) -> Option<OperationType> {
        let found = match self.trusted.get(hash) {
            Some(found) => Arc::clone(found),
            None => self.learned.lock().get(hash).cloned()?,
        };
        let borrowed: Vec<Operation<'_>> = found.iter().map(|(n, kind)| (n.as_deref(), *kind)).collect();
        select(&borrowed, name)
    }

    /// Whether a request with this document, operation name and persisted
    /// hash runs a query (and what it teaches about the hash).
    fn is_query(&self, document: Option<&str>, name: Option<&str>, hash: Option<&str>) -> bool {
        match (document, hash) {
            (Some(document), hash) => {
                let Some(found) = operations(document) else {
                    return false;
                };
                if let Some(hash) = hash {
                    // A hash that is not the document's: a server may run
                    // either, so this request is not cached, and teaches
                    // nothing.
                    if sha256_hex(document) != hash {
                        return false;
                    }
                    self.learn(hash, &found);
                }
                select(&found, name) == Some(OperationType::Query)
            }
            (None, Some(hash)) => self.known(hash, name) == Some(OperationType::Query),
            (None, None) => false,
        }
    }

    /// Checks a `POST` body (its JSON `tree`): `Ok` when it runs a query.
    pub(crate) fn check_body(&self, tree: &Node) -> Result<(), BypassReason> {
        if !matches!(tree, Node::Object(_)) {
            // A batch (an array) may hold a mutation.
            return Err(BypassReason::NotAQuery);
        }
        let document = match tree.get("query") {
            None => None,
            Some(Node::String(text)) => Some(&**text),
            Some(_) => return Err(BypassReason::NotAQuery),
        };
        let name = match tree.get("operationName") {
            None | Some(Node::Null) => None,
            Some(Node::String(text)) => Some(&**text),
            Some(_) => return Err(BypassReason::NotAQuery),
        };
        let hash = tree
            .pointer("/extensions/persistedQuery/sha256Hash")
            .and_then(Node::as_str);
        if self.is_query(document, name, hash) {
            Ok(())
        } else {
            Err(BypassReason::NotAQuery)
        }
    }

    /// Checks a `GET` (its URL's parameters): `Ok(parts)` with the decoded
    /// `query`, `operationName`, `variables` and `extensions` (each `None`
    /// when absent) when it runs a query.
    pub(crate) fn check_url(&self, parts: &Parts) -> Result<[Option<String>; 4], BypassReason> {
        const NAMES: [&str; 4] = ["query", "operationName", "variables", "extensions"];
        let mut fields: [Option<String>; 4] = Default::default();
        for (name, value) in crate::extract::query_pairs(parts.uri.query().unwrap_or("")) {
            if let Some(at) = NAMES.iter().position(|n| n.as_bytes() == &*name) {
                // Not UTF-8 once decoded: not a document a server would run.
                let value = String::from_utf8(value.into_owned()).map_err(|_| BypassReason::NotAQuery)?;
                // A parameter given twice may be read either way.
                if fields[at].replace(value).is_some() {
                    return Err(BypassReason::NotAQuery);
                }
            }
        }
        let hash = match &fields[3] {
            None => None,
            Some(extensions) => {
                let tree = json::parse(extensions.as_bytes()).ok_or(BypassReason::NotAQuery)?;
                tree.pointer("/persistedQuery/sha256Hash")
                    .and_then(Node::as_str)
                    .map(str::to_owned)
            }
        };
        if self.is_query(fields[0].as_deref(), fields[1].as_deref(), hash.as_deref()) {
            Ok(fields)
        } else {
            Err(BypassReason::NotAQuery)
        }
    }
}

fn owned(found: &[Operation<'_>]) -> KnownOperations {
    found
        .iter()
        .map(|(name, kind)| (name.map(Box::from), *kind))
        .collect()
}

fn sha256_hex(document: &str) -> String {
    hex::encode(Sha256::digest(document.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use OperationType::{Mutation, Query, Subscription};

    fn kind(document: &str, name: Option<&str>) -> Option<OperationType> {
        operation_type(document, name)
    }

    #[test]
    fn the_selected_operation_decides() {
        assert_eq!(kind("{ a }", None), Some(Query));
        assert_eq!(kind("query { a }", None), Some(Query));
        assert_eq!(kind("query Q { a }", None), Some(Query));
        assert_eq!(kind("query Q { a }", Some("Q")), Some(Query));
        assert_eq!(kind("mutation { a }", None), Some(Mutation));
        assert_eq!(kind("mutation M { a }", Some("M")), Some(Mutation));
        assert_eq!(kind("subscription S { a }", None), Some(Subscription));
        let two = "query Q { a } mutation M { b }";
        assert_eq!(kind(two, Some("Q")), Some(Query));
        assert_eq!(kind(two, Some("M")), Some(Mutation));
        assert_eq!(kind(two, None), None, "several operations, none named");
        assert_eq!(kind(two, Some("X")), None, "a name the document lacks");
        // An anonymous operation must stand alone; a name it lacks selects nothing.
        assert_eq!(kind("{ a } mutation M { b }", Some("M")), None);
        assert_eq!(kind("mutation { b }", Some("Q")), None);
        assert_eq!(kind("{ a }", Some("Q")), None);
        // Two operations of one name: a server refuses it.
        assert_eq!(kind("query Q { a } mutation Q { b }", Some("Q")), None);
        // Keywords are names too.
        assert_eq!(kind("query query { mutation }", Some("query")), Some(Query));
        assert_eq!(kind("mutation query { a }", Some("query")), Some(Mutation));
    }

    #[test]
    fn comments_strings_and_selections_hide_nothing_and_invent_nothing() {
        let cases: &[(&str, Option<&str>, Option<OperationType>)] = &[
            ("# mutation M { x }\nquery Q { a }", None, Some(Query)),
            ("query Q { a } # } mutation M { b }", None, Some(Query)),
            ("query Q { a }\r# mutation\rmutation M { b }", None, None),
            (
                "query Q { a }\r# comment\rmutation M { b }",
                Some("M"),
                Some(Mutation),
            ),
            (r#"query Q { a(s: "} mutation M { b") }"#, None, Some(Query)),
            (r#"query Q { a(s: "\" } mutation M {") }"#, None, Some(Query)),
            (
                r#"query Q { a(s: "\\") } mutation M { b }"#,
                Some("M"),
                Some(Mutation),
            ),
            (r#"query Q { a(s: "\\") } mutation M { b }"#, None, None),
            ("query Q { a(s: \"\"\"} mutation M {\"\"\") }", None, Some(Query)),
            (
                "query Q { a(s: \"\"\" \\\"\"\" } mutation M { \"\"\") }",
                None,
                Some(Query),
            ),
            ("query Q { a(s: \"\"\"\n#\n\"\"\") }", None, Some(Query)),
            ("query Q { a(s: \"\") } mutation M { b }", Some("Q"), Some(Query)),
            (
                "fragment F on User { mutation } query Q { ...F }",
                None,
                Some(Query),
            ),
            (
                "fragment F on User { id } mutation M { ...F }",
                None,
                Some(Mutation),
            ),
            (
                "fragment F on User @dir(a: {b: 1}) { id } query Q { ...F }",
                None,
                Some(Query),
            ),
            (
                "query Q($v: In = {a: [1, {b: \"}\"}]}) @live { a(v: $v) }",
                None,
                Some(Query),
            ),
            ("query Q @cached(ttl: 60) { a }", None, Some(Query)),
            ("\u{feff}query Q, { a, b }", None, Some(Query)),
            ("query Q { a { b { c } } ... on T { d } }", None, Some(Query)),
            ("query Q { a(n: -1.5e3) }", None, Some(Query)),
        ];
        for (document, name, expected) in cases {
            assert_eq!(kind(document, *name), *expected, "{document:?} {name:?}");
        }
    }

    #[test]
    fn what_cannot_be_read_is_not_a_query() {
        for document in [
            "",
            "   # only a comment",
            "query Q { a",
            "query Q { a ]",
            "query Q { a(b: 1 }",
            "query Q { a(s: \"unterminated) }",
            "query Q { a(s: \"line\nbreak\") }",
            "query Q { a(s: \"\\q\") }",
            "query Q { a(s: \"\"\"open) }",
            "query Q a { b }",
            "query Q { a } }",
            "type Query { a: Int }",
            "extend type Query { b: Int }",
            "schema { query: Query }",
            "query Q { a(n: 1x) }",
            "query Q { a } ?",
            "query Q { é }",
            "query Q { a .. b }",
            "fragment on on T { a } query { b }",
            "fragment F User { a } query { b }",
            "query Q @ { a }",
            "Query { a }",
            "{ a } trailing",
        ] {
            assert_eq!(kind(document, None), None, "{document:?}");
            assert_eq!(kind(document, Some("Q")), None, "{document:?}");
        }
    }

    /// Every combination of what may come before and inside an operation,
    /// around a mutation: it is never taken for a query, and the query
    /// beside it is found.
    #[test]
    fn generated_documents_never_turn_a_mutation_into_a_query() {
        let prefixes = [
            "",
            "# query X { a }\n",
            "fragment F on T { query mutation { subscription } }\n",
            "fragment G on T @d(a: \"mutation {\") { x }\n",
            "\"\"\"description { \"\"\"\n",
        ];
        let insides = [
            "a",
            "a(s: \"}\")",
            "a(s: \"\"\" } \\\"\"\" { \"\"\")",
            "a # }\n b",
            "a(o: {k: [1, 2, {z: \"]\"}]})",
            "... on T { query }",
        ];
        let variables = ["", "($v: Int = 1)", "($o: In = {a: \"}\"})", "@live"];
        for prefix in prefixes {
            for inside in insides {
                for vars in variables {
                    let document =
                        format!("{prefix}mutation M{vars} {{ {inside} }}\nquery Q{vars} {{ {inside} }}");
                    // A description is type-system syntax: such documents are refused.
                    let readable = !prefix.starts_with('"');
                    let expect = |kind: OperationType| readable.then_some(kind);
                    assert_eq!(
                        operation_type(&document, Some("M")),
                        expect(Mutation),
                        "{document}"
                    );
                    assert_eq!(operation_type(&document, Some("Q")), expect(Query), "{document}");
                    assert_eq!(operation_type(&document, None), None, "{document}");
                    let alone = format!("{prefix}mutation{vars} {{ {inside} }}");
                    assert_eq!(operation_type(&alone, None), expect(Mutation), "{alone}");
                }
            }
        }
    }

    fn body(text: &str) -> Node {
        json::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn bodies_run_queries_or_pass() {
        let graphql = GraphQl::new();
        let check = |text: &str| graphql.check_body(&body(text));
        assert_eq!(check(r#"{"query":"{ a }"}"#), Ok(()));
        assert_eq!(check(r#"{"query":"query Q { a }","operationName":null}"#), Ok(()));
        assert_eq!(
            check(r#"{"query":"query Q { a } mutation M { b }","operationName":"Q"}"#),
            Ok(())
        );
        for refused in [
            r#"{"query":"mutation { a }"}"#,
            r#"{"query":"subscription { a }"}"#,
            r#"{"query":"query Q { a } mutation M { b }","operationName":"M"}"#,
            r#"{"query":"query Q { a } mutation M { b }"}"#,
            r#"{"query":"{ a }","operationName":7}"#,
            r#"{"query":42}"#,
            r#"{"variables":{}}"#,
            r#"[{"query":"{ a }"}]"#,
            r#""{ a }""#,
        ] {
            assert_eq!(check(refused), Err(BypassReason::NotAQuery), "{refused}");
        }
    }

    #[test]
    fn persisted_hashes_are_learned_only_from_matching_documents() {
        let graphql = GraphQl::new();
        let query = "query Feed { posts { id } }";
        let mutation = "mutation Like { like }";
        let (query_hash, mutation_hash) = (sha256_hex(query), sha256_hex(mutation));
        let hash_only = |hash: &str| {
            format!(r#"{{"extensions":{{"persistedQuery":{{"version":1,"sha256Hash":"{hash}"}}}}}}"#)
        };
        let with_document = |document: &str, hash: &str| {
            format!(
                r#"{{"query":{},"extensions":{{"persistedQuery":{{"version":1,"sha256Hash":"{hash}"}}}}}}"#,
                serde_json::to_string(document).unwrap()
            )
        };
        let check = |text: String| graphql.check_body(&body(&text));
        // Unknown: not cached.
        assert_eq!(check(hash_only(&query_hash)), Err(BypassReason::NotAQuery));
        // A query under a mutation's hash teaches nothing and is not cached.
        assert_eq!(
            check(with_document(query, &mutation_hash)),
            Err(BypassReason::NotAQuery)
        );
        assert_eq!(check(hash_only(&mutation_hash)), Err(BypassReason::NotAQuery));
        assert_eq!(graphql.learned_hashes(), 0);
        // The right hash teaches it.
        assert_eq!(check(with_document(query, &query_hash)), Ok(()));
        assert_eq!(check(hash_only(&query_hash)), Ok(()));
        // A mutation is learned as one, and never cached.
        assert_eq!(
            check(with_document(mutation, &mutation_hash)),
            Err(BypassReason::NotAQuery)
        );
        assert_eq!(check(hash_only(&mutation_hash)), Err(BypassReason::NotAQuery));
        assert_eq!(graphql.learned_hashes(), 2);
        // Upper-case hex is not the hash of the document.
        assert_eq!(
            check(with_document(query, &query_hash.to_uppercase())),
            Err(BypassReason::NotAQuery)
        );
    }

    #[test]
    fn trusted_documents_stay_and_learned_ones_are_bounded() {
        let trusted = "query Trusted { a }";
        let graphql = GraphQl::new()
            .remember(2)
            .persisted_query(trusted)
            .persisted_query("type T { a: Int }");
        let hash_only = |hash: String| {
            body(&format!(
                r#"{{"extensions":{{"persistedQuery":{{"sha256Hash":"{hash}"}}}}}}"#
            ))
        };
        assert_eq!(graphql.check_body(&hash_only(sha256_hex(trusted))), Ok(()));
        for n in 0..5 {
            let document = format!("query Q{n} {{ a }}");
            let text = format!(
                r#"{{"query":"{document}","extensions":{{"persistedQuery":{{"sha256Hash":"{}"}}}}}}"#,
                sha256_hex(&document)
            );
            assert_eq!(graphql.check_body(&body(&text)), Ok(()));
            assert!(graphql.learned_hashes() <= 2);
        }
        assert_eq!(graphql.check_body(&hash_only(sha256_hex(trusted))), Ok(()));
        let forgetful = GraphQl::new().remember(0);
        let document = "{ a }";
        let text = format!(
            r#"{{"query":"{document}","extensions":{{"persistedQuery":{{"sha256Hash":"{}"}}}}}}"#,
            sha256_hex(document)
        );
        assert_eq!(forgetful.check_body(&body(&text)), Ok(()));
        assert_eq!(forgetful.learned_hashes(), 0);
    }

    #[test]
    fn urls_run_queries_or_pass() {
        let graphql = GraphQl::new();
        let parts = |uri: &str| http::Request::get(uri).body(()).unwrap().into_parts().0;
        let fields = graphql
            .check_url(&parts("/graphql?query=%7B+a+%7D&variables=%7B%7D"))
            .unwrap();
        assert_eq!(fields[0].as_deref(), Some("{ a }"));
        assert_eq!(fields[2].as_deref(), Some("{}"));
        assert_eq!(fields[1], None);
        for refused in [
            "/graphql",
            "/graphql?query=mutation%7Ba%7D",
            "/graphql?query=%7Ba%7D&query=mutation%7Ba%7D",
            "/graphql?query=query+Q%7Ba%7Dmutation+M%7Bb%7D&operationName=M",
            "/graphql?extensions=not-json",
            "/graphql?extensions=%7B%22persistedQuery%22%3A%7B%22sha256Hash%22%3A%22ab%22%7D%7D",
        ] {
            assert_eq!(
                graphql.check_url(&parts(refused)),
                Err(BypassReason::NotAQuery),
                "{refused}"
            );
        }
        let document = "{ a }";
        let extensions = format!(
            r#"{{"persistedQuery":{{"version":1,"sha256Hash":"{}"}}}}"#,
            sha256_hex(document)
        );
        let encoded = |text: &str| form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
        let learn = format!(
            "/graphql?query={}&extensions={}",
            encoded(document),
            encoded(&extensions)
        );
        assert!(graphql.check_url(&parts(&learn)).is_ok());
        let hash_only = format!("/graphql?extensions={}", encoded(&extensions));
        assert!(graphql.check_url(&parts(&hash_only)).is_ok());
    }
}
