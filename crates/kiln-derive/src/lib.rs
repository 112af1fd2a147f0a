//! # kiln-derive
//!
//! `#[derive(Module)]` for kiln models. Use it through `kiln_nn::Module` (or `kiln::prelude`),
//! which re-exports it next to the trait of the same name; the trait's documentation describes
//! the names, the field attributes and the generated methods.
//!
//! The generated code names kiln's items by absolute paths: `::kiln_nn::...` when the crate
//! being compiled depends on `kiln-nn` (or is `kiln-nn`), `::kiln::nn::...` when it depends only
//! on the `kiln` facade. Renamed dependencies are followed.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2, TokenTree};
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{parse_macro_input, parse_quote, Data, DeriveInput, Fields, Ident, LitStr};

/// Implements `kiln_nn::Module` for a struct (named fields or a tuple struct).
///
/// Every field is visited in declaration order under its name (`0`, `1`, ... for a tuple
/// struct): `Tensor` fields are parameters, other fields are recursed into and must implement
/// `Module` (kiln implements it for `Option`, `Vec`, arrays, `Box`, `BTreeMap<String, _>` and,
/// as no-ops, for numbers, `bool` and `String`, so plain config fields need no attribute).
///
/// Field attributes, `#[module(...)]`:
/// - `skip`: ignore the field (a config value whose type does not implement `Module`);
/// - `buffer`: the field's tensors are buffers (saved and loaded, never trained);
/// - `rename = "Name"`: use `Name` as the field's segment in tensor names;
/// - `flatten`: name the field's tensors without a segment of their own (a wrapper);
/// - `training`: a `bool` field that `train()` / `eval()` set.
///
/// The struct itself is reported by `visit_modules` / `visit_modules_mut` before its fields;
/// without generic type or lifetime parameters it also gets `as_any` / `as_any_mut`, so code
/// walking a model can reach its concrete type (LoRA finds its `Linear` layers that way).
#[proc_macro_derive(Module, attributes(module))]
pub fn derive_module(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(input) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// The path of kiln-nn as seen from the crate being compiled.
fn nn_path() -> TokenStream2 {
    use proc_macro_crate::{crate_name, FoundCrate};
    match crate_name("kiln-nn") {
        // Inside kiln-nn (its lib, tests and doc tests) `::kiln_nn` names it: the lib declares
        // `extern crate self as kiln_nn;`.
        Ok(FoundCrate::Itself) => quote!(::kiln_nn),
        Ok(FoundCrate::Name(name)) => {
            let id = Ident::new(&name, Span::call_site());
            quote!(::#id)
        }
        Err(_) => match crate_name("kiln") {
            Ok(FoundCrate::Name(name)) => {
                let id = Ident::new(&name, Span::call_site());
                quote!(::#id::nn)
            }
            Ok(FoundCrate::Itself) => quote!(::kiln::nn),
            // No manifest to read (e.g. rustc run by hand): assume the plain crate name.
            Err(_) => quote!(::kiln_nn),
        },
    }
}

/// What a field is, from its `#[module(...)]` attributes.
#[derive(Default)]
struct FieldAttrs {
    skip: bool,
    buffer: bool,
    flatten: bool,
    training: bool,
    rename: Option<String>,
}

fn field_attrs(field: &syn::Field) -> syn::Result<FieldAttrs> {
    let mut a = FieldAttrs::default();
    for attr in field.attrs.iter().filter(|a| a.path().is_ident("module")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("skip") {
                a.skip = true;
            } else if meta.path.is_ident("buffer") {
                a.buffer = true;
            } else if meta.path.is_ident("flatten") {
                a.flatten = true;
            } else if meta.path.is_ident("training") {
                a.training = true;
            } else if meta.path.is_ident("rename") {
                let s: LitStr = meta.value()?.parse()?;
                if s.value().is_empty() || s.value().contains('.') {
                    return Err(syn::Error::new(s.span(), "a renamed field needs a non-empty name without '.'"));
                }
                a.rename = Some(s.value());
            } else {
                return Err(
                    meta.error("unknown module attribute; expected skip, buffer, rename = \"..\", flatten or training")
                );
            }
            Ok(())
        })?;
    }
    let conflict = |msg: &str| Err(syn::Error::new(field.span(), msg));
    if a.skip && (a.buffer || a.flatten || a.training || a.rename.is_some()) {
        return conflict("#[module(skip)] cannot be combined with other module attributes");
    }
    if a.training && (a.buffer || a.flatten || a.rename.is_some()) {
        return conflict("#[module(training)] marks a bool flag; it cannot be combined with buffer, rename or flatten");
    }
    if a.flatten && a.rename.is_some() {
        return conflict("#[module(flatten)] fields have no name segment to rename");
    }
    Ok(a)
}

/// True when `ty` mentions one of `params` (then its `Module` bound goes on the impl).
fn mentions(tokens: TokenStream2, params: &[Ident]) -> bool {
    tokens.into_iter().any(|tt| match tt {
        TokenTree::Ident(id) => params.contains(&id),
        TokenTree::Group(g) => mentions(g.stream(), params),
        _ => false,
    })
}

fn expand(input: DeriveInput) -> syn::Result<TokenStream2> {
    let nn = nn_path();
    let name = &input.ident;
    let fields: Vec<syn::Field> = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(f) => f.named.iter().cloned().collect(),
            Fields::Unnamed(f) => f.unnamed.iter().cloned().collect(),
            Fields::Unit => Vec::new(),
        },
        Data::Enum(e) => return Err(syn::Error::new(e.enum_token.span(), "#[derive(Module)] supports structs only")),
        Data::Union(u) => return Err(syn::Error::new(u.union_token.span(), "#[derive(Module)] supports structs only")),
    };

    let type_params: Vec<Ident> = input.generics.type_params().map(|p| p.ident.clone()).collect();
    let mut generics = input.generics.clone();
    let tensor = quote!(#nn::module::__private::Tensor);
    let kind = quote!(#nn::TensorKind);

    let mut visit = Vec::new();
    let mut visit_mut = Vec::new();
    let mut visit_modules = Vec::new();
    let mut visit_modules_mut = Vec::new();
    let mut set_training = Vec::new();
    let mut flag: Option<TokenStream2> = None;
    let mut child_modes = Vec::new();

    for (i, field) in fields.iter().enumerate() {
        let attrs = field_attrs(field)?;
        if attrs.skip {
            continue;
        }
        let member: TokenStream2 = match &field.ident {
            Some(id) => id.to_token_stream(),
            None => syn::Index::from(i).to_token_stream(),
        };
        if attrs.training {
            if flag.is_some() {
                return Err(syn::Error::new(field.span(), "only one field can be #[module(training)]"));
            }
            set_training.push(quote!(self.#member = training;));
            flag = Some(quote!(self.#member));
            continue;
        }
        let ty = &field.ty;
        if mentions(ty.to_token_stream(), &type_params) {
            generics.make_where_clause().predicates.push(parse_quote!(#ty: #nn::Module));
        }
        let segment = match (&attrs.rename, &field.ident) {
            (Some(r), _) => r.clone(),
            (None, Some(id)) => id.to_string().trim_start_matches("r#").to_string(),
            (None, None) => i.to_string(),
        };
        let child_prefix = if attrs.flatten { quote!(prefix) } else { quote!(&#nn::module::join(prefix, #segment)) };
        // Spanned at the field's type, so a type that does not implement Module is reported there.
        let module = quote_spanned!(ty.span()=> <#ty as #nn::Module>);
        if attrs.buffer {
            visit.push(quote! {
                #module::visit(&self.#member, #child_prefix,
                    &mut |n: &str, t: &#tensor, _: #kind| f(n, t, #kind::Buffer));
            });
            visit_mut.push(quote! {
                #module::visit_mut(&mut self.#member, #child_prefix,
                    &mut |n: &str, t: &mut #tensor, _: #kind| f(n, t, #kind::Buffer));
            });
        } else {
            visit.push(quote!(#module::visit(&self.#member, #child_prefix, f);));
            visit_mut.push(quote!(#module::visit_mut(&mut self.#member, #child_prefix, f);));
        }
        visit_modules.push(quote!(#module::visit_modules(&self.#member, #child_prefix, f);));
        visit_modules_mut.push(quote!(#module::visit_modules_mut(&mut self.#member, #child_prefix, f);));
        set_training.push(quote!(#module::set_training(&mut self.#member, training);));
        child_modes.push(quote!(.or_else(|| #module::training_mode(&self.#member))));
    }

    let training_mode = match flag {
        Some(f) => quote!(::core::option::Option::Some(#f)),
        None => quote!(::core::option::Option::None #(#child_modes)*),
    };
    // `Any` needs `Self: 'static`, which only a struct without generic parameters is sure to be
    // (const parameters are fine); generic structs keep the trait's `None`.
    let as_any = if input.generics.type_params().next().is_none() && input.generics.lifetimes().next().is_none() {
        quote! {
            fn as_any(&self) -> ::core::option::Option<&dyn ::core::any::Any> {
                ::core::option::Option::Some(self)
            }
            fn as_any_mut(&mut self) -> ::core::option::Option<&mut dyn ::core::any::Any> {
                ::core::option::Option::Some(self)
            }
        }
    } else {
        quote!()
    };
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    // `f` and `training` go unused in structs without fields of the matching kind.
    Ok(quote! {
        #[automatically_derived]
        #[allow(unused_variables)]
        impl #impl_generics #nn::Module for #name #ty_generics #where_clause {
            fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &#tensor, #kind)) {
                #(#visit)*
            }
            fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut #tensor, #kind)) {
                #(#visit_mut)*
            }
            fn visit_modules<'__a>(&'__a self, prefix: &str, f: &mut dyn FnMut(&str, &'__a dyn #nn::Module)) {
                f(prefix, self);
                #(#visit_modules)*
            }
            fn visit_modules_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut dyn #nn::Module)) {
                f(prefix, self);
                #(#visit_modules_mut)*
            }
            #as_any
            fn set_training(&mut self, training: bool) {
                #(#set_training)*
            }
            fn training_mode(&self) -> ::core::option::Option<bool> {
                #training_mode
            }
        }
    })
}
