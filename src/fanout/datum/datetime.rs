//! Date, time, timestamp and interval text forms as Postgres prints them
//! with DateStyle ISO and IntervalStyle postgres (datetime.c: EncodeDateOnly,
//! EncodeTimeOnly, EncodeDateTime, EncodeInterval), and the proleptic
//! Gregorian calendar counted from Postgres's epoch, 2000-01-01. Part of
//! `datum`; no other style is read (such text fails to decode).

use super::{Datum, MICROS_PER_DAY, MICROS_PER_SECOND};

/// Days since 2000-01-01 of a proleptic Gregorian date; `year` counts
/// astronomically (0 is 1 BC).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    // Shift the year to start in March so the leap day ends it; eras of
    // 400 years have 146097 days.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    // 730425: days from 0000-03-01 to 2000-01-01.
    era * 146_097 + day_of_era - 730_425
}

/// Inverse of [`days_from_civil`]: (astronomical year, month, day).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 730_425;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `YYYY-MM-DD` (ISO; the year has at least 4 digits) → days since the
/// epoch; `bc` when the text had a ` BC` suffix (year 1 BC is year 0).
fn parse_ymd(s: &str, bc: bool) -> Option<i64> {
    let mut parts = s.splitn(3, '-');
    let year: i64 = parse_digits(parts.next()?)?;
    let month: i64 = parse_digits(parts.next()?)?;
    let day: i64 = parse_digits(parts.next()?)?;
    if year == 0 || !(1..=12).contains(&month) {
        return None;
    }
    let year = if bc { 1 - year } else { year };
    if day < 1 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day))
}

/// Unsigned decimal digits only (no sign, no spaces).
fn parse_digits(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 12 {
        return None;
    }
    s.parse().ok()
}

fn strip_bc(s: &str) -> (&str, bool) {
    match s.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (s, false),
    }
}

pub(super) fn parse_date_text(s: &str) -> Option<i32> {
    match s {
        "infinity" => return Some(i32::MAX),
        "-infinity" => return Some(i32::MIN),
        _ => {}
    }
    let (s, bc) = strip_bc(s);
    i32::try_from(parse_ymd(s, bc)?).ok()
}

fn format_ymd(days: i64) -> String {
    let (year, month, day) = civil_from_days(days);
    let (shown_year, bc) = if year <= 0 {
        (1 - year, " BC")
    } else {
        (year, "")
    };
    format!("{shown_year:04}-{month:02}-{day:02}{bc}")
}

pub(super) fn format_date(days: i32) -> String {
    match days {
        i32::MAX => "infinity".to_string(),
        i32::MIN => "-infinity".to_string(),
        d => format_ymd(i64::from(d)),
    }
}

/// `HH:MM:SS[.ffffff]` → µs; hours may exceed 23 only as 24:00:00.
pub(super) fn parse_time(s: &str) -> Option<i64> {
    let micros = parse_hms(s)?;
    (0..=24 * 3600 * MICROS_PER_SECOND)
        .contains(&micros)
        .then_some(micros)
}

/// Unsigned `H+:MM:SS[.ffffff]` → µs (hours unbounded, for intervals).
fn parse_hms(s: &str) -> Option<i64> {
    let mut parts = s.splitn(3, ':');
    let hours = parse_digits(parts.next()?)?;
    let minutes = parse_digits(parts.next()?)?;
    let seconds_text = parts.next()?;
    let (whole, fraction) = seconds_text.split_once('.').unwrap_or((seconds_text, ""));
    let seconds = parse_digits(whole)?;
    if minutes > 59 || seconds > 59 || fraction.len() > 6 {
        return None;
    }
    let fraction_micros = if fraction.is_empty() {
        0
    } else {
        parse_digits(fraction)? * 10i64.pow(6 - fraction.len() as u32)
    };
    hours
        .checked_mul(3600)?
        .checked_add(minutes * 60 + seconds)?
        .checked_mul(MICROS_PER_SECOND)?
        .checked_add(fraction_micros)
}

/// Seconds with the fraction trimmed of trailing zeros, at least 2 digits.
fn format_seconds(seconds: i64, fraction_micros: i64) -> String {
    if fraction_micros == 0 {
        return format!("{seconds:02}");
    }
    let fraction = format!("{fraction_micros:06}");
    format!("{seconds:02}.{}", fraction.trim_end_matches('0'))
}

pub(super) fn format_time(micros: i64) -> String {
    let seconds_total = micros.div_euclid(MICROS_PER_SECOND);
    let fraction = micros.rem_euclid(MICROS_PER_SECOND);
    format!(
        "{:02}:{:02}:{}",
        seconds_total / 3600,
        seconds_total / 60 % 60,
        format_seconds(seconds_total % 60, fraction)
    )
}

