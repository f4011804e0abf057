//! `eta` / `expires`: ISO-8601 strings as Celery writes them, kept raw and parsed to UTC.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, Utc};

/// A time from a message: the string as sent and its UTC value (naive times are taken as UTC, as
/// the Python worker does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireTime {
    /// The string exactly as the producer wrote it.
    pub raw: String,
    /// The parsed instant.
    pub utc: DateTime<Utc>,
}

impl WireTime {
    /// Parse an ISO-8601 date-time: `YYYY-MM-DD[T ]HH:MM[:SS[.f]]` with an optional `Z`/`±HH:MM`
    /// /`±HHMM`/`±HH` offset, or a bare date (midnight). `None` when it is not one.
    pub fn parse(raw: &str) -> Option<WireTime> {
        parse_utc(raw.trim()).map(|utc| WireTime {
            raw: raw.to_string(),
            utc,
        })
    }

    /// Build from a UTC time, written as Celery writes it (`isoformat()`, `+00:00` offset).
    pub fn from_utc(utc: DateTime<Utc>) -> WireTime {
        let micros = utc.timestamp_subsec_micros();
        let mut raw = utc.format("%Y-%m-%dT%H:%M:%S").to_string();
        if micros != 0 {
            raw.push_str(&format!(".{micros:06}"));
        }
        raw.push_str("+00:00");
        WireTime { raw, utc }
    }
}

fn parse_utc(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.with_timezone(&Utc));
    }
    let s = s.replacen(' ', "T", 1);
    let (local, offset) = split_offset(&s)?;
    let naive = parse_naive(local)?;
    match offset {
        None => Some(naive.and_utc()),
        Some(off) => naive
            .and_local_timezone(off)
            .single()
            .map(|dt: DateTime<FixedOffset>| dt.with_timezone(&Utc)),
    }
}

/// Split a trailing `Z` or `±HH[:MM]` / `±HHMM` offset off the time part.
fn split_offset(s: &str) -> Option<(&str, Option<FixedOffset>)> {
    if let Some(local) = s.strip_suffix(['Z', 'z']) {
        return Some((local, FixedOffset::east_opt(0)));
    }
    let t = s.find('T').unwrap_or(s.len());
    let Some(pos) = s[t..].rfind(['+', '-']).map(|p| p + t) else {
        return Some((s, None));
    };
    let digits: String = s[pos + 1..].chars().filter(|c| *c != ':').collect();
    if !digits.bytes().all(|c| c.is_ascii_digit()) || !matches!(digits.len(), 2 | 4) {
        return None;
    }
    let hours: i32 = digits[..2].parse().ok()?;
    let minutes: i32 = if digits.len() == 4 {
        digits[2..].parse().ok()?
    } else {
        0
    };
    let secs = (hours * 60 + minutes) * 60;
    let secs = if &s[pos..=pos] == "-" { -secs } else { secs };
    Some((&s[..pos], Some(FixedOffset::east_opt(secs)?)))
}

fn parse_naive(s: &str) -> Option<NaiveDateTime> {
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(dt);
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> String {
        WireTime::parse(s).unwrap().utc.to_rfc3339()
    }

    #[test]
    fn celery_forms() {
        assert_eq!(
            utc("2030-01-02T03:04:05+00:00"),
            "2030-01-02T03:04:05+00:00"
        );
        assert_eq!(
            utc("2030-01-02T03:04:05.123456+02:00"),
            "2030-01-02T01:04:05.123456+00:00"
        );
        assert_eq!(utc("2030-01-02T03:04:05"), "2030-01-02T03:04:05+00:00");
        assert_eq!(utc("2030-01-02 03:04:05-0130"), "2030-01-02T04:34:05+00:00");
        assert_eq!(utc("2030-01-02T03:04Z"), "2030-01-02T03:04:00+00:00");
        assert_eq!(utc("2030-01-02"), "2030-01-02T00:00:00+00:00");
    }

    #[test]
    fn garbage_is_none() {
        for s in [
            "",
            "soon",
            "2030-13-02T00:00:00",
            "2030-01-02T03:04:05+0x:00",
            "12",
        ] {
            assert!(WireTime::parse(s).is_none(), "{s}");
        }
    }

    #[test]
    fn from_utc_writes_isoformat() {
        let t = WireTime::parse("2030-01-02T03:04:05.5+00:00").unwrap();
        let w = WireTime::from_utc(t.utc);
        assert_eq!(w.raw, "2030-01-02T03:04:05.500000+00:00");
        let whole = WireTime::parse("2030-01-02T03:04:05Z").unwrap();
        assert_eq!(
            WireTime::from_utc(whole.utc).raw,
            "2030-01-02T03:04:05+00:00"
        );
    }
}
