//! `#[nbdbox_sdk::connection]`: tell the SDK which optional methods a plugin's connection
//! type defines.
//!
//! nbdkit derives a plugin's defaults from which callbacks exist (a plugin with `.pwrite` can
//! write, one with `.zero` zeroes natively, ...; nbdkit-plugin(3)). A Rust trait cannot ask
//! whether a default method was overridden, so this attribute reads the method names of the
//! `impl Connection for X` block it is placed on and writes the answer into the block as
//! `const IMPLEMENTS: ::nbdbox_sdk::Implements`. The SDK's default `capabilities` turns that
//! into `Capabilities::implied`.

use proc_macro::TokenStream;
use quote::{format_ident, quote};
use syn::{parse_macro_input, parse_quote, Error, ImplItem, ItemImpl};

/// The optional `Connection` methods whose presence changes nbdkit's defaults: exactly the
/// fields of `nbdbox_sdk::Implements` (a field added there fails to compile here until added).
const OPTIONAL: &[&str] = &["pwrite", "flush", "trim", "zero", "extents", "cache"];

/// Place on `impl Connection for X { ... }`: adds `const IMPLEMENTS` naming the optional
/// methods the block defines.
#[proc_macro_attribute]
pub fn connection(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        let attr = proc_macro2::TokenStream::from(attr);
        return Error::new_spanned(attr, "#[connection] takes no arguments")
            .to_compile_error()
            .into();
    }
    let mut block = parse_macro_input!(item as ItemImpl);
    if block.trait_.is_none() {
        return Error::new_spanned(&block.self_ty, "#[connection] goes on `impl Connection for ...`")
            .to_compile_error()
            .into();
    }
    let mut defined = Vec::new();
    for item in &block.items {
        match item {
            ImplItem::Const(c) if c.ident == "IMPLEMENTS" => {
                return Error::new_spanned(&c.ident, "#[connection] writes IMPLEMENTS itself; remove this one")
                    .to_compile_error()
                    .into();
            }
            ImplItem::Fn(f) => defined.push(f.sig.ident.to_string()),
            _ => {}
        }
    }
    let fields = OPTIONAL.iter().map(|name| format_ident!("{name}"));
    let values = OPTIONAL.iter().map(|name| defined.iter().any(|d| d == name));
    block.items.push(parse_quote! {
        const IMPLEMENTS: ::nbdbox_sdk::Implements = ::nbdbox_sdk::Implements { #(#fields: #values),* };
    });
    quote!(#block).into()
}
