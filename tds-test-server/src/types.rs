//! Result column types: chosen from the SQLite declared type (or the first value), written
//! as TDS TYPE_INFO, and each SQLite value encoded as that type.

use rusqlite::types::ValueRef;

use crate::{decimal, temporal};

/// Latin1_General_CI_AS, sent with every string column.
const COLLATION: [u8; 5] = [0x09, 0x04, 0xD0, 0x00, 0x34];
const MAX_LEN: u16 = 0xFFFF;
const PLP_NULL: u64 = u64::MAX;

/// The SQL Server type a result column is sent as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// TINYINT (INTN, 1 byte).
    TinyInt,
    /// SMALLINT (INTN, 2 bytes).
    SmallInt,
    /// INT (INTN, 4 bytes).
    Int,
    /// BIGINT (INTN, 8 bytes); also SQLite INTEGER.
    BigInt,
    /// BIT.
    Bit,
    /// FLOAT (8 bytes).
    Float,
    /// DECIMAL/NUMERIC with precision and scale.
    Decimal {
        /// Total digits (1..=38).
        precision: u8,
        /// Digits after the point.
        scale: u8,
    },
    /// MONEY (8 bytes, scale 4).
    Money,
    /// DATETIME2(7); also DATETIME and SMALLDATETIME.
    DateTime2,
    /// DATETIMEOFFSET(7).
    DateTimeOffset,
    /// DATE.
    Date,
    /// TIME(7).
    Time,
    /// UNIQUEIDENTIFIER.
    Guid,
    /// VARBINARY(MAX); also BINARY and BLOB.
    VarBinary,
    /// NVARCHAR(MAX); also the other character types.
    NVarChar,
}

fn decimal_args(args: &str) -> Option<ColumnType> {
    let mut parts = args.split(',').map(str::trim).filter(|p| !p.is_empty());
    let precision = parts.next().map_or(Some(18), |p| p.parse().ok())?;
    let scale = parts.next().map_or(Some(0), |s| s.parse().ok())?;
    ((1..=38).contains(&precision) && scale <= precision)
        .then_some(ColumnType::Decimal { precision, scale })
}

impl ColumnType {
    /// The type for a SQLite declared column type such as `DECIMAL(10,2)`; `None` when the
    /// declaration names no type this server knows.
    pub fn from_declared(declared: &str) -> Option<Self> {
        let upper = declared.trim().to_ascii_uppercase();
        let (name, args) = match upper.split_once('(') {
            Some((name, rest)) => (name.trim(), rest.trim_end_matches(')')),
            None => (upper.as_str(), ""),
        };
        Some(match name {
            "TINYINT" => ColumnType::TinyInt,
            "SMALLINT" => ColumnType::SmallInt,
            "INT" => ColumnType::Int,
            "BIGINT" | "INTEGER" => ColumnType::BigInt,
            "BIT" | "BOOLEAN" => ColumnType::Bit,
            "FLOAT" | "REAL" | "DOUBLE" | "DOUBLE PRECISION" => ColumnType::Float,
            "DECIMAL" | "NUMERIC" => decimal_args(args)?,
            "MONEY" => ColumnType::Money,
            "DATETIME2" | "DATETIME" | "SMALLDATETIME" => ColumnType::DateTime2,
            "DATETIMEOFFSET" => ColumnType::DateTimeOffset,
            "DATE" => ColumnType::Date,
            "TIME" => ColumnType::Time,
            "UNIQUEIDENTIFIER" => ColumnType::Guid,
            "VARBINARY" | "BINARY" | "BLOB" | "IMAGE" | "ROWVERSION" => ColumnType::VarBinary,
            "NVARCHAR" | "VARCHAR" | "NCHAR" | "CHAR" | "TEXT" | "NTEXT" => ColumnType::NVarChar,
            _ => return None,
        })
    }

