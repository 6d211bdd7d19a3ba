//! Reading the trait: what each method is, and every mistake found, each
//! reported at its place.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{format_ident, ToTokens};
use syn::ext::IdentExt;
use syn::{
    Attribute, FnArg, GenericArgument, Ident, ItemTrait, Pat, Path, PathArguments, ReturnType,
    TraitBound, TraitItem, TraitItemFn, Type, TypeParamBound,
};

/// What a method returns.
pub(crate) enum Kind {
    /// `async fn .. -> Result<ok, err>`.
    Unary { ok: Type, err: Type },
    /// `#[server_stream] fn .. -> S` where `S: Stream<Item = Result<item, err>>`.
    /// `erase` holds the `Stream<..>` bound when `S` is `impl Stream`: the
    /// handler then boxes it as `dyn Stream + Send + 'static`, because an
    /// `impl Trait` returned from a trait method captures the lifetime of
    /// `&self` and could not leave the handler closure otherwise.
    Stream {
        item: Type,
        err: Type,
        erase: Option<TraitBound>,
    },
}

/// One parameter after `&self`, in order.
pub(crate) enum Param {
    /// The `#[context]` parameter.
    Context,
    /// An argument: a field of the request.
    Arg { ident: Ident, ty: Box<Type> },
}

/// One method of the trait, checked.
pub(crate) struct Method {
    /// As written (possibly a raw identifier).
    pub(crate) ident: Ident,
    /// Marked `#[idempotent]`.
    pub(crate) idempotent: bool,
    pub(crate) kind: Kind,
    pub(crate) params: Vec<Param>,
    /// Its doc comments, repeated on the client's method.
    pub(crate) docs: Vec<Attribute>,
    /// Its `#[cfg]`s, repeated on everything generated for it.
    pub(crate) cfgs: Vec<Attribute>,
    /// `{Trait}{Method}Request`.
    pub(crate) request: Ident,
}

impl Method {
    /// The arguments that make the request, in order.
    pub(crate) fn args(&self) -> impl Iterator<Item = (&Ident, &Type)> {
        self.params.iter().filter_map(|p| match p {
            Param::Arg { ident, ty } => Some((ident, &**ty)),
            Param::Context => None,
        })
    }

    /// The method's name on the wire.
    pub(crate) fn wire_name(&self) -> String {
        self.ident.unraw().to_string()
    }
}

/// Names the generated client (or the trait) already uses.
const RESERVED: [&str; 5] = [
    "into_service",
    "connect",
    "builder",
    "from_client",
    "client",
];

/// Collects every problem rather than stopping at the first.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    fn check<T>(&mut self, r: syn::Result<T>) -> Option<T> {
        r.map_err(|e| self.push(e)).ok()
    }

    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

pub(crate) fn analyse(tr: &ItemTrait) -> syn::Result<Vec<Method>> {
    let mut errors = Errors::default();
    if !tr.generics.params.is_empty() || tr.generics.where_clause.is_some() {
        errors.push(syn::Error::new_spanned(
            &tr.generics,
            "a #[meshwire::service] trait cannot be generic: client and server must agree on concrete types",
        ));
    }
    let mut methods = Vec::new();
    for item in &tr.items {
        match item {
            TraitItem::Fn(f) => {
                if let Some(m) = errors.check(analyse_method(&tr.ident, f)) {
                    methods.push(m);
                }
            }
            other => errors.push(syn::Error::new_spanned(
                other,
                "a #[meshwire::service] trait holds only methods",
            )),
        }
    }
    let names: Vec<String> = methods
        .iter()
        .map(|m| m.ident.unraw().to_string())
        .collect();
    for m in &methods {
        let name = m.ident.unraw().to_string();
        if RESERVED.contains(&name.as_str()) {
            errors.push(syn::Error::new_spanned(
                &m.ident,
                format!("`{name}` is a name the generated code already uses; rename the method"),
            ));
        }
        if matches!(m.kind, Kind::Stream { .. }) {
            let with = format!("{name}_with");
            if names.contains(&with) {
                errors.push(syn::Error::new_spanned(
                    &m.ident,
                    format!("the client method `{with}` of this streaming method clashes with a method of the trait"),
                ));
            }
        }
    }
    errors.finish()?;
    Ok(methods)
}

