//! Why a raw list element could not be turned into a [`TaskMessage`](super::TaskMessage).

use std::fmt;

use crate::envelope::EnvelopeError;

/// What went wrong while decoding. See [`DecodeError`] for the raw bytes and the ids.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeErrorKind {
    /// The content type is never deserialized (pickle) or is not in the accept list. The message
    /// is intact; the caller should dead-letter it, not drop it.
    #[error("content type {content_type:?} is refused ({reason})")]
    Refused {
        /// The envelope's `content-type`.
        content_type: String,
        /// Why: `never deserialized` (pickle) or `not in accept list`.
        reason: &'static str,
    },
    /// The raw element is larger than [`DecodeOptions::max_bytes`](super::DecodeOptions::max_bytes),
    /// or its decompressed body is.
    #[error("too large: {what} is {size} bytes or more, over the limit of {limit}")]
    TooLarge {
        /// `message` or `decompressed body`.
        what: &'static str,
        /// The size seen (a lower bound for streamed data).
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The element is not a kombu envelope.
    #[error("bad envelope: {0}")]
    Envelope(#[from] EnvelopeError),
    /// `properties.body_encoding` is `base64` but the body is not valid base64.
    #[error("body is not valid base64: {0}")]
    Base64(String),
    /// `properties.body_encoding` is neither `base64` nor a text encoding.
    #[error("unsupported body_encoding {0:?}")]
    BodyEncoding(String),
    /// `headers.compression` names a method this codec does not know.
    #[error("unsupported compression {0:?}")]
    UnknownCompression(String),
    /// The body could not be decompressed.
    #[error("cannot decompress body as {method}: {reason}")]
    Decompress {
        /// The `headers.compression` value.
        method: String,
        /// The decompressor's message.
        reason: String,
    },
    /// The content type is accepted but no deserializer exists for it.
    #[error("no deserializer for content type {0:?}")]
    UnknownContentType(String),
    /// The body does not parse with its content type's deserializer.
    #[error("body is not valid {content_type}: {reason}")]
    Deserialize {
        /// The envelope's `content-type`.
        content_type: String,
        /// The parser's message.
        reason: String,
    },
    /// Nesting deeper than the codec accepts.
    #[error("body nests deeper than {0} levels")]
    TooDeep(usize),
    /// The body is neither a protocol-2 `[args, kwargs, embed]` list nor a protocol-1 task object.
    #[error("not a Celery task message: {0}")]
    UnknownMessage(String),
    /// A field has the wrong type or value.
    #[error("field `{field}` {problem}")]
    BadField {
        /// Where the field is, e.g. `headers.retries` or `embed.callbacks[0].task`.
        field: String,
        /// What is wrong, e.g. `should be an integer`.
        problem: String,
    },
    /// A signed (`auth`) body whose signature does not check out: unknown signer, bad
    /// signature or not in the signed format.
    #[error("signature check failed: {0}")]
    Signature(crate::signing::SigningError),
    /// `eta` or `expires` is not an ISO-8601 time (Celery rejects such a message as invalid).
    #[error("`{field}` is not an ISO-8601 time: {value:?}")]
    BadTimestamp {
        /// `eta` or `expires`.
        field: &'static str,
        /// The value as sent.
        value: String,
    },
}

/// A failed decode: the reason, the untouched raw bytes (to dead-letter them intact) and the task
/// name and id when the headers were readable.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError(Box<Inner>);

#[derive(Debug, Clone, PartialEq)]
struct Inner {
    kind: DecodeErrorKind,
    raw: Vec<u8>,
    task: Option<String>,
    id: Option<String>,
}

impl DecodeError {
    pub(crate) fn new(kind: DecodeErrorKind, raw: &[u8]) -> Self {
        DecodeError(Box::new(Inner {
            kind,
            raw: raw.to_vec(),
            task: None,
            id: None,
        }))
    }

    pub(crate) fn with_ids(mut self, task: Option<String>, id: Option<String>) -> Self {
        self.0.task = task;
        self.0.id = id;
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> &DecodeErrorKind {
        &self.0.kind
    }

    /// True when the message was refused by content type (pickle, or not accepted): it is
    /// well-formed, just not for us.
    pub fn is_refused(&self) -> bool {
        matches!(self.0.kind, DecodeErrorKind::Refused { .. })
    }

    /// The raw list element exactly as given to [`decode`](super::decode).
    pub fn raw(&self) -> &[u8] {
        &self.0.raw
    }

    /// Consume into the raw list element.
    pub fn into_raw(self) -> Vec<u8> {
        self.0.raw
    }

    /// `headers.task` (protocol 2) when it could be read.
    pub fn task(&self) -> Option<&str> {
        self.0.task.as_deref()
    }

    /// `headers.id` (protocol 2) when it could be read.
    pub fn id(&self) -> Option<&str> {
        self.0.id.as_deref()
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.kind)?;
        match (&self.0.task, &self.0.id) {
            (Some(t), Some(i)) => write!(f, " (task {t}, id {i})"),
            (Some(t), None) => write!(f, " (task {t})"),
            (None, Some(i)) => write!(f, " (id {i})"),
            (None, None) => Ok(()),
        }
    }
}

impl std::error::Error for DecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0.kind)
    }
}
