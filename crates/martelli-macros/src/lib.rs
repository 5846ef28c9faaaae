//! Procedural macros for [martelli](https://docs.rs/martelli): `#[martelli::task]`.
//!
//! Use the macro through its re-export, `martelli::task`; this crate is an implementation detail.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::{format_ident, quote};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{
    Expr, ExprLit, FnArg, GenericArgument, ItemFn, Lit, Meta, PathArguments, ReturnType, Token,
    Type, parse_macro_input,
};

/// Registers a plain function as a task that process and cluster workers can run by name.
///
/// The function becomes a unit struct of the same name — the task's typed handle, passed to
/// `Pool::submit_task` — with the function itself kept as `name::call`. Its name is
/// `module_path!()::fn_name` unless `#[task(name = "…")]` gives another. Arguments travel as a
/// tuple of serde values; a function that returns `Result<T, E>` (with `E: Display`) is fallible:
/// its `Err` becomes the task's `TaskError::Failed`.
///
/// See the `martelli` crate's documentation of `task` for an example.
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    let args = match Punctuated::<Meta, Token![,]>::parse_terminated.parse(attr) {
        Ok(args) => args,
        Err(e) => return e.to_compile_error().into(),
    };
    let func = parse_macro_input!(item as ItemFn);
    match expand(args, func) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(args: Punctuated<Meta, Token![,]>, func: ItemFn) -> syn::Result<TokenStream2> {
    let mut name: Option<String> = None;
    let mut options: Vec<TokenStream2> = Vec::new();
    for meta in args {
        match meta {
            Meta::NameValue(nv) if nv.path.is_ident("name") => match nv.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Str(s), ..
                }) => {
                    let value = s.value();
                    if value.is_empty() {
                        return Err(syn::Error::new_spanned(s, "a task name cannot be empty"));
                    }
                    name = Some(value);
                }
                other => {
                    return Err(syn::Error::new_spanned(
                        other,
                        "expected a string: #[task(name = \"my_app::resize\")]",
                    ));
                }
            },
            Meta::NameValue(nv) => {
                let key = nv
                    .path
                    .get_ident()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                options.push(option(&key, &nv.path, &nv.value)?);
            }
            other => {
                return Err(syn::Error::new_spanned(other, UNKNOWN_OPTION));
            }
        }
    }
    let options_const = if options.is_empty() {
        quote!()
    } else {
        quote!(const OPTIONS: ::martelli::TaskSettings = ::martelli::TaskSettings::new()#(#options)*;)
    };

    let sig = &func.sig;
    if let Some(asyncness) = sig.asyncness {
        return Err(syn::Error::new_spanned(
            asyncness,
            "a task must be a plain (not async) function",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "a task cannot be generic: a worker finds it by name, so it needs one concrete signature",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(syn::Error::new_spanned(
            variadic,
            "a task cannot be variadic",
        ));
    }

    let mut arg_types = Vec::new();
    let mut arg_names = Vec::new();
    for (i, input) in sig.inputs.iter().enumerate() {
        match input {
            FnArg::Receiver(r) => {
                return Err(syn::Error::new_spanned(
                    r,
                    "a task is a free function; it cannot take `self`",
                ));
            }
            FnArg::Typed(pat) => {
                arg_types.push((*pat.ty).clone());
                arg_names.push(format_ident!("__martelli_arg{}", i));
            }
        }
    }

    let ident = &sig.ident;
    let vis = &func.vis;
    let attrs = &func.attrs;
    let inputs = &sig.inputs;
    let output = &sig.output;
    let block = &func.block;
    let unsafety = &sig.unsafety;
    if let Some(u) = unsafety {
        return Err(syn::Error::new_spanned(u, "a task cannot be an unsafe fn"));
    }

    let (value_type, fallible) = match output {
        ReturnType::Default => (quote!(()), false),
        ReturnType::Type(_, ty) => match result_ok_type(ty) {
            Some(ok) => (quote!(#ok), true),
            None => (quote!(#ty), false),
        },
    };
    let name_expr = match &name {
        Some(n) => quote!(#n),
        None => quote!(::core::concat!(
            ::core::module_path!(),
            "::",
            ::core::stringify!(#ident)
        )),
    };
    let call = quote!(#ident::call(#(#arg_names),*));
    let run_body = if fallible {
        quote!(#call.map_err(::martelli::__private::failure_from_display))
    } else {
        quote!(::core::result::Result::Ok(#call))
    };
    let args_tuple = quote!((#(#arg_types,)*));
    let args_pattern = quote!((#(#arg_names,)*));
    let doc_handle = format!(
        "The task handle of [`{ident}::call`]: submit it with `Pool::submit_task({ident}, args)`."
    );

    Ok(quote! {
        #[doc = #doc_handle]
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
        #vis struct #ident;

        impl #ident {
            #(#attrs)*
            #[allow(clippy::too_many_arguments)]
            #vis fn call(#inputs) #output #block
        }

        impl ::martelli::Task for #ident {
            type Args = #args_tuple;
            type Output = #value_type;
            const NAME: &'static str = #name_expr;
            #options_const

            #[allow(unused_variables, clippy::unused_unit)]
            fn run(args: Self::Args) -> ::core::result::Result<Self::Output, ::martelli::TaskFailure> {
                let #args_pattern = args;
                #run_body
            }
        }

        ::martelli::__private::inventory::submit! {
            ::martelli::__private::Registration::of::<#ident>()
        }
    })
}

const UNKNOWN_OPTION: &str = "unknown option; the options are `name = \"…\"`, `retries = N`, \
     `backoff_ms = N`, `factor = N`, `max_backoff_ms = N`, `jitter = true|false`, \
     `retry_on = [\"failed\", \"panicked\", \"timed_out\", \"worker_died\"]`, `retry_match = [\"…\"]` \
     and `rate_limit = \"COUNT/PERIOD\"` (such as \"100/s\")";

/// The builder call for one `key = value` option of `#[task(…)]`.
fn option(key: &str, path: &syn::Path, value: &Expr) -> syn::Result<TokenStream2> {
    let int = |what: &str| -> syn::Result<syn::LitInt> {
        match value {
            Expr::Lit(ExprLit {
                lit: Lit::Int(i), ..
            }) => Ok(i.clone()),
            other => Err(syn::Error::new_spanned(
                other,
                format!("expected a whole number: #[task({key} = {what})]"),
            )),
        }
    };
    let strings = |allowed: Option<&[&str]>| -> syn::Result<Vec<syn::LitStr>> {
        let Expr::Array(array) = value else {
            return Err(syn::Error::new_spanned(
                value,
                format!("expected an array of strings: #[task({key} = [\"…\"])]"),
            ));
        };
        let mut out = Vec::new();
        for elem in &array.elems {
            match elem {
                Expr::Lit(ExprLit {
                    lit: Lit::Str(s), ..
                }) => {
                    if let Some(allowed) = allowed {
                        if !allowed.contains(&s.value().as_str()) {
                            return Err(syn::Error::new_spanned(
                                s,
                                format!("expected one of {allowed:?}"),
                            ));
                        }
                    }
                    out.push(s.clone());
                }
                other => {
                    return Err(syn::Error::new_spanned(other, "expected a string"));
                }
            }
        }
        Ok(out)
    };
    Ok(match key {
        "retries" => {
            let n = int("3")?;
            n.base10_parse::<u32>()?;
            quote!(.with_retries(#n))
        }
        "backoff_ms" => {
            let n = int("1000")?;
            n.base10_parse::<u64>()?;
            quote!(.with_backoff_ms(#n))
        }
        "factor" => {
            let n = int("2")?;
            n.base10_parse::<u32>()?;
            quote!(.with_factor(#n))
        }
        "max_backoff_ms" => {
            let n = int("3600000")?;
            n.base10_parse::<u64>()?;
            quote!(.with_max_backoff_ms(#n))
        }
        "jitter" => match value {
            Expr::Lit(ExprLit {
                lit: Lit::Bool(b), ..
            }) => quote!(.with_jitter(#b)),
            other => {
                return Err(syn::Error::new_spanned(
                    other,
                    "expected true or false: #[task(jitter = false)]",
                ));
            }
        },
        "retry_on" => {
            let on = strings(Some(&["failed", "panicked", "timed_out", "worker_died"]))?;
            quote!(.with_retry_on(&[#(#on),*]))
        }
        "retry_match" => {
            let needles = strings(None)?;
            quote!(.with_retry_match(&[#(#needles),*]))
        }
        "rate_limit" => match value {
            Expr::Lit(ExprLit {
                lit: Lit::Str(s), ..
            }) => {
                if !valid_rate_limit(&s.value()) {
                    return Err(syn::Error::new_spanned(
                        s,
                        "expected COUNT/PERIOD with a COUNT of at least 1 and a PERIOD of s, m, h \
                         or a number of milliseconds (such as \"100/s\", \"10/m\" or \"5/250\")",
                    ));
                }
                quote!(.with_rate_limit(#s))
            }
            other => {
                return Err(syn::Error::new_spanned(
                    other,
                    "expected a string: #[task(rate_limit = \"100/s\")]",
                ));
            }
        },
        _ => return Err(syn::Error::new_spanned(path, UNKNOWN_OPTION)),
    })
}

/// Whether `s` reads as `COUNT/PERIOD` the way `martelli::cluster::RateLimit` parses it.
fn valid_rate_limit(s: &str) -> bool {
    let Some((count, period)) = s.trim().split_once('/') else {
        return false;
    };
    let count_ok = count.trim().parse::<u32>().is_ok_and(|n| n >= 1);
    let period = period.trim();
    let period_ok = matches!(
        period,
        "s" | "sec" | "second" | "m" | "min" | "minute" | "h" | "hour"
    ) || period.parse::<u64>().is_ok_and(|n| n >= 1);
    count_ok && period_ok
}

/// `T` when `ty` is `Result<T, …>` (any path whose last segment is `Result`).
fn result_ok_type(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    args.args.iter().find_map(|a| match a {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    })
}
