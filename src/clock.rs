//! Wall-clock time as Outpost stores and shows it: milliseconds since the Unix epoch,
//! rendered as RFC 3339 UTC strings with millisecond precision.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::time::{SystemTime, UNIX_EPOCH};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A point in time, in milliseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Timestamp {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(since.as_millis() as i64)
    }

    /// Seconds since the epoch, as JWT claims count them.
    pub fn unix_seconds(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// This time moved by `millis` (negative moves back).
    pub fn add_millis(self, millis: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(millis))
    }

    /// RFC 3339 UTC with milliseconds, e.g. `2026-11-28T14:03:11.120Z`.
    pub fn to_rfc3339(self) -> String {
        let bytes = self.rfc3339_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The 24 bytes of [`Timestamp::to_rfc3339`], computed without allocating: every stored
    /// record and every response carries several of these.
    fn rfc3339_bytes(self) -> [u8; 24] {
        let millis = self.0.rem_euclid(1000);
        let seconds = self.0.div_euclid(1000);
        let (days, day_seconds) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
        let (year, month, day) = civil_from_days(days);
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut value: i64| {
            for i in (0..width).rev() {
                out[at + i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year.clamp(0, 9999));
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, day_seconds / 3600);
        put(14, 2, day_seconds % 3600 / 60);
        put(17, 2, day_seconds % 60);
        put(20, 3, millis);
        out
    }

    /// Parses an RFC 3339 string (any offset); `None` when it is not one.
    pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
        if let Some(fast) = parse_own_format(text.as_bytes()) {
            return Some(fast);
        }
        let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
        Some(Timestamp((t.unix_timestamp_nanos() / 1_000_000) as i64))
    }
}

/// Reads exactly the form [`Timestamp::to_rfc3339`] writes; anything else goes the long way.
fn parse_own_format(b: &[u8]) -> Option<Timestamp> {
    if b.len() != 24
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[23] != b'Z'
    {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<i64> {
        b[from..to].iter().try_fold(0i64, |acc, d| {
            d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
        })
    };
    let (year, month, day) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
    let (hour, minute, second, millis) = (
        number(11, 13)?,
        number(14, 16)?,
        number(17, 19)?,
        number(20, 23)?,
    );
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(Timestamp(
        ((days * 86_400 + hour * 3600 + minute * 60 + second) * 1000) + millis,
    ))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day count since 1970-01-01 (the inverse of `days_from_civil`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let bytes = self.rfc3339_bytes();
        // The buffer holds ASCII digits and separators only.
        serializer.serialize_str(std::str::from_utf8(&bytes).unwrap_or("1970-01-01T00:00:00.000Z"))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Timestamp::parse_rfc3339(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {text}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_rfc3339() {
        let t = Timestamp(1_795_874_591_120);
        let text = t.to_rfc3339();
        assert_eq!(text, "2026-11-28T14:03:11.120Z");
        assert_eq!(Timestamp::parse_rfc3339(&text), Some(t));
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-28T15:03:11.120+01:00"),
            Some(t)
        );
        assert_eq!(Timestamp::parse_rfc3339("yesterday"), None);
        assert_eq!(Timestamp::parse_rfc3339("2026-13-28T14:03:11.120Z"), None);
    }

    #[test]
    fn the_fast_path_agrees_with_the_time_crate_over_centuries() {
        let mut t = Timestamp(-2_208_988_800_000); // 1900-01-01
        while t.0 < 7_258_118_400_000 {
            // 2200-01-01
            let fast = t.to_rfc3339();
            let nanos = i128::from(t.0) * 1_000_000;
            let slow = OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap();
            assert_eq!(&fast[..4], format!("{:04}", slow.year()));
            assert_eq!(&fast[5..7], format!("{:02}", u8::from(slow.month())));
            assert_eq!(&fast[8..10], format!("{:02}", slow.day()));
            assert_eq!(&fast[11..13], format!("{:02}", slow.hour()));
            assert_eq!(&fast[20..23], format!("{:03}", slow.millisecond()));
            assert_eq!(Timestamp::parse_rfc3339(&fast), Some(t));
            t = t.add_millis(86_400_000 * 7 + 3_600_123);
        }
    }
}