fn analyse_method(trait_ident: &Ident, f: &TraitItemFn) -> syn::Result<Method> {
    let mut errors = Errors::default();
    let sig = &f.sig;
    let mut idempotent = false;
    let mut stream = false;
    for attr in &f.attrs {
        for (name, flag) in [
            ("idempotent", &mut idempotent),
            ("server_stream", &mut stream),
        ] {
            if attr.path().is_ident(name) {
                if !matches!(attr.meta, syn::Meta::Path(_)) {
                    errors.push(syn::Error::new_spanned(
                        attr,
                        format!("#[{name}] takes no arguments"),
                    ));
                }
                if *flag {
                    errors.push(syn::Error::new_spanned(attr, format!("#[{name}] twice")));
                }
                *flag = true;
            }
        }
    }
    if let Some(c) = &sig.constness {
        errors.push(syn::Error::new_spanned(
            c,
            "a service method cannot be `const`",
        ));
    }
    if let Some(u) = &sig.unsafety {
        errors.push(syn::Error::new_spanned(
            u,
            "a service method cannot be `unsafe`",
        ));
    }
    if let Some(a) = &sig.abi {
        errors.push(syn::Error::new_spanned(
            a,
            "a service method cannot be `extern`",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(syn::Error::new_spanned(
            &sig.generics,
            "a service method cannot be generic: client and server must agree on concrete types",
        ));
    }
    if let Some(v) = &sig.variadic {
        errors.push(syn::Error::new_spanned(
            v,
            "a service method cannot be variadic",
        ));
    }
    if let Some(body) = &f.default {
        errors.push(syn::Error::new_spanned(
            body,
            "a service method cannot have a default body; implement it in the `impl`",
        ));
    }
    let params = errors.check(analyse_params(f)).unwrap_or_default();
    let kind = match (sig.asyncness.is_some(), stream) {
        (true, false) => match &sig.output {
            ReturnType::Type(_, ty) => errors.check(
                split_result(ty, "a service method").map(|(ok, err)| Kind::Unary { ok, err }),
            ),
            ReturnType::Default => {
                errors.push(syn::Error::new_spanned(
                    sig,
                    "a service method returns `Result<T, E>`: add `-> Result<(), YourError>`",
                ));
                None
            }
        },
        (false, true) => match &sig.output {
            ReturnType::Type(_, ty) => errors.check(analyse_stream(ty)),
            ReturnType::Default => {
                errors.push(syn::Error::new_spanned(
                    sig,
                    "a #[server_stream] method returns a `Stream` of `Result<T, E>`, \
                     e.g. `-> impl Stream<Item = Result<T, E>> + Send + 'static`",
                ));
                None
            }
        },
        (true, true) => {
            errors.push(syn::Error::new_spanned(
                sig.asyncness,
                "a #[server_stream] method is a plain `fn` that returns the stream; remove `async`",
            ));
            None
        }
        (false, false) => {
            errors.push(syn::Error::new_spanned(
                sig.fn_token,
                "a service method is an `async fn`, or a `fn` returning a `Stream` marked #[server_stream]",
            ));
            None
        }
    };
    errors.finish()?;
    let kind = kind.ok_or_else(|| syn::Error::new_spanned(sig, "unreachable: no method kind"))?;
    let filter = |name: &str| -> Vec<Attribute> {
        f.attrs
            .iter()
            .filter(|a| a.path().is_ident(name))
            .cloned()
            .collect()
    };
    Ok(Method {
        request: format_ident!(
            "{}{}Request",
            trait_ident.unraw(),
            crate::upper_camel(&sig.ident.unraw().to_string())
        ),
        ident: sig.ident.clone(),
        idempotent,
        kind,
        params,
        docs: filter("doc"),
        cfgs: filter("cfg"),
    })
}

fn analyse_params(f: &TraitItemFn) -> syn::Result<Vec<Param>> {
    let mut errors = Errors::default();
    let mut inputs = f.sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(r))
            if r.reference.is_some() && r.mutability.is_none() && r.colon_token.is_none() => {}
        Some(other) => errors.push(syn::Error::new_spanned(
            other,
            "a service method takes `&self` first (calls run concurrently on one shared instance)",
        )),
        None => errors.push(syn::Error::new_spanned(
            &f.sig,
            "a service method takes `&self` first",
        )),
    }
    let mut params = Vec::new();
    let mut context_seen = false;
    for input in inputs {
        let FnArg::Typed(pt) = input else {
            errors.push(syn::Error::new_spanned(input, "`self` goes first"));
            continue;
        };
        let mut is_context = false;
        for attr in &pt.attrs {
            if attr.path().is_ident("context") && matches!(attr.meta, syn::Meta::Path(_)) {
                if context_seen {
                    errors.push(syn::Error::new_spanned(
                        attr,
                        "only one #[context] parameter",
                    ));
                }
                context_seen = true;
                is_context = true;
            } else {
                errors.push(syn::Error::new_spanned(
                    attr,
                    "the only attribute understood on a parameter is #[context]",
                ));
            }
        }
        if is_context {
            params.push(Param::Context);
            continue;
        }
        let ident = match &*pt.pat {
            Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => p.ident.clone(),
            other => {
                errors.push(syn::Error::new_spanned(
                    other,
                    "a service method's argument is a plain name (it becomes a field of the request)",
                ));
                continue;
            }
        };
        if let Some(bad) = borrowed(pt.ty.to_token_stream()) {
            errors.push(syn::Error::new(
                bad,
                "a service method's arguments are owned values (the request is deserialized into \
                 its own struct): use e.g. `String` rather than `&str`, and no `impl Trait`",
            ));
            continue;
        }
        params.push(Param::Arg {
            ident,
            ty: pt.ty.clone(),
        });
    }
    errors.finish()?;
    Ok(params)
}

