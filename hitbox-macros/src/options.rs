//! The options of `#[cached(...)]`, parsed and checked one by one so that a
//! mistake is reported at the option that holds it.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, Ident, LitBool, LitInt, LitStr, Token, bracketed};

/// Every option, in the order the documentation lists them.
pub(crate) const OPTION_NAMES: &str = "cache, key, skip, tags, namespace, version, policy, cache_none";

/// The presets `policy = <name>` may name.
const PRESETS: [&str; 4] = ["real_time", "short_term", "long_term", "immutable"];

/// What `#[cached(...)]` was given.
#[derive(Default)]
pub(crate) struct Options {
    pub cache: Option<Expr>,
    pub key: Option<LitStr>,
    pub skip: Vec<Ident>,
    pub tags: Vec<LitStr>,
    pub namespace: Option<LitStr>,
    pub version: Option<LitInt>,
    pub policy: Option<Policy>,
    pub cache_none: Option<LitBool>,
}

/// `policy = ...`: a preset's name or any expression of type `CachePolicy`.
pub(crate) enum Policy {
    Preset(Ident),
    Expr(Expr),
}

impl Parse for Options {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut options = Options::default();
        let mut seen: Vec<String> = Vec::new();
        while !input.is_empty() {
            let name: Ident = input.parse()?;
            let named = name.to_string();
            if seen.contains(&named) {
                return Err(syn::Error::new(name.span(), format!("`{named}` is given twice")));
            }
            seen.push(named.clone());
            input
                .parse::<Token![=]>()
                .map_err(|error| syn::Error::new(error.span(), format!("expected `{named} = ...`")))?;
            match named.as_str() {
                "cache" => options.cache = Some(input.parse()?),
                "key" => options.key = Some(input.parse()?),
                "skip" => options.skip = bracketed_list::<Ident>(input)?,
                "tags" => options.tags = bracketed_list::<LitStr>(input)?,
                "namespace" => options.namespace = Some(input.parse()?),
                "version" => {
                    let version: LitInt = input.parse()?;
                    version.base10_parse::<u32>().map_err(|_| {
                        syn::Error::new(version.span(), "`version` is a number from 0 to 4294967295")
                    })?;
                    options.version = Some(version);
                }
                "policy" => {
                    let expr: Expr = input.parse()?;
                    options.policy = Some(match &expr {
                        Expr::Path(path) if path.path.get_ident().is_some() => {
                            let ident = path.path.get_ident().cloned().expect("checked above");
                            if !PRESETS.contains(&ident.to_string().as_str()) {
                                return Err(syn::Error::new(
                                    ident.span(),
                                    format!(
                                        "unknown policy preset `{ident}`: the presets are {}; or give any `CachePolicy` expression",
                                        PRESETS.join(", ")
                                    ),
                                ));
                            }
                            Policy::Preset(ident)
                        }
                        _ => Policy::Expr(expr),
                    });
                }
                "cache_none" => options.cache_none = Some(input.parse()?),
                _ => {
                    return Err(syn::Error::new(
                        name.span(),
                        format!("unknown option `{named}`: #[cached] takes {OPTION_NAMES}"),
                    ));
                }
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(options)
    }
}

fn bracketed_list<T: Parse>(input: ParseStream) -> syn::Result<Vec<T>> {
    let content;
    bracketed!(content in input);
    let items = Punctuated::<T, Token![,]>::parse_terminated(&content)?;
    Ok(items.into_iter().collect())
}

/// One piece of a key or tag template.
pub(crate) enum Segment {
    Text(String),
    Arg(String),
}

/// Splits a template such as `user:{id}` into text and argument names.
/// `{{` and `}}` stand for literal braces.
pub(crate) fn parse_template(template: &LitStr) -> syn::Result<Vec<Segment>> {
    let text = template.value();
    let error = |message: String| syn::Error::new(template.span(), message);
    let mut segments = Vec::new();
    let mut literal = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                literal.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                literal.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => name.push(c),
                        None => {
                            return Err(error(format!("`{{{name}` in template \"{text}\" is not closed")));
                        }
                    }
                }
                let name = name.trim().to_owned();
                if name.is_empty() {
                    return Err(error(format!(
                        "template \"{text}\" has an empty `{{}}`: name an argument, as in `{{id}}`"
                    )));
                }
                if !literal.is_empty() {
                    segments.push(Segment::Text(std::mem::take(&mut literal)));
                }
                segments.push(Segment::Arg(name));
            }
            '}' => {
                return Err(error(format!(
                    "template \"{text}\" has a `}}` that closes nothing (write `}}}}` for a brace)"
                )));
            }
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        segments.push(Segment::Text(literal));
    }
    Ok(segments)
}

/// The span to blame when an option is missing.
pub(crate) fn missing(span: Span, what: &str) -> syn::Error {
    syn::Error::new(span, what)
}
