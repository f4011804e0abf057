//! `#[celeriac_worker::task]`: an `async fn` becomes a task whose parameters bind a Celery call as
//! Python binds a call to a `def` with the same parameters (re-exported and documented by
//! `celeriac_worker`; see `celeriac_worker::task`).

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use syn::parse::Parser;
use syn::spanned::Spanned;
use syn::{Attribute, Error, Expr, FnArg, ItemFn, LitStr, Meta, Pat, Type};

/// Turns `async fn name(params) -> Result<R, E>` into a task (a plain `fn` becomes a blocking
/// task: each run on its own thread, as `WorkerBuilder::blocking_task`): a unit struct `name` that
/// implements `celeriac_worker::Handler` and `celeriac_worker::TaskDefinition`,
/// registered with `WorkerBuilder::register(name)`; the function itself stays callable as
/// `name::run(...)`.
///
/// * `#[task(name = "app.add")]` sets the Celery task name (default: the function's name); the
///   task options of `TaskOptions` are given the same way, as Celery's `@app.task(...)` takes
///   them: `max_retries = 5` (`None`: unlimited), `default_retry_delay = 10`, `time_limit = 30`,
///   `soft_time_limit = 25` (seconds), `acks_late`, `acks_on_failure_or_timeout`,
///   `reject_on_worker_lost`, `ignore_result`, `track_started` (alone for `true`, or `= false`).
/// * A parameter of type `TaskContext` receives the request and is not a Python parameter.
/// * `#[default(expr)]` on a parameter gives its default; `#[args]` collects extra positional
///   arguments (`Vec<T>`) and makes the parameters after it keyword-only; `#[kw_only]` makes a
///   parameter (and the ones after it) keyword-only; `#[kwargs]` collects extra keyword arguments
///   (any type that deserializes from a JSON object) and must come last.
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    match expand(attr.into(), item.into()) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Context,
    Positional,
    KeywordOnly,
    VarArgs,
    VarKwargs,
}

struct Param {
    ident: syn::Ident,
    python_name: String,
    ty: Type,
    kind: Kind,
    default: Option<Expr>,
}

