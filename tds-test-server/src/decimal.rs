//! Exact decimals as scaled integers (value × 10^scale).

/// Parses "-12.345" into value × 10^scale, rounding half away from zero past `scale` digits.
pub fn parse_scaled(text: &str, scale: u8) -> Option<i128> {
    let text = text.trim();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part
        .bytes()
        .chain(frac_part.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut value: i128 = 0;
    for b in int_part.bytes() {
        value = value.checked_mul(10)?.checked_add((b - b'0') as i128)?;
    }
    let mut frac = frac_part.bytes();
    for _ in 0..scale {
        let digit = frac.next().map_or(0, |b| (b - b'0') as i128);
        value = value.checked_mul(10)?.checked_add(digit)?;
    }
    if frac.next().is_some_and(|b| b >= b'5') {
        value = value.checked_add(1)?;
    }
    Some(if negative { -value } else { value })
}

/// Formats value × 10^-scale with exactly `scale` fraction digits.
pub fn format_scaled(value: i128, scale: u8) -> String {
    let digits = value.unsigned_abs().to_string();
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int_part, frac_part) = padded.split_at(padded.len() - scale);
    let sign = if value < 0 { "-" } else { "" };
    if scale == 0 {
        format!("{sign}{int_part}")
    } else {
        format!("{sign}{int_part}.{frac_part}")
    }
}

/// Number of decimal digits of |value|.
pub fn digits(value: i128) -> u32 {
    value.unsigned_abs().checked_ilog10().map_or(1, |d| d + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_exactly() {
        assert_eq!(parse_scaled("12.5", 2), Some(1250));
        assert_eq!(parse_scaled("-0.005", 2), Some(-1));
        assert_eq!(parse_scaled("7", 0), Some(7));
        assert_eq!(parse_scaled("1e5", 0), None);
        assert_eq!(format_scaled(1250, 2), "12.50");
        assert_eq!(format_scaled(-5, 3), "-0.005");
        assert_eq!(format_scaled(42, 0), "42");
        assert_eq!(digits(0), 1);
        assert_eq!(digits(-999), 3);
    }
}