/// The span of a `&`, a lifetime or an `impl` in a type, if any.
fn borrowed(tokens: TokenStream) -> Option<Span> {
    for t in tokens {
        match t {
            TokenTree::Punct(p) if p.as_char() == '&' || p.as_char() == '\'' => {
                return Some(p.span())
            }
            TokenTree::Ident(i) if i == "impl" => return Some(i.span()),
            TokenTree::Group(g) => {
                if let Some(s) = borrowed(g.stream()) {
                    return Some(s);
                }
            }
            _ => {}
        }
    }
    None
}

/// `Result<T, E>` → `(T, E)`.
fn split_result(ty: &Type, what: &str) -> syn::Result<(Type, Type)> {
    let fail = || {
        syn::Error::new_spanned(
            ty,
            format!(
                "{what} returns `Result<T, E>` with both types written out (the client needs `E` to \
                 decode the service's own errors; an alias such as `io::Result<T>` hides it)"
            ),
        )
    };
    let Type::Path(p) = peel(ty) else {
        return Err(fail());
    };
    let Some(last) = p.path.segments.last() else {
        return Err(fail());
    };
    if p.qself.is_some() || last.ident != "Result" {
        return Err(fail());
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return Err(fail());
    };
    let types: Vec<&Type> = args
        .args
        .iter()
        .filter_map(|a| match a {
            GenericArgument::Type(t) => Some(t),
            _ => None,
        })
        .collect();
    match types.as_slice() {
        [ok, err] if args.args.len() == 2 => Ok(((*ok).clone(), (*err).clone())),
        _ => Err(fail()),
    }
}

fn peel(ty: &Type) -> &Type {
    match ty {
        Type::Paren(p) => peel(&p.elem),
        Type::Group(g) => peel(&g.elem),
        other => other,
    }
}

