//! RPC requests: `sp_executesql` with its statement and typed parameters.

use rusqlite::types::Value;

use crate::{decimal, temporal, types};

/// One `sp_executesql` call.
#[derive(Debug, PartialEq)]
pub(crate) struct ExecuteSql {
    /// The statement text.
    pub sql: String,
    /// Named parameters ("@P1" …) with their values as SQLite takes them.
    pub params: Vec<(String, Value)>,
}

const SP_EXECUTESQL: u16 = 10;

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
        let end = end.ok_or_else(|| "RPC request ends early".to_string())?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().map_err(|_| "short read")?))
    }
    fn b_varchar(&mut self) -> Result<String, String> {
        let chars = self.u8()? as usize;
        Ok(utf16(self.take(chars * 2)?))
    }
    fn plp(&mut self) -> Result<Option<Vec<u8>>, String> {
        if self.u64()? == u64::MAX {
            return Ok(None);
        }
        let mut out = Vec::new();
        loop {
            let n = self.u32()? as usize;
            if n == 0 {
                return Ok(Some(out));
            }
            out.extend_from_slice(self.take(n)?);
        }
    }
    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }
}

fn utf16(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

/// Length of the ALL_HEADERS block that starts SQL batch and RPC payloads.
pub(crate) fn all_headers_len(payload: &[u8]) -> usize {
    payload
        .get(..4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .min(payload.len())
}

/// Parses an RPC payload; only `sp_executesql` (by procedure id) is accepted.
pub(crate) fn parse(payload: &[u8]) -> Result<ExecuteSql, String> {
    let mut r = Reader {
        bytes: payload,
        at: all_headers_len(payload),
    };
    if r.u16()? != 0xFFFF || r.u16()? != SP_EXECUTESQL {
        return Err("this test server runs only sp_executesql".into());
    }
    r.u16()?;
    let mut sql = None;
    let mut params = Vec::new();
    let mut position = 0;
    while !r.done() {
        let name = r.b_varchar()?;
        r.u8()?;
        let value = value(&mut r)?;
        match position {
            0 => match value {
                Value::Text(text) => sql = Some(text),
                _ => return Err("sp_executesql statement is not a string".into()),
            },
            1 => {}
            _ => params.push((name, value)),
        }
        position += 1;
    }
    let sql = sql.ok_or("sp_executesql without a statement")?;
    Ok(ExecuteSql { sql, params })
}

fn value(r: &mut Reader<'_>) -> Result<Value, String> {
    let ty = r.u8()?;
    match ty {
        0x1F => Ok(Value::Null),
        0x26 | 0x68 | 0x6D | 0x24 => {
            r.u8()?;
            let len = r.u8()? as usize;
            let raw = r.take(len)?;
            if len == 0 {
                return Ok(Value::Null);
            }
            fixed(ty, raw)
        }
        0x6A | 0x6C => {
            r.take(2)?;
            let scale = r.u8()?;
            let len = r.u8()? as usize;
            if len == 0 {
                return Ok(Value::Null);
            }
            let raw = r.take(len)?;
            let mut magnitude = [0u8; 16];
            magnitude
                .get_mut(..len - 1)
                .ok_or("decimal parameter too long")?
                .copy_from_slice(&raw[1..]);
            let magnitude = i128::try_from(u128::from_le_bytes(magnitude))
                .map_err(|_| "decimal parameter out of range")?;
            let value = if raw[0] == 0 { -magnitude } else { magnitude };
            Ok(Value::Text(decimal::format_scaled(value, scale)))
        }
        0x28 => {
            let len = r.u8()? as usize;
            if len == 0 {
                return Ok(Value::Null);
            }
            let date = temporal::decode_date(r.take(len)?).ok_or("bad date parameter")?;
            Ok(Value::Text(date.format("%Y-%m-%d").to_string()))
        }
        // TIMEN, DATETIME2N, DATETIMEOFFSETN
        0x29..=0x2B => {
            let scale = r.u8()?;
            let len = r.u8()? as usize;
            if len == 0 {
                return Ok(Value::Null);
            }
            temporal_value(ty, scale, r.take(len)?)
        }
        0xE7 | 0xA7 | 0xEF | 0xAF | 0xA5 | 0xAD => {
            let max_len = r.u16()?;
            if matches!(ty, 0xE7 | 0xA7 | 0xEF | 0xAF) {
                r.take(5)?;
            }
            let raw = if max_len == 0xFFFF {
                r.plp()?
            } else {
                match r.u16()? {
                    0xFFFF => None,
                    n => Some(r.take(n as usize)?.to_vec()),
                }
            };
            Ok(match raw {
                None => Value::Null,
                Some(raw) => match ty {
                    0xE7 | 0xEF => Value::Text(utf16(&raw)),
                    0xA7 | 0xAF => Value::Text(raw.iter().map(|b| *b as char).collect()),
                    _ => Value::Blob(raw),
                },
            })
        }
        _ => Err(format!(
            "parameter type 0x{ty:02x} is not supported by this test server"
        )),
    }
}

fn fixed(ty: u8, raw: &[u8]) -> Result<Value, String> {
    Ok(match (ty, raw.len()) {
        (0x26, 1) => Value::Integer(raw[0] as i64),
        (0x26, 2) => Value::Integer(i16::from_le_bytes([raw[0], raw[1]]) as i64),
        (0x26, 4) => Value::Integer(i32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as i64),
        (0x26, 8) => Value::Integer(i64::from_le_bytes(raw.try_into().map_err(|_| "int")?)),
        (0x68, 1) => Value::Integer(i64::from(raw[0] != 0)),
        (0x6D, 4) => Value::Real(f32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as f64),
        (0x6D, 8) => Value::Real(f64::from_le_bytes(raw.try_into().map_err(|_| "float")?)),
        (0x24, 16) => {
            let guid: [u8; 16] = raw.try_into().map_err(|_| "guid")?;
            let uuid = uuid::Uuid::from_bytes(types::guid_bytes(uuid::Uuid::from_bytes(guid)));
            Value::Text(uuid.hyphenated().to_string())
        }
        (ty, len) => return Err(format!("parameter type 0x{ty:02x} with length {len}")),
    })
}

fn temporal_value(ty: u8, scale: u8, raw: &[u8]) -> Result<Value, String> {
    let time_len = temporal::time_len(scale);
    let time = temporal::decode_time(raw.get(..time_len).ok_or("short time")?, scale)
        .ok_or("bad time parameter")?;
    if ty == 0x29 {
        return Ok(Value::Text(time.format("%H:%M:%S%.f").to_string()));
    }
    let date = temporal::decode_date(raw.get(time_len..time_len + 3).ok_or("short date")?)
        .ok_or("bad date parameter")?;
    let datetime = date.and_time(time);
    if ty == 0x2A {
        return Ok(Value::Text(
            datetime.format("%Y-%m-%d %H:%M:%S%.f").to_string(),
        ));
    }
    let offset = raw
        .get(time_len + 3..time_len + 5)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .ok_or("short datetimeoffset")?;
    let zone = chrono::FixedOffset::east_opt(offset as i32 * 60).ok_or("bad offset")?;
    let local = datetime.and_utc().with_timezone(&zone);
    Ok(Value::Text(
        local.format("%Y-%m-%d %H:%M:%S%.f%:z").to_string(),
    ))
}