/// ISO timestamp text → (µs since the epoch in UTC, printed UTC offset in
/// seconds). The offset is required for timestamptz and refused otherwise.
pub(super) fn parse_timestamp(s: &str, with_zone: bool) -> Option<(i64, i32)> {
    match s {
        "infinity" => return Some((i64::MAX, 0)),
        "-infinity" => return Some((i64::MIN, 0)),
        _ => {}
    }
    let (s, bc) = strip_bc(s);
    let (date, time) = s.split_once(' ')?;
    let (time, offset_seconds) = if with_zone {
        let at = time.find(['+', '-'])?;
        (&time[..at], parse_offset(&time[at..])?)
    } else {
        (time, 0)
    };
    let days = parse_ymd(date, bc)?;
    let local = days
        .checked_mul(MICROS_PER_DAY)?
        .checked_add(parse_time(time)?)?;
    let utc = local.checked_sub(i64::from(offset_seconds) * MICROS_PER_SECOND)?;
    Some((utc, offset_seconds))
}

/// `±HH[:MM[:SS]]` → seconds east of UTC.
fn parse_offset(s: &str) -> Option<i32> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let mut total = 0i64;
    let mut parts = 0;
    for (i, part) in rest.split(':').enumerate() {
        let value = parse_digits(part)?;
        if part.len() != 2 || i > 2 || (i > 0 && value > 59) {
            return None;
        }
        total = total * 60 + value;
        parts += 1;
    }
    // Scale HH or HH:MM up to seconds.
    total *= 60i64.pow(3 - parts);
    i32::try_from(total * sign).ok()
}

pub(super) fn format_timestamp(micros: i64, offset_seconds: Option<i32>) -> String {
    match micros {
        i64::MAX => return "infinity".to_string(),
        i64::MIN => return "-infinity".to_string(),
        _ => {}
    }
    let offset = offset_seconds.unwrap_or(0);
    let local = micros.saturating_add(i64::from(offset) * MICROS_PER_SECOND);
    let days = local.div_euclid(MICROS_PER_DAY);
    let date = format_ymd(days);
    let (date, bc) = strip_bc(&date);
    let mut out = format!("{date} {}", format_time(local.rem_euclid(MICROS_PER_DAY)));
    if offset_seconds.is_some() {
        let sign = if offset < 0 { '-' } else { '+' };
        let abs = offset.unsigned_abs();
        out.push_str(&format!("{sign}{:02}", abs / 3600));
        if abs % 3600 != 0 {
            out.push_str(&format!(":{:02}", abs / 60 % 60));
        }
        if abs % 60 != 0 {
            out.push_str(&format!(":{:02}", abs % 60));
        }
    }
    if bc {
        out.push_str(" BC");
    }
    out
}

/// IntervalStyle postgres: `[N year[s]] [N mon[s]] [N day[s]] [±HH:MM:SS[.f]]`.
pub(super) fn parse_interval(s: &str) -> Option<Datum> {
    let (mut months, mut days, mut micros) = (0i64, 0i64, 0i64);
    let mut tokens = s.split_whitespace().peekable();
    let mut any = false;
    while let Some(token) = tokens.next() {
        any = true;
        if token.contains(':') {
            let (negative, body) = match token.as_bytes().first()? {
                b'-' => (true, &token[1..]),
                b'+' => (false, &token[1..]),
                _ => (false, token),
            };
            let value = parse_hms(body)?;
            micros = if negative { -value } else { value };
            continue;
        }
        let number: i64 = token.parse().ok()?;
        match tokens.next()? {
            "year" | "years" => months = months.checked_add(number.checked_mul(12)?)?,
            "mon" | "mons" => months = months.checked_add(number)?,
            "day" | "days" => days = number,
            _ => return None,
        }
    }
    if !any {
        return None;
    }
    Some(Datum::Interval {
        months: i32::try_from(months).ok()?,
        days: i32::try_from(days).ok()?,
        micros,
    })
}

/// EncodeInterval with IntervalStyle postgres: each nonzero date field with
/// its sign, a `+` on a positive field after a negative one, then the time
/// when nonzero (or when nothing else was printed).
pub(super) fn format_interval(months: i32, days: i32, micros: i64) -> String {
    let mut out = String::new();
    let mut after_negative = false;
    for (value, unit) in [
        (i64::from(months / 12), "year"),
        (i64::from(months % 12), "mon"),
        (i64::from(days), "day"),
    ] {
        if value == 0 {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        if after_negative && value > 0 {
            out.push('+');
        }
        out.push_str(&format!(
            "{value} {unit}{}",
            if value != 1 { "s" } else { "" }
        ));
        after_negative = value < 0;
    }
    if out.is_empty() || micros != 0 {
        if !out.is_empty() {
            out.push(' ');
        }
        if micros < 0 {
            out.push('-');
        } else if after_negative {
            out.push('+');
        }
        let abs = micros.unsigned_abs();
        let seconds_total = abs / 1_000_000;
        out.push_str(&format!(
            "{:02}:{:02}:{}",
            seconds_total / 3600,
            seconds_total / 60 % 60,
            format_seconds((seconds_total % 60) as i64, (abs % 1_000_000) as i64)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_matches_postgres_epoch() {
        assert_eq!(days_from_civil(2000, 1, 1), 0);
        assert_eq!(days_from_civil(2024, 1, 2), 0x223f);
        assert_eq!(days_from_civil(1970, 1, 1), -10957);
        for days in [-800_000, -730_425, -1, 0, 59, 60, 365, 146_097, 3_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