fn expand(attr: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    let mut task_name: Option<LitStr> = None;
    let mut options = Vec::new();
    syn::meta::parser(|meta| {
        let Some(key) = meta.path.get_ident().map(ToString::to_string) else {
            return Err(meta.error("expected a task option name"));
        };
        let field = format_ident!("{key}");
        match key.as_str() {
            "name" => task_name = Some(meta.value()?.parse()?),
            "acks_late" | "acks_on_failure_or_timeout" | "reject_on_worker_lost"
            | "ignore_result" | "track_started" => {
                let value: Expr = if meta.input.peek(syn::Token![=]) {
                    meta.value()?.parse()?
                } else {
                    syn::parse_quote!(true)
                };
                options.push(quote!(__celeriac_options.#field = ::core::option::Option::Some(#value);));
            }
            "time_limit" | "soft_time_limit" => {
                let secs: Expr = meta.value()?.parse()?;
                options.push(quote! {
                    __celeriac_options.#field = ::core::option::Option::Some(
                        ::std::time::Duration::from_secs_f64((#secs) as f64),
                    );
                });
            }
            "default_retry_delay" => {
                let secs: Expr = meta.value()?.parse()?;
                options.push(quote! {
                    __celeriac_options.default_retry_delay = ::std::time::Duration::from_secs_f64((#secs) as f64);
                });
            }
            "max_retries" => {
                let n: Expr = meta.value()?.parse()?;
                let is_none = matches!(&n, Expr::Path(p) if p.path.is_ident("None"));
                options.push(if is_none {
                    quote!(__celeriac_options.max_retries = ::core::option::Option::None;)
                } else {
                    quote!(__celeriac_options.max_retries = ::core::option::Option::Some(#n);)
                });
            }
            _ => {
                return Err(meta.error(
                    "unknown task option (expected name, max_retries, default_retry_delay, \
                     acks_late, acks_on_failure_or_timeout, reject_on_worker_lost, \
                     ignore_result, track_started, time_limit or soft_time_limit)",
                ))
            }
        }
        Ok(())
    })
    .parse2(attr)?;

    let mut func: ItemFn = syn::parse2(item)?;
    let sig = &func.sig;
    let blocking = sig.asyncness.is_none();
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(Error::new(sig.generics.span(), "a task cannot be generic"));
    }
    if let Some(v) = &sig.variadic {
        return Err(Error::new(v.span(), "a task cannot be C-variadic"));
    }
    let fn_ident = sig.ident.clone();
    let python_fn = unraw(&fn_ident);
    let task_name = task_name.unwrap_or_else(|| LitStr::new(&python_fn, fn_ident.span()));

    let mut params = Vec::new();
    let mut keyword_only = false;
    for input in func.sig.inputs.iter_mut() {
        let FnArg::Typed(pt) = input else {
            return Err(Error::new(input.span(), "a task takes no `self`"));
        };
        let Pat::Ident(pat) = &*pt.pat else {
            return Err(Error::new(
                pt.pat.span(),
                "task parameters must be plain names (`a: i64`)",
            ));
        };
        let ident = pat.ident.clone();
        let (kind, default) = take_param_attrs(&mut pt.attrs, &mut keyword_only)?;
        let kind = if is_context(&pt.ty) {
            if kind != Kind::Positional || default.is_some() {
                return Err(Error::new(
                    pt.span(),
                    "the `TaskContext` parameter takes no attributes",
                ));
            }
            Kind::Context
        } else {
            kind
        };
        params.push(Param {
            python_name: unraw(&ident),
            ident,
            ty: (*pt.ty).clone(),
            kind,
            default,
        });
    }
    check_order(&params)?;

    let vis = func.vis.clone();
    let docs: Vec<Attribute> = func
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .cloned()
        .collect();
    let krate = quote!(::celeriac_worker);
    let descriptors = params.iter().filter(|p| p.kind != Kind::Context).map(|p| {
        let name = &p.python_name;
        let kind = match p.kind {
            Kind::Positional => quote!(PositionalOrKeyword),
            Kind::KeywordOnly => quote!(KeywordOnly),
            Kind::VarArgs => quote!(VarArgs),
            Kind::VarKwargs => quote!(VarKwargs),
            Kind::Context => unreachable!("filtered out"),
        };
        let has_default = p.default.is_some();
        quote! {
            #krate::__private::params::Param {
                name: #name,
                kind: #krate::__private::params::ParamKind::#kind,
                has_default: #has_default,
            }
        }
    });
    let locals: Vec<syn::Ident> = params
        .iter()
        .enumerate()
        // Numbered, and without the parameter's leading underscores (`_args` would make the
        // non-snake-case `__celeriac__args`).
        .map(|(i, p)| {
            format_ident!(
                "__celeriac_{}_{}",
                i,
                p.ident.to_string().trim_start_matches('_')
            )
        })
        .collect();
    let conversions = params.iter().zip(&locals).filter(|(p, _)| p.kind != Kind::Context).map(|(p, local)| {
        let name = &p.python_name;
        let ty = &p.ty;
        let missing = match &p.default {
            Some(expr) => quote!(#expr),
            None => quote!(return ::core::result::Result::Err(#krate::__private::params::unbound(#python_fn, #name))),
        };
        quote! {
            let #local: #ty = match __celeriac_slots.next().flatten() {
                ::core::option::Option::Some(__celeriac_value) => {
                    #krate::__private::params::convert(#python_fn, #name, __celeriac_value)?
                }
                ::core::option::Option::None => #missing,
            };
        }
    });
    let call_args = params.iter().zip(&locals).map(|(p, local)| match p.kind {
        Kind::Context => quote!(__celeriac_ctx),
        _ => quote!(#local),
    });
    let bound_locals: Vec<&syn::Ident> = params
        .iter()
        .zip(&locals)
        .filter(|(p, _)| p.kind != Kind::Context)
        .map(|(_, l)| l)
        .collect();

    let bound_types: Vec<&Type> = params
        .iter()
        .filter(|p| p.kind != Kind::Context)
        .map(|p| &p.ty)
        .collect();

    let call_args: Vec<TokenStream2> = call_args.collect();
    let call_body = if blocking {
        quote! {
            #krate::BlockingHandler::new(
                |__celeriac_ctx: #krate::TaskContext, _: #krate::CallArgs| {
                    let (#(#bound_locals,)*) = #fn_ident::__celeriac_bind(&__celeriac_ctx)?;
                    #krate::__private::params::into_result(#fn_ident::run(#(#call_args),*))
                },
            )
            .call(__celeriac_ctx)
        }
    } else {
        quote! {
            let (#(#bound_locals,)*) = match #fn_ident::__celeriac_bind(&__celeriac_ctx) {
                ::core::result::Result::Ok(__celeriac_bound) => __celeriac_bound,
                ::core::result::Result::Err(__celeriac_error) => {
                    return #krate::__private::params::failed(__celeriac_error)
                }
            };
            ::std::boxed::Box::pin(async move {
                #krate::__private::params::into_result(#fn_ident::run(#(#call_args),*).await)
            })
        }
    };

    func.sig.ident = syn::Ident::new("run", Span::call_site());
    func.vis = syn::parse_quote!(pub);
    func.attrs.retain(|a| !a.path().is_ident("doc"));
    func.attrs
        .push(syn::parse_quote!(#[doc = "The task function itself, called directly."]));

    Ok(quote! {
        #(#docs)*
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, Default)]
        #vis struct #fn_ident;

        impl #fn_ident {
            /// The parameters as Python sees them.
            pub const PARAMS: #krate::__private::params::Params = #krate::__private::params::Params {
                function: #python_fn,
                params: &[#(#descriptors),*],
            };

            #func

            #[doc(hidden)]
            fn __celeriac_bind(
                __celeriac_ctx: &#krate::TaskContext,
            ) -> ::core::result::Result<(#(#bound_types,)*), #krate::PyException> {
                let mut __celeriac_slots = #fn_ident::PARAMS
                    .bind(&__celeriac_ctx.args, &__celeriac_ctx.kwargs)?
                    .into_iter();
                #(#conversions)*
                ::core::result::Result::Ok((#(#bound_locals,)*))
            }
        }

        impl #krate::Handler for #fn_ident {
            fn call(&self, __celeriac_ctx: #krate::TaskContext) -> #krate::TaskFuture {
                #call_body
            }

            fn params(&self) -> ::core::option::Option<#krate::__private::params::Params> {
                ::core::option::Option::Some(#fn_ident::PARAMS)
            }
        }

        impl #krate::TaskDefinition for #fn_ident {
            fn name(&self) -> &'static str {
                #task_name
            }

            fn blocking(&self) -> bool {
                #blocking
            }

            fn options(&self) -> #krate::TaskOptions {
                #[allow(unused_mut)]
                let mut __celeriac_options = #krate::TaskOptions::default();
                #(#options)*
                __celeriac_options
            }
        }
    })
}

/// Reads and removes `#[default(..)]`, `#[args]`, `#[kwargs]`, `#[kw_only]` from a parameter.
fn take_param_attrs(
    attrs: &mut Vec<Attribute>,
    keyword_only: &mut bool,
) -> syn::Result<(Kind, Option<Expr>)> {
    let mut default = None;
    let mut kind = None;
    let mut kept = Vec::new();
    for attr in attrs.drain(..) {
        let path = attr.path();
        if path.is_ident("default") {
            default = Some(match &attr.meta {
                Meta::List(_) => attr.parse_args::<Expr>()?,
                Meta::NameValue(nv) => nv.value.clone(),
                Meta::Path(_) => {
                    return Err(Error::new(attr.span(), "write `#[default(value)]`"));
                }
            });
        } else if path.is_ident("args") {
            kind = Some(Kind::VarArgs);
        } else if path.is_ident("kwargs") {
            kind = Some(Kind::VarKwargs);
        } else if path.is_ident("kw_only") {
            *keyword_only = true;
        } else {
            kept.push(attr);
        }
    }
    *attrs = kept;
    let kind = match kind {
        Some(Kind::VarArgs) => {
            *keyword_only = true;
            Kind::VarArgs
        }
        Some(k) => k,
        None if *keyword_only => Kind::KeywordOnly,
        None => Kind::Positional,
    };
    if default.is_some() && matches!(kind, Kind::VarArgs | Kind::VarKwargs) {
        return Err(Error::new(
            Span::call_site(),
            "`#[args]` and `#[kwargs]` parameters take no default",
        ));
    }
    Ok((kind, default))
}

/// Python's rules: one `*args`, one `**kwargs` and it last, no required positional parameter
/// after one with a default.
fn check_order(params: &[Param]) -> syn::Result<()> {
    let mut seen_default = false;
    let mut var_args = 0;
    for (i, p) in params.iter().enumerate() {
        match p.kind {
            Kind::Positional if p.default.is_some() => seen_default = true,
            Kind::Positional if seen_default => {
                return Err(Error::new(
                    p.ident.span(),
                    "a parameter without a default follows one with a default",
                ));
            }
            Kind::VarArgs => {
                var_args += 1;
                if var_args > 1 {
                    return Err(Error::new(p.ident.span(), "only one `#[args]` parameter"));
                }
            }
            Kind::VarKwargs if params[i + 1..].iter().any(|q| q.kind != Kind::Context) => {
                return Err(Error::new(
                    p.ident.span(),
                    "the `#[kwargs]` parameter must be the last",
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

fn is_context(ty: &Type) -> bool {
    match ty {
        Type::Path(p) => p
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident == "TaskContext"),
        _ => false,
    }
}

fn unraw(ident: &syn::Ident) -> String {
    let s = ident.to_string();
    s.strip_prefix("r#").map(str::to_string).unwrap_or(s)
}
