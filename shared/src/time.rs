//! Time as Sluice stores it: UTC microseconds since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in UTC microseconds. A clock before 1970 reads as 0 rather than failing.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

const US_PER_DAY: i64 = 86_400_000_000;

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day) (Howard Hinnant's
/// algorithm).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The inverse of [`civil_from_days`].
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// UTC microseconds as RFC 3339 with seconds precision (`2026-12-07T05:40:00Z`).
pub fn rfc3339(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// UTC microseconds as RFC 3339 with microseconds (`2026-12-07T05:40:00.123456Z`), appended
/// digit by digit (every log line writes one: the formatting machinery cost more than the
/// rest of the line).
pub fn push_rfc3339_micros(out: &mut String, us: i64) {
    let secs = us.div_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let digits = |out: &mut String, value: i64, width: u32| {
        push_padded(out, u64::try_from(value).unwrap_or(0), width);
    };
    digits(out, year, 4);
    out.push('-');
    digits(out, month, 2);
    out.push('-');
    digits(out, day, 2);
    out.push('T');
    digits(out, rem / 3600, 2);
    out.push(':');
    digits(out, (rem % 3600) / 60, 2);
    out.push(':');
    digits(out, rem % 60, 2);
    out.push('.');
    digits(out, us.rem_euclid(1_000_000), 6);
    out.push('Z');
}

/// `value` in decimal, at least `width` digits (zeros in front).
pub fn push_padded(out: &mut String, mut value: u64, width: u32) {
    let width = (width as usize).clamp(1, 20);
    let mut digits = [b'0'; 20];
    let mut at = digits.len();
    while value > 0 || digits.len() - at < width {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if at == 0 {
            break;
        }
    }
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
}

/// Midnight UTC of the day holding `at_us`.
pub fn day_start_us(at_us: i64) -> i64 {
    at_us.div_euclid(US_PER_DAY) * US_PER_DAY
}

/// Midnight UTC of the first day of the month holding `at_us`.
pub fn month_start_us(at_us: i64) -> i64 {
    let (year, month, _) = civil_from_days(at_us.div_euclid(US_PER_DAY));
    days_from_civil(year, month, 1) * US_PER_DAY
}

/// Midnight UTC of the first day of the month after the one holding `at_us`.
pub fn next_month_start_us(at_us: i64) -> i64 {
    let (year, month, _) = civil_from_days(at_us.div_euclid(US_PER_DAY));
    let (year, month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    days_from_civil(year, month, 1) * US_PER_DAY
}

/// One day, in microseconds.
pub const fn day_us() -> i64 {
    US_PER_DAY
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_numbers_are_written_digit_by_digit() {
        let mut out = String::new();
        push_rfc3339_micros(&mut out, 0);
        assert_eq!(out, "1970-01-01T00:00:00.000000Z");
        out.clear();
        let at = 1_796_652_833_594_007;
        push_rfc3339_micros(&mut out, at);
        assert_eq!(
            out,
            format!("{}.594007Z", rfc3339(at).trim_end_matches('Z'))
        );
        for (value, width, text) in [
            (0, 0, "0"),
            (0, 3, "000"),
            (42, 4, "0042"),
            (12_345, 2, "12345"),
            (u64::MAX, 1, "18446744073709551615"),
        ] {
            out.clear();
            push_padded(&mut out, value, width);
            assert_eq!(out, text);
        }
    }

    const DAY: i64 = US_PER_DAY;

    #[test]
    fn civil_dates_round_trip() {
        for days in [-800_000, -1, 0, 1, 11_016, 19_782, 20_415, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn windows_start_at_utc_midnight_and_month_boundaries() {
        // 2026-11-24T13:45:00Z
        let at = days_from_civil(2026, 11, 24) * DAY + (13 * 3600 + 45 * 60) * 1_000_000;
        assert_eq!(day_start_us(at), days_from_civil(2026, 11, 24) * DAY);
        assert_eq!(month_start_us(at), days_from_civil(2026, 11, 1) * DAY);
        assert_eq!(next_month_start_us(at), days_from_civil(2026, 12, 1) * DAY);
        // December rolls into January; the last microsecond of a month stays in it.
        let december = days_from_civil(2026, 12, 31) * DAY + DAY - 1;
        assert_eq!(month_start_us(december), days_from_civil(2026, 12, 1) * DAY);
        assert_eq!(
            next_month_start_us(december),
            days_from_civil(2027, 1, 1) * DAY
        );
        assert_eq!(
            month_start_us(december + 1),
            days_from_civil(2027, 1, 1) * DAY
        );
        // A leap February.
        let leap = days_from_civil(2028, 2, 29) * DAY;
        assert_eq!(next_month_start_us(leap), days_from_civil(2028, 3, 1) * DAY);
    }
}
