//! From a parsed function and its options to the function with a cached
//! body. The generated code is shown in the crate documentation.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Expr, FnArg, GenericArgument, ItemFn, LitStr, Pat, PathArguments, ReturnType, Type};

use crate::options::{Options, Policy, Segment, missing, parse_template};

/// What the return type says about caching.
enum Output {
    /// `Result<T, E>`: only `Ok` is cached.
    Result,
    /// `Option<T>`: `Some` is cached, `None` as `cache_none` says.
    Option,
    /// Anything else: always cached.
    Value,
}

/// A named argument that may become part of the key.
struct Arg {
    name: syn::Ident,
}

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let options: Options = syn::parse2(args)?;
    let function: ItemFn = syn::parse2(item)?;
    let krate = backend_path();
    let sig = &function.sig;
    let fn_name = sig.ident.to_string();

    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span,
            format!(
                "#[cached] goes on an `async fn`: the cache is asynchronous, so `{fn_name}` must be `async fn {fn_name}`"
            ),
        ));
    }
    let return_type = match &sig.output {
        ReturnType::Type(_, ty) => ty.as_ref().clone(),
        ReturnType::Default => {
            return Err(syn::Error::new(
                sig.ident.span(),
                format!(
                    "`{fn_name}` returns nothing: #[cached] caches a function's result, so it must return one"
                ),
            ));
        }
    };
    let output = output_kind(&return_type);
    if let Some(flag) = &options.cache_none
        && !matches!(output, Output::Option)
    {
        return Err(syn::Error::new(
            flag.span(),
            format!("`cache_none` applies to functions that return `Option`; `{fn_name}` does not"),
        ));
    }

    let Some(cache) = options.cache.clone() else {
        return Err(missing(
            Span::call_site(),
            "#[cached] needs to know its cache: add `cache = <expr>` (a static, `self.field`, or an argument)",
        ));
    };
    let cache_arg = match &cache {
        Expr::Path(path) => path.path.get_ident().map(ToString::to_string),
        _ => None,
    };

    // The named arguments; a destructuring pattern is an error only if the
    // default key needs it.
    let mut args = Vec::new();
    let mut unnamed = Vec::new();
    for input in &sig.inputs {
        let FnArg::Typed(typed) = input else {
            continue; // `self` is never part of the key
        };
        match typed.pat.as_ref() {
            Pat::Ident(ident) => args.push(Arg {
                name: ident.ident.clone(),
            }),
            other => unnamed.push(other.span()),
        }
    }
    let arg_names = || {
        let names: Vec<String> = args.iter().map(|arg| format!("`{}`", arg.name)).collect();
        if names.is_empty() {
            "it has none".to_owned()
        } else {
            format!("its arguments are {}", names.join(", "))
        }
    };
    for skipped in &options.skip {
        if !args.iter().any(|arg| arg.name == *skipped) {
            return Err(syn::Error::new(
                skipped.span(),
                format!(
                    "`skip` names `{skipped}`, which is not an argument of `{fn_name}`; {}",
                    arg_names()
                ),
            ));
        }
    }
    let find_arg = |name: &str, template: &LitStr| -> syn::Result<&Arg> {
        args.iter().find(|arg| arg.name == name).ok_or_else(|| {
            syn::Error::new(
                template.span(),
                format!(
                    "`{{{name}}}` in \"{}\" is not an argument of `{fn_name}`; {}",
                    template.value(),
                    arg_names()
                ),
            )
        })
    };
    // Renders a template into the bytes of `buffer`, each placeholder
    // through `KeyPart`, spanned at the argument so that a type that cannot
    // be keyed is reported there.
    let render = |template: &LitStr, buffer: &syn::Ident| -> syn::Result<TokenStream> {
        let mut writes = Vec::new();
        for segment in parse_template(template)? {
            match segment {
                Segment::Text(text) => {
                    let bytes = syn::LitByteStr::new(text.as_bytes(), template.span());
                    writes.push(quote! { #buffer.extend_from_slice(#bytes); });
                }
                Segment::Arg(name) => {
                    let arg = find_arg(&name, template)?;
                    writes.push(write_part(&krate, &arg.name, buffer));
                }
            }
        }
        Ok(quote! { #(#writes)* })
    };

    let part = format_ident!("__hitbox_part");
    let key_parts = match &options.key {
        Some(template) => {
            let writes = render(template, &part)?;
            quote! {
                let mut #part = ::std::vec::Vec::<u8>::new();
                #writes
                __hitbox_key.push("key", ::std::option::Option::Some(&#part));
            }
        }
        None => {
            if let Some(span) = unnamed.first() {
                return Err(syn::Error::new(
                    *span,
                    "a destructured argument cannot be part of the key: bind it to a name, or give the key as a template (`key = \"...\"`)",
                ));
            }
            let mut parts = Vec::new();
            for arg in &args {
                let name = arg.name.to_string();
                if options.skip.contains(&arg.name) || cache_arg.as_deref() == Some(&name) {
                    continue;
                }
                let write = write_part(&krate, &arg.name, &part);
                parts.push(quote! {
                    let mut #part = ::std::vec::Vec::<u8>::new();
                    #write
                    __hitbox_key.push(#name, ::std::option::Option::Some(&#part));
                });
            }
            quote! { #(#parts)* }
        }
    };

    let tag_buffer = format_ident!("__hitbox_tag");
    let mut tags = Vec::new();
    for template in &options.tags {
        let writes = render(template, &tag_buffer)?;
        tags.push(quote! {{
            let mut #tag_buffer = ::std::vec::Vec::<u8>::new();
            #writes
            #krate::memoize::__private::tag(#tag_buffer)
        }});
    }

    let namespace = match &options.namespace {
        Some(namespace) => quote! { #namespace },
        None => quote! { ::std::concat!(::std::module_path!(), "::", #fn_name) },
    };
    let version = match &options.version {
        Some(version) => quote! { #version },
        None => quote! { 1 },
    };
    let policy = match &options.policy {
        Some(Policy::Preset(preset)) => {
            let krate = respan(&krate, preset.span());
            quote_spanned! {preset.span()=> #krate::memoize::__private::CachePolicy::#preset() }
        }
        Some(Policy::Expr(expr)) => {
            let krate = respan(&krate, expr.span());
            quote_spanned! {expr.span()=> { let __hitbox_policy: #krate::memoize::__private::CachePolicy = #expr; __hitbox_policy } }
        }
        None => quote! { __hitbox_cache.policy() },
    };

    let block = &function.block;
    let body = quote! { #krate::memoize::__private::typed::<#return_type, _>(async #block) };
    let call = match output {
        Output::Result => quote! {
            #krate::memoize::cached_result(__hitbox_cache, &__hitbox_key, &__hitbox_options, #body).await
        },
        Output::Option => {
            let cache_none = options.cache_none.as_ref().is_some_and(|flag| flag.value);
            quote! {
                #krate::memoize::cached_option(__hitbox_cache, &__hitbox_key, &__hitbox_options, #cache_none, #body).await
            }
        }
        Output::Value => quote! {
            #krate::memoize::cached_value(__hitbox_cache, &__hitbox_key, &__hitbox_options, #body).await
        },
    };

    let attrs = &function.attrs;
    let vis = &function.vis;
    let cache_tokens = quote_spanned! {cache.span()=> &(#cache) };
    Ok(quote! {
        #(#attrs)*
        #vis #sig {
            let __hitbox_cache: &#krate::Cache = #cache_tokens;
            let __hitbox_key = {
                let mut __hitbox_key = #krate::memoize::__private::KeyBuilder::new(#namespace).version(#version);
                #key_parts
                __hitbox_key.build()
            };
            let __hitbox_options = #krate::memoize::entry_options(
                #policy,
                ::std::vec![#(#tags),*],
            );
            #call
        }
    })
}

/// Writes one argument's key bytes into `buffer`, spanned at the argument.
fn write_part(krate: &TokenStream, name: &syn::Ident, buffer: &syn::Ident) -> TokenStream {
    let krate = respan(krate, name.span());
    quote_spanned! {name.span()=>
        #krate::memoize::__private::write_part(&#name, &mut #buffer);
    }
}

fn output_kind(ty: &Type) -> Output {
    let Type::Path(path) = ty else {
        return Output::Value;
    };
    let Some(last) = path.path.segments.last() else {
        return Output::Value;
    };
    let has_type_argument = match &last.arguments {
        PathArguments::AngleBracketed(args) => args
            .args
            .iter()
            .any(|arg| matches!(arg, GenericArgument::Type(_))),
        _ => false,
    };
    match last.ident.to_string().as_str() {
        "Result" if has_type_argument => Output::Result,
        "Option" if has_type_argument => Output::Option,
        _ => Output::Value,
    }
}

/// The path by which the calling crate reaches `hitbox-backend`: its own
/// dependency on `hitbox-backend` (renamed or not), else the `hitbox` facade's
/// `backend` module, else `::hitbox_backend` (whose error then names what is
/// missing). `Itself` is what `hitbox-backend`'s own tests and doc tests see;
/// they are separate crates, which reach it by name.
fn backend_path() -> TokenStream {
    use proc_macro_crate::{FoundCrate, crate_name};
    let named = |name: &str| syn::Ident::new(&name.replace('-', "_"), Span::call_site());
    match crate_name("hitbox-backend") {
        Ok(FoundCrate::Name(name)) => {
            let ident = named(&name);
            quote!(::#ident)
        }
        Ok(FoundCrate::Itself) => quote!(::hitbox_backend),
        Err(_) => match crate_name("hitbox") {
            Ok(FoundCrate::Name(name)) => {
                let ident = named(&name);
                quote!(::#ident::backend)
            }
            Ok(FoundCrate::Itself) => quote!(crate::backend),
            Err(_) => quote!(::hitbox_backend),
        },
    }
}

/// `tokens` with every token at `span`, so that an error in generated code
/// that starts with the crate path is reported where `quote_spanned!` puts it.
fn respan(tokens: &TokenStream, span: Span) -> TokenStream {
    tokens
        .clone()
        .into_iter()
        .map(|mut token| {
            token.set_span(span);
            token
        })
        .collect()
}
