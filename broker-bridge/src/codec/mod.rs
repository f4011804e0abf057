//! The Celery task message codec: raw Redis list element ⇄ [`TaskMessage`].
//!
//! * [`decode`] — envelope → content-type check → base64 → decompress → deserialize → protocol
//!   1/hybrid/2 → [`TaskMessage`]; every failure is a [`DecodeError`] carrying the raw bytes.
//! * [`TaskMessage::to_envelope`] — protocol 2, `application/json`, base64 body, as Celery writes.
//! * [`TaskMessage::from_signature`] — a new message applying a [`Signature`].

pub mod compression;
pub mod content;
mod decode;
mod encode;
mod error;
mod fields;
mod headers;
mod message;
mod repr;
mod saferepr;
mod signature;
mod timestamp;
mod yaml;

pub use decode::{decode, decode_envelope, DecodeOptions};
pub use encode::EncodeOptions;
pub use error::{DecodeError, DecodeErrorKind};
pub use message::TaskMessage;
pub use repr::{args_repr, kwargs_repr, value_repr};
pub use saferepr::{args_saferepr, kwargs_saferepr};
pub use signature::Signature;
pub use timestamp::WireTime;