    /// The type for a column without a usable declaration, from its first value.
    pub fn from_value(value: ValueRef<'_>) -> Self {
        match value {
            ValueRef::Integer(_) => ColumnType::BigInt,
            ValueRef::Real(_) => ColumnType::Float,
            ValueRef::Blob(_) => ColumnType::VarBinary,
            ValueRef::Null | ValueRef::Text(_) => ColumnType::NVarChar,
        }
    }

    /// Appends the TYPE_INFO of this type to a COLMETADATA entry.
    pub fn write_type_info(self, out: &mut Vec<u8>) {
        match self {
            ColumnType::TinyInt => out.extend_from_slice(&[0x26, 1]),
            ColumnType::SmallInt => out.extend_from_slice(&[0x26, 2]),
            ColumnType::Int => out.extend_from_slice(&[0x26, 4]),
            ColumnType::BigInt => out.extend_from_slice(&[0x26, 8]),
            ColumnType::Bit => out.extend_from_slice(&[0x68, 1]),
            ColumnType::Float => out.extend_from_slice(&[0x6D, 8]),
            ColumnType::Decimal { precision, scale } => {
                out.extend_from_slice(&[0x6A, decimal_len(precision), precision, scale])
            }
            ColumnType::Money => out.extend_from_slice(&[0x6E, 8]),
            ColumnType::DateTime2 => out.extend_from_slice(&[0x2A, 7]),
            ColumnType::DateTimeOffset => out.extend_from_slice(&[0x2B, 7]),
            ColumnType::Date => out.push(0x28),
            ColumnType::Time => out.extend_from_slice(&[0x29, 7]),
            ColumnType::Guid => out.extend_from_slice(&[0x24, 16]),
            ColumnType::VarBinary => {
                out.push(0xA5);
                out.extend_from_slice(&MAX_LEN.to_le_bytes());
            }
            ColumnType::NVarChar => {
                out.push(0xE7);
                out.extend_from_slice(&MAX_LEN.to_le_bytes());
                out.extend_from_slice(&COLLATION);
            }
        }
    }

