//! Verity's wire types. The `.proto` files in `proto/verity/v1` are compiled here, once, for
//! every service; this crate also holds the conversions between wire messages and the domain
//! types of `verity-primitives`. Conversions from the wire are `TryFrom` and validate every
//! field, so a service receiving a message checks it exactly once, where it arrives.

mod convert;

pub use convert::{
    ConversionError, address_from, b256_from, envelope_from, opt_address_from, signature_from,
    u256_bytes, u256_from,
};

/// Generated messages, clients and servers of package `verity.v1`.
#[allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used
)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/verity.v1.rs"));
}

/// The encoded file descriptor set of every Verity proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/verity_descriptor.bin"));
