//! Durations as Istio and Flagger write them: `5s`, `100ms`, `1.5s`, `1m30s`, `2h`.

use std::time::Duration;

/// Parses a duration written as one or more `<number><unit>` pairs, units `h`, `m`, `s`,
/// `ms`, `us` (or `µs`), `ns`. Fractions are allowed (`1.5s`). A bare `0` is zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("an empty duration: write e.g. `5s` or `250ms`".into());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("duration {text:?} has no unit: write e.g. `{s}s`"))?;
        if num_end == 0 {
            return Err(format!(
                "duration {text:?} is not `<number><unit>`, e.g. `5s`"
            ));
        }
        let number: f64 = rest[..num_end]
            .parse()
            .map_err(|_| format!("duration {text:?} has a malformed number"))?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            unit => {
                return Err(format!(
                    "duration {text:?} has unknown unit {unit:?}: use h, m, s, ms, us or ns"
                ));
            }
        };
        total += number * seconds;
        rest = &rest[unit_end..];
    }
    if !total.is_finite() || total > 1e9 {
        return Err(format!("duration {text:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_istio_and_go_durations() {
        let rows = [
            ("5s", Duration::from_secs(5)),
            ("100ms", Duration::from_millis(100)),
            ("1.5s", Duration::from_millis(1500)),
            ("1m30s", Duration::from_secs(90)),
            ("2h", Duration::from_secs(7200)),
            ("0", Duration::ZERO),
            ("250us", Duration::from_micros(250)),
        ];
        for (text, want) in rows {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        for bad in ["", "5", "s", "5x", "1.2.3s", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad} should be refused");
        }
    }
}