    /// Appends one value of this type to a ROW token; an error when the SQLite value does
    /// not convert.
    pub fn write_value(self, value: ValueRef<'_>, out: &mut Vec<u8>) -> Result<(), String> {
        if matches!(value, ValueRef::Null) {
            match self {
                ColumnType::VarBinary | ColumnType::NVarChar => {
                    out.extend_from_slice(&PLP_NULL.to_le_bytes())
                }
                _ => out.push(0),
            }
            return Ok(());
        }
        match self {
            ColumnType::TinyInt => {
                let v = u8::try_from(integer(value)?).map_err(|_| out_of_range("tinyint"))?;
                out.extend_from_slice(&[1, v]);
            }
            ColumnType::SmallInt => {
                let v = i16::try_from(integer(value)?).map_err(|_| out_of_range("smallint"))?;
                out.push(2);
                out.extend_from_slice(&v.to_le_bytes());
            }
            ColumnType::Int => {
                let v = i32::try_from(integer(value)?).map_err(|_| out_of_range("int"))?;
                out.push(4);
                out.extend_from_slice(&v.to_le_bytes());
            }
            ColumnType::BigInt => {
                out.push(8);
                out.extend_from_slice(&integer(value)?.to_le_bytes());
            }
            ColumnType::Bit => {
                out.extend_from_slice(&[1, u8::from(boolean(value)?)]);
            }
            ColumnType::Float => {
                out.push(8);
                out.extend_from_slice(&float(value)?.to_le_bytes());
            }
            ColumnType::Decimal { precision, scale } => {
                let v = scaled(value, scale)?;
                if decimal::digits(v) > precision as u32 {
                    return Err(out_of_range(&format!("decimal({precision},{scale})")));
                }
                let len = decimal_len(precision);
                out.push(len);
                out.push(u8::from(v >= 0));
                out.extend_from_slice(&v.unsigned_abs().to_le_bytes()[..len as usize - 1]);
            }
            ColumnType::Money => {
                let v = i64::try_from(scaled(value, 4)?).map_err(|_| out_of_range("money"))?;
                out.push(8);
                out.extend_from_slice(&((v >> 32) as i32).to_le_bytes());
                out.extend_from_slice(&(v as u32).to_le_bytes());
            }
            ColumnType::DateTime2 => {
                let dt = temporal::parse_datetime(&text(value)?)
                    .ok_or_else(|| not_a("datetime2", value))?;
                out.push(8);
                out.extend_from_slice(&temporal::encode_time(dt.time()));
                out.extend_from_slice(&temporal::encode_date(dt.date())?);
            }
            ColumnType::DateTimeOffset => {
                let dt = temporal::parse_datetime_offset(&text(value)?)
                    .ok_or_else(|| not_a("datetimeoffset", value))?;
                let utc = dt.naive_utc();
                let offset_minutes = (dt.offset().local_minus_utc() / 60) as i16;
                out.push(10);
                out.extend_from_slice(&temporal::encode_time(utc.time()));
                out.extend_from_slice(&temporal::encode_date(utc.date())?);
                out.extend_from_slice(&offset_minutes.to_le_bytes());
            }
            ColumnType::Date => {
                let text = text(value)?;
                let date = temporal::parse_date(&text)
                    .or_else(|| temporal::parse_datetime(&text).map(|d| d.date()))
                    .ok_or_else(|| not_a("date", value))?;
                out.push(3);
                out.extend_from_slice(&temporal::encode_date(date)?);
            }
            ColumnType::Time => {
                let time =
                    temporal::parse_time(&text(value)?).ok_or_else(|| not_a("time", value))?;
                out.push(5);
                out.extend_from_slice(&temporal::encode_time(time));
            }
            ColumnType::Guid => {
                let uuid = match value {
                    ValueRef::Blob(b) => uuid::Uuid::from_slice(b).ok(),
                    _ => uuid::Uuid::parse_str(text(value)?.trim()).ok(),
                }
                .ok_or_else(|| not_a("uniqueidentifier", value))?;
                out.push(16);
                out.extend_from_slice(&guid_bytes(uuid));
            }
            ColumnType::VarBinary => match value {
                ValueRef::Blob(b) => plp(out, b),
                ValueRef::Text(t) => plp(out, t),
                // A rowversion (an integer here): SQL Server's 8 big-endian bytes.
                ValueRef::Integer(i) => plp(out, &i.to_be_bytes()),
                _ => return Err(not_a("varbinary", value)),
            },
            ColumnType::NVarChar => {
                let utf16: Vec<u8> = text(value)?
                    .encode_utf16()
                    .flat_map(u16::to_le_bytes)
                    .collect();
                plp(out, &utf16);
            }
        }
        Ok(())
    }
}

/// DECIMALN value length (sign byte included) for a precision.
fn decimal_len(precision: u8) -> u8 {
    match precision {
        0..=9 => 5,
        10..=19 => 9,
        20..=28 => 13,
        _ => 17,
    }
}

