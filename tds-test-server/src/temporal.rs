//! Dates and times on the wire (days since 0001-01-01; time of day in 10^-scale seconds)
//! and as SQLite text.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Timelike};

fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1, 1, 1).unwrap_or_default()
}

/// Bytes a time of day takes at `scale` (0..=7).
pub fn time_len(scale: u8) -> usize {
    match scale {
        0..=2 => 3,
        3..=4 => 4,
        _ => 5,
    }
}

/// 3-byte DATE value.
pub fn encode_date(date: NaiveDate) -> Result<[u8; 3], String> {
    let days = date.signed_duration_since(epoch()).num_days();
    if !(0..1 << 24).contains(&days) {
        return Err(format!("date {date} is out of range"));
    }
    let b = (days as u32).to_le_bytes();
    Ok([b[0], b[1], b[2]])
}

/// Time of day at scale 7 (100 ns units), 5 bytes.
pub fn encode_time(time: NaiveTime) -> [u8; 5] {
    let ticks =
        time.num_seconds_from_midnight() as u64 * 10_000_000 + time.nanosecond() as u64 / 100;
    let b = ticks.to_le_bytes();
    [b[0], b[1], b[2], b[3], b[4]]
}

/// Decodes a 3-byte DATE value.
pub fn decode_date(bytes: &[u8]) -> Option<NaiveDate> {
    let days = u32::from_le_bytes([*bytes.first()?, *bytes.get(1)?, *bytes.get(2)?, 0]);
    epoch().checked_add_days(chrono::Days::new(days as u64))
}

/// Decodes a time of day of `bytes.len()` bytes at `scale`.
pub fn decode_time(bytes: &[u8], scale: u8) -> Option<NaiveTime> {
    let mut raw = [0u8; 8];
    raw.get_mut(..bytes.len())?.copy_from_slice(bytes);
    let units = u64::from_le_bytes(raw);
    let nanos_per_unit = 10u64.pow(9u32.checked_sub(scale as u32)?);
    let nanos = units.checked_mul(nanos_per_unit)?;
    NaiveTime::from_num_seconds_from_midnight_opt(
        (nanos / 1_000_000_000) as u32,
        (nanos % 1_000_000_000) as u32,
    )
}

/// Parses SQLite text as a date-time without offset ("2024-05-06 07:08:09.123", "T" too,
/// or a bare date at midnight).
pub fn parse_datetime(text: &str) -> Option<NaiveDateTime> {
    let text = text.trim();
    [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
    .or_else(|| parse_date(text).and_then(|d| d.and_hms_opt(0, 0, 0)))
}

/// Parses SQLite text as a date-time with offset; text without one is taken as UTC.
pub fn parse_datetime_offset(text: &str) -> Option<DateTime<FixedOffset>> {
    let text = text.trim();
    [
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f %:z",
    ]
    .iter()
    .find_map(|f| DateTime::parse_from_str(text, f).ok())
    .or_else(|| DateTime::parse_from_rfc3339(text).ok())
    .or_else(|| parse_datetime(text).map(|dt| dt.and_utc().fixed_offset()))
}

/// Parses SQLite text as a date ("2024-05-06").
pub fn parse_date(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").ok()
}

/// Parses SQLite text as a time of day ("07:08:09.5").
pub fn parse_time(text: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(text.trim(), "%H:%M:%S%.f").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_survive_encoding() {
        let date = NaiveDate::from_ymd_opt(2024, 5, 6).unwrap();
        assert_eq!(decode_date(&encode_date(date).unwrap()), Some(date));
        let time = NaiveTime::from_hms_nano_opt(7, 8, 9, 123_456_700).unwrap();
        assert_eq!(decode_time(&encode_time(time), 7), Some(time));
        assert_eq!(
            decode_time(&[0x10, 0x0e, 0x00], 0),
            NaiveTime::from_hms_opt(1, 0, 0)
        );
    }

    #[test]
    fn parses_the_text_forms_sqlite_holds() {
        assert!(parse_datetime("2024-05-06 07:08:09.123").is_some());
        assert!(parse_datetime("2024-05-06T07:08:09").is_some());
        assert_eq!(
            parse_datetime("2024-05-06").map(|d| d.to_string()),
            Some("2024-05-06 00:00:00".into())
        );
        let dto = parse_datetime_offset("2024-05-06 07:08:09+02:00").unwrap();
        assert_eq!(dto.offset().local_minus_utc(), 7200);
        assert!(parse_datetime("not a date").is_none());
    }
}