fn analyse_stream(ty: &Type) -> syn::Result<Kind> {
    let unknown = || {
        syn::Error::new_spanned(
            ty,
            "cannot see the item type of this stream: write the return type as \
             `impl Stream<Item = Result<T, E>> + Send + 'static` (or a type that spells out \
             `Item = Result<T, E>`, e.g. `Pin<Box<dyn Stream<Item = Result<T, E>> + Send>>`)",
        )
    };
    if let Type::ImplTrait(it) = peel(ty) {
        let mut found = None;
        let (mut send, mut statik) = (false, false);
        for b in &it.bounds {
            match b {
                TypeParamBound::Trait(tb) => {
                    if tb.path.segments.last().is_some_and(|s| s.ident == "Send") {
                        send = true;
                    } else if let Some(item) = item_binding(&tb.path) {
                        found = Some((item.clone(), tb.clone()));
                    }
                }
                TypeParamBound::Lifetime(l) if l.ident == "static" => statik = true,
                _ => {}
            }
        }
        let (item, bound) = found.ok_or_else(unknown)?;
        if !send || !statik {
            return Err(syn::Error::new_spanned(
                ty,
                "the stream of a #[server_stream] method must be `+ Send + 'static`: it runs on \
                 its own task and outlives the call to the method (move what it needs into it)",
            ));
        }
        let (item, err) = split_result(&item, "the stream of a #[server_stream] method")?;
        return Ok(Kind::Stream {
            item,
            err,
            erase: Some(bound),
        });
    }
    let item = find_item(peel(ty)).ok_or_else(unknown)?;
    let (item, err) = split_result(&item, "the stream of a #[server_stream] method")?;
    Ok(Kind::Stream {
        item,
        err,
        erase: None,
    })
}

/// `Item = X` in the generic arguments of a path's last segment.
fn item_binding(path: &Path) -> Option<&Type> {
    let PathArguments::AngleBracketed(args) = &path.segments.last()?.arguments else {
        return None;
    };
    args.args.iter().find_map(|a| match a {
        GenericArgument::AssocType(at) if at.ident == "Item" => Some(&at.ty),
        _ => None,
    })
}

/// The item type of a concrete stream type: an `Item = X` binding anywhere
/// inside (`Pin<Box<dyn Stream<Item = X> + Send>>`), else the one
/// `Result<..>` argument of the outer type (`BoxStream<'static, Result<..>>`).
fn find_item(ty: &Type) -> Option<Type> {
    fn binding(ty: &Type) -> Option<Type> {
        let bounds_item = |bounds: &syn::punctuated::Punctuated<TypeParamBound, _>| {
            bounds.iter().find_map(|b| match b {
                TypeParamBound::Trait(tb) => item_binding(&tb.path).cloned(),
                _ => None,
            })
        };
        match peel(ty) {
            Type::TraitObject(o) => bounds_item(&o.bounds),
            Type::ImplTrait(i) => bounds_item(&i.bounds),
            Type::Path(p) => p.path.segments.iter().find_map(|s| match &s.arguments {
                PathArguments::AngleBracketed(args) => args.args.iter().find_map(|a| match a {
                    GenericArgument::AssocType(at) if at.ident == "Item" => Some(at.ty.clone()),
                    GenericArgument::Type(t) => binding(t),
                    _ => None,
                }),
                _ => None,
            }),
            _ => None,
        }
    }
    if let Some(t) = binding(ty) {
        return Some(t);
    }
    let Type::Path(p) = ty else { return None };
    let PathArguments::AngleBracketed(args) = &p.path.segments.last()?.arguments else {
        return None;
    };
    let mut results = args.args.iter().filter_map(|a| match a {
        GenericArgument::Type(t) if split_result(t, "").is_ok() => Some(t.clone()),
        _ => None,
    });
    let first = results.next()?;
    results.next().is_none().then_some(first)
}
