//! Errors that name the file, the line and the column.

use std::fmt;

/// What went wrong, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file could not be read.
    Read,
    /// The file's name does not say whether it is TOML or YAML.
    UnknownFormat,
    /// The text is not valid TOML or YAML, or does not fit the model: an
    /// unknown field, a wrong type, a bad value.
    Parse,
    /// The configuration parsed, but building from it failed: a missing
    /// environment variable, an unreadable key file, a Redis URL the client
    /// refuses.
    Build,
}

/// A configuration that cannot be used: where, and why.
///
/// It displays as `FILE:LINE:COLUMN: MESSAGE` (lines and columns count from
/// 1), or `FILE: MESSAGE` when there is no place in the file to point at
/// (the file cannot be read at all).
///
/// ```
/// let error = hitbox_config::Config::from_toml_str("cache.toml", "[cache]\nnmae = \"x\"\n").unwrap_err();
/// assert_eq!(error.file(), "cache.toml");
/// assert_eq!(error.line_column(), Some((2, 1)));
/// assert!(error.to_string().starts_with("cache.toml:2:1: unknown field `nmae`"), "{error}");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    file: String,
    place: Option<(usize, usize)>,
    message: String,
}

impl Error {
    pub(crate) fn new(
        kind: ErrorKind,
        file: &str,
        place: Option<(usize, usize)>,
        message: impl Into<String>,
    ) -> Self {
        Error {
            kind,
            file: file.to_owned(),
            place,
            message: message.into(),
        }
    }

    /// The kind of error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The file, as it was named when it was loaded.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The line and the column (from 1), when the error has a place.
    pub fn line_column(&self) -> Option<(usize, usize)> {
        self.place
    }

    /// What was wrong and what was expected, without the place.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.place {
            Some((line, column)) => write!(f, "{}:{line}:{column}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for Error {}

/// The line and column (from 1, the column in characters) of a byte offset.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Where a value written as `field = value` (TOML) or `field: value`
/// (YAML) is, for errors found after parsing (an environment variable that
/// is not set, a key file that cannot be read): the first line that names
/// `field` and holds `value`, at the value. Falls back to the first line
/// naming `field`, then to the first occurrence of `value`.
pub(crate) fn locate(text: &str, field: &str, value: Option<&str>) -> Option<(usize, usize)> {
    let mut offset = 0;
    let mut field_only = None;
    for line in text.split_inclusive('\n') {
        let code = line.split('#').next().unwrap_or("");
        if let Some(at) = find_field(code, field) {
            if let Some(v) = value.and_then(|value| code[at..].find(value)) {
                return Some(line_column(text, offset + at + v));
            }
            field_only.get_or_insert(offset + at);
        }
        offset += line.len();
    }
    if let Some(at) = field_only {
        return Some(line_column(text, at));
    }
    value
        .and_then(|value| text.find(value))
        .map(|at| line_column(text, at))
}

/// An error message from the model, and the place the parser gave it (at
/// the byte `offset`, the start of the table being checked): when the
/// message names the field it is about (see `model::at_field`), the place
/// becomes that field's, the first after the table's start that names it.
pub(crate) fn refine(text: &str, offset: Option<usize>, message: &str) -> (Option<(usize, usize)>, String) {
    let place = offset.map(|offset| line_column(text, offset));
    let Some(start) = message.find('\u{1}') else {
        return (place, message.to_owned());
    };
    let rest = &message[start + 1..];
    let Some(end) = rest.find('\u{1}') else {
        return (place, message.replace('\u{1}', ""));
    };
    let field = &rest[..end];
    let cleaned = format!("{}{}", &message[..start], &rest[end + 1..]);
    let Some(from) = offset else {
        return (place, cleaned);
    };
    let mut line_start = text[..from.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    // The rest of the table's own line first (an inline table), then the
    // lines after it.
    let mut first = true;
    for line in text[line_start..].split_inclusive('\n') {
        let skip = if first { from - line_start } else { 0 };
        let code = line.split('#').next().unwrap_or("");
        if skip <= code.len()
            && let Some(at) = find_field(&code[skip..], field)
        {
            return (Some(line_column(text, line_start + skip + at)), cleaned);
        }
        first = false;
        line_start += line.len();
    }
    (place, cleaned)
}

/// The offset of `field` used as a key in `line` (a whole word followed by
/// `=` or `:`).
fn find_field(line: &str, field: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(found) = line[from..].find(field) {
        let at = from + found;
        let before_ok = line[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '-'));
        let rest = line[at + field.len()..]
            .trim_start_matches(['"', '\''])
            .trim_start();
        if before_ok && (rest.starts_with('=') || rest.starts_with(':')) {
            return Some(at);
        }
        from = at + field.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 10), (2, 4));
        assert_eq!(line_column(text, 100), (3, 1));
    }

    #[test]
    fn locating_fields() {
        let text =
            "x = 1\n[enc]\nkey_env = \"A\" # key_env = \"B\"\nother_key_env = \"B\"\nkey_env = \"B\"\n";
        assert_eq!(locate(text, "key_env", Some("\"B\"")), Some((5, 11)));
        assert_eq!(locate(text, "key_env", Some("\"A\"")), Some((3, 11)));
        assert_eq!(locate(text, "key_env", Some("\"C\"")), Some((3, 1)));
        assert_eq!(locate("key_env: A\n", "key_env", Some("A")), Some((1, 10)));
        assert_eq!(locate("nothing", "key_env", None), None);
    }
}