/// A UUID in SQL Server's GUID byte order (first three groups little-endian).
pub fn guid_bytes(uuid: uuid::Uuid) -> [u8; 16] {
    let mut b = *uuid.as_bytes();
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

fn plp(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    if !data.is_empty() {
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
    }
    out.extend_from_slice(&0u32.to_le_bytes());
}

fn describe(value: ValueRef<'_>) -> String {
    match value {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => f.to_string(),
        ValueRef::Text(t) => format!("'{}'", String::from_utf8_lossy(t)),
        ValueRef::Blob(b) => format!("a {}-byte blob", b.len()),
    }
}

fn not_a(type_name: &str, value: ValueRef<'_>) -> String {
    format!(
        "conversion failed: {} is not a valid {type_name}",
        describe(value)
    )
}

fn out_of_range(type_name: &str) -> String {
    format!("arithmetic overflow converting to {type_name}")
}

fn integer(value: ValueRef<'_>) -> Result<i64, String> {
    match value {
        ValueRef::Integer(i) => Ok(i),
        ValueRef::Real(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(f as i64),
        ValueRef::Text(t) => std::str::from_utf8(t)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| not_a("integer", value)),
        _ => Err(not_a("integer", value)),
    }
}

fn float(value: ValueRef<'_>) -> Result<f64, String> {
    match value {
        ValueRef::Integer(i) => Ok(i as f64),
        ValueRef::Real(f) => Ok(f),
        ValueRef::Text(t) => std::str::from_utf8(t)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| not_a("float", value)),
        _ => Err(not_a("float", value)),
    }
}

fn boolean(value: ValueRef<'_>) -> Result<bool, String> {
    match value {
        ValueRef::Integer(i) => Ok(i != 0),
        ValueRef::Real(f) => Ok(f != 0.0),
        ValueRef::Text(t) => match t.to_ascii_lowercase().as_slice() {
            b"1" | b"true" => Ok(true),
            b"0" | b"false" => Ok(false),
            _ => Err(not_a("bit", value)),
        },
        _ => Err(not_a("bit", value)),
    }
}

fn scaled(value: ValueRef<'_>, scale: u8) -> Result<i128, String> {
    let factor = 10i128.pow(scale as u32);
    match value {
        ValueRef::Integer(i) => (i as i128)
            .checked_mul(factor)
            .ok_or_else(|| out_of_range("decimal")),
        ValueRef::Real(f) => decimal::parse_scaled(&format!("{f:.*}", scale as usize + 1), scale)
            .ok_or_else(|| not_a("decimal", value)),
        ValueRef::Text(_) => {
            decimal::parse_scaled(&text(value)?, scale).ok_or_else(|| not_a("decimal", value))
        }
        _ => Err(not_a("decimal", value)),
    }
}

fn text(value: ValueRef<'_>) -> Result<String, String> {
    match value {
        ValueRef::Text(t) => Ok(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Integer(i) => Ok(i.to_string()),
        ValueRef::Real(f) => Ok(f.to_string()),
        ValueRef::Blob(b) => Ok(String::from_utf8_lossy(b).into_owned()),
        ValueRef::Null => Err(not_a("value", value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_declared_types() {
        assert_eq!(
            ColumnType::from_declared("decimal(10, 2)"),
            Some(ColumnType::Decimal {
                precision: 10,
                scale: 2
            })
        );
        assert_eq!(
            ColumnType::from_declared("NUMERIC"),
            Some(ColumnType::Decimal {
                precision: 18,
                scale: 0
            })
        );
        assert_eq!(ColumnType::from_declared("decimal(50,2)"), None);
        assert_eq!(
            ColumnType::from_declared("NVARCHAR(100)"),
            Some(ColumnType::NVarChar)
        );
        assert_eq!(ColumnType::from_declared("geography"), None);
    }

    #[test]
    fn guid_order_swaps_the_first_three_groups() {
        let uuid = uuid::Uuid::parse_str("00112233-4455-6677-8899-aabbccddeeff").unwrap();
        assert_eq!(
            guid_bytes(uuid),
            [
                0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
                0xee, 0xff
            ]
        );
    }

    #[test]
    fn bad_values_are_errors_not_panics() {
        let mut out = Vec::new();
        assert!(ColumnType::Int
            .write_value(ValueRef::Integer(1 << 40), &mut out)
            .is_err());
        assert!(ColumnType::Date
            .write_value(ValueRef::Text(b"tomorrow"), &mut out)
            .is_err());
        assert!(ColumnType::Decimal {
            precision: 3,
            scale: 2
        }
        .write_value(ValueRef::Text(b"12.5"), &mut out)
        .is_err());
    }
}
