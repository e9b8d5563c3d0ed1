//! Durations written as `90s`, `15m`, `4h`, `1d`, `2w` or combinations like `1d12h`.

use std::time::Duration;

/// Parses a duration such as `1d`, `36h`, `1h30m`, `500ms` or a bare number of seconds.
///
/// Units: `ms`, `s`, `m`, `h`, `d`, `w`. Returns a message suitable for a user on error.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let bad = |why: &str| {
        format!(
            "invalid duration \"{text}\": {why}; write a number with a unit s, m, h, d or w, e.g. \"1d\" or \"1h30m\""
        )
    };
    if s.is_empty() {
        return Err(bad("it is empty"));
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad("expected a number"));
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad("number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = rest[..unit_len].trim().to_ascii_lowercase();
        rest = &rest[unit_len..];
        let secs_per = match unit.as_str() {
            "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => {
                total = total.checked_add(Duration::from_millis(n)).ok_or_else(|| bad("too large"))?;
                continue;
            }
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            "w" | "week" | "weeks" => 604_800,
            "" => return Err(bad("a number is missing its unit")),
            other => return Err(bad(&format!("unknown unit \"{other}\""))),
        };
        let secs = n.checked_mul(secs_per).ok_or_else(|| bad("too large"))?;
        total = total.checked_add(Duration::from_secs(secs)).ok_or_else(|| bad("too large"))?;
    }
    Ok(total)
}

/// Formats a duration in the shortest unit-combination form (`1d12h`, `90s` → `1m30s`).
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    let mut out = String::new();
    let mut secs = d.as_secs();
    for (unit, size) in [("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    let ms = d.subsec_millis();
    if ms > 0 {
        out.push_str(&format!("{ms}ms"));
    }
    out
}

/// Serde adapter for `Option<Duration>` ttl fields: accepts a duration string or
/// a number of seconds; zero means "unlimited" and becomes `None`.
pub(crate) mod ttl_serde {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_str(&format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Float(f64),
            Text(String),
        }
        let d = match Option::<Raw>::deserialize(d)? {
            None => return Ok(None),
            Some(Raw::Secs(n)) => Duration::from_secs(n),
            Some(Raw::Float(f)) if f >= 0.0 && f.is_finite() => Duration::from_secs_f64(f),
            Some(Raw::Float(f)) => {
                return Err(serde::de::Error::custom(format!("invalid ttl {f}: must be a non-negative duration")));
            }
            Some(Raw::Text(t)) => parse_duration(&t).map_err(serde::de::Error::custom)?,
        };
        Ok((!d.is_zero()).then_some(d))
    }
}

/// Serde adapter for required `Duration` fields: a duration string or a
/// number of seconds; written as a duration string.
pub(crate) mod duration_serde {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*v))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        super::ttl_serde::deserialize(d).map(Option::unwrap_or_default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by `cargo fuzz` (durations_and_sizes): a sum of durations past
    /// the largest `Duration` panicked in the `ms` branch instead of erring.
    #[test]
    fn sums_past_the_largest_duration_are_errors() {
        for text in ["18446744073709551615s1000ms", "18446744073709551615s500ms500ms"] {
            let e = parse_duration(text).unwrap_err();
            assert!(e.contains("too large"), "{text}: {e}");
        }
        let found =
            std::str::from_utf8(&[b'0'; 64]).unwrap().to_owned() + "18446744073709551615s500ms500ms007d7d70ms1ms";
        assert!(parse_duration(&found).is_err());
    }

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("2w").unwrap(), Duration::from_secs(1_209_600));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        // Words as people write them, in any case.
        assert_eq!(parse_duration("1 hour").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("2 Hours 30 minutes").unwrap(), Duration::from_secs(9000));
        assert_eq!(parse_duration("1 day").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("10 seconds").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1H").unwrap(), Duration::from_secs(3600));
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "1x", "d", "1.5d", "-1d", "1 day extra"] {
            assert!(parse_duration(bad).is_err(), "{bad} should fail");
        }
        assert!(parse_duration("3y").unwrap_err().contains("unknown unit \"y\""));
    }

    #[test]
    fn format_round_trips() {
        for s in ["1d", "1d12h", "1m30s", "2w", "4h", "250ms"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }
}
