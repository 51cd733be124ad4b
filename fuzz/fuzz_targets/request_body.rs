//! What the layer reads from a request body to key it: the strict JSON
//! reader (`hitbox_tower::predicate::ReadBody::json`, behind
//! `BodyKey::json`, `BodyKey::json_fields` and the `Json` predicates) and
//! the GraphQL lexer (`hitbox_tower::graphql::operation_type`, which decides
//! whether a `POST` is a cacheable query). Both read what any client sends.
//!
//! Nothing may panic, and:
//! - what the strict reader accepts, serde_json reads too, to the same
//!   value (the reader refuses more, never less);
//! - whitespace around a JSON text changes nothing;
//! - blank lines around a GraphQL document change nothing: the same
//!   operation type, or `None` both times.
//!
//! An input that starts with `@` is GraphQL: its first line (after the
//! `@`) is the operation name, empty for none; the rest is the document.
//! Any other input is a JSON body.
#![no_main]

use bytes::Bytes;
use hitbox_tower::graphql::operation_type;
use hitbox_tower::predicate::ReadBody;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match data.strip_prefix(b"@") {
        Some(graphql) => document(graphql),
        None => json(data),
    }
});

fn json(data: &[u8]) {
    let body = ReadBody::new(Bytes::copy_from_slice(data));
    let strict = body.json();
    if let Some(value) = strict {
        let loose: serde_json::Value =
            serde_json::from_slice(data).expect("serde_json reads what the strict reader accepts");
        assert_eq!(value, &loose);
    }
    let mut spaced = b" \t\r\n".to_vec();
    spaced.extend_from_slice(data);
    spaced.extend_from_slice(b"\n ");
    let spaced = ReadBody::new(Bytes::from(spaced));
    assert_eq!(
        spaced.json(),
        strict,
        "whitespace around the text changed its reading"
    );
}

fn document(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (name, document) = text.split_once('\n').unwrap_or((text, ""));
    let name = (!name.is_empty()).then_some(name);
    let kind = operation_type(document, name);
    let padded = format!("\n\n{document}\n");
    assert_eq!(
        operation_type(&padded, name),
        kind,
        "blank lines around the document changed its operation"
    );
}
