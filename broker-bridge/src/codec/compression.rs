//! Body compression named by `headers.compression` (kombu's compression content types).
//!
//! Output is capped: a body that decompresses past the limit is an error, so a small message
//! cannot expand into gigabytes.

use std::io::Read;

use super::error::DecodeErrorKind;

/// `application/x-gzip`: despite the name, a **zlib** stream (kombu's `zlib`/`gzip` aliases).
pub const ZLIB: &str = "application/x-gzip";
/// `application/x-bz2`: bzip2.
pub const BZIP2: &str = "application/x-bz2";
/// `application/x-lzma`: the xz container (Python's `lzma.compress` default).
pub const LZMA: &str = "application/x-lzma";
/// `application/x-brotli`: brotli.
pub const BROTLI: &str = "application/x-brotli";
/// `application/zstd`: a zstd frame.
pub const ZSTD: &str = "application/zstd";

/// Decompress `data` compressed with `method` (a `headers.compression` value), producing at
/// most `limit` bytes.
pub fn decompress(method: &str, data: &[u8], limit: usize) -> Result<Vec<u8>, DecodeErrorKind> {
    let fail = |reason: String| DecodeErrorKind::Decompress {
        method: method.to_string(),
        reason,
    };
    let out = match method {
        ZLIB => read_capped(flate2::read::ZlibDecoder::new(data), limit),
        BZIP2 => read_capped(bzip2::read::BzDecoder::new(data), limit),
        BROTLI => read_capped(brotli_decompressor::Decompressor::new(data, 4096), limit),
        ZSTD => {
            let decoder =
                ruzstd::decoding::StreamingDecoder::new(data).map_err(|e| fail(e.to_string()))?;
            read_capped(decoder, limit)
        }
        LZMA => read_capped(
            lzma_rust2::XzReader::new_mem_limit(data, true, xz_memory_limit_kib(limit)),
            limit,
        ),
        other => return Err(DecodeErrorKind::UnknownCompression(other.to_string())),
    };
    out.map_err(|e| match e {
        Capped::TooLarge => too_large(limit + 1, limit),
        Capped::Io(e) => fail(e.to_string()),
    })
}

/// The memory an xz stream's dictionary may take, in KiB: enough for the output limit (a larger
/// dictionary is never needed) and for Python's default preset (8 MiB), never what a hostile
/// header asks for.
fn xz_memory_limit_kib(limit: usize) -> u32 {
    let bytes = limit.clamp(16 << 20, 1 << 30) + (1 << 20);
    u32::try_from(bytes / 1024).unwrap_or(u32::MAX)
}

fn too_large(size: usize, limit: usize) -> DecodeErrorKind {
    DecodeErrorKind::TooLarge {
        what: "decompressed body",
        size,
        limit,
    }
}

enum Capped {
    TooLarge,
    Io(std::io::Error),
}

fn read_capped(reader: impl Read, limit: usize) -> Result<Vec<u8>, Capped> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader.take(cap).read_to_end(&mut out).map_err(Capped::Io)?;
    if out.len() > limit {
        return Err(Capped::TooLarge);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn zlib_round_trip_and_cap() {
        let body = vec![b'a'; 10_000];
        let packed = zlib(&body);
        assert_eq!(&packed[..2], &[0x78, 0x9c]);
        assert_eq!(decompress(ZLIB, &packed, 10_000).unwrap(), body);
        assert!(matches!(
            decompress(ZLIB, &packed, 9_999),
            Err(DecodeErrorKind::TooLarge { .. })
        ));
    }

    #[test]
    fn garbage_and_unknown_methods_are_errors() {
        for method in [ZLIB, BZIP2, LZMA, BROTLI, ZSTD] {
            assert!(
                matches!(
                    decompress(method, b"\x00\x01 definitely not compressed", 1 << 20),
                    Err(DecodeErrorKind::Decompress { .. })
                ),
                "{method}"
            );
        }
        assert_eq!(
            decompress("application/x-snappy", b"", 10),
            Err(DecodeErrorKind::UnknownCompression(
                "application/x-snappy".into()
            ))
        );
    }

    #[test]
    fn gzip_framing_is_not_accepted_as_zlib() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(b"[]").unwrap();
        let gz = enc.finish().unwrap();
        assert!(decompress(ZLIB, &gz, 100).is_err());
    }
}
