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
            other => {
                return Err(syn::Error::new_spanned(
                    other,
                    "unknown option; the one option is `name = \"…\"`",
                ));
            }
        }
    }

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
