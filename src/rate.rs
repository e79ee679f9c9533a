//! Rate strings: `"10/min"`, `"3/5min"`, `"10 per minute"`, `"10/s;1000/day"`.

use std::fmt;
use std::time::Duration;

const NANOS_PER_SECOND: u64 = 1_000_000_000;
/// Ten years: long enough for any quota, short enough that window arithmetic on Unix-epoch nanoseconds
/// never overflows.
pub const MAX_PERIOD_NS: u64 = 3_650 * 86_400 * NANOS_PER_SECOND;
const EXAMPLES: &str = "'10/min', '100 per hour', '3/5min' or '10/s;1000/day'";

/// `limit` units per `period`. Both are non-zero, and the period holds at least one nanosecond per unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rate {
    limit: u64,
    period_ns: u64,
}

/// Why a rate string or a rate's numbers were rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateError {
    pub input: String,
    pub reason: String,
}

impl fmt::Display for RateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid rate {:?}: {}; expected a rate such as {EXAMPLES}",
            self.input, self.reason
        )
    }
}

impl std::error::Error for RateError {}

impl Rate {
    /// `limit` per `period`, or `None` when either is zero, the period is shorter than one nanosecond per
    /// unit, or longer than ten years.
    pub fn new(limit: u64, period: Duration) -> Option<Rate> {
        let period_ns = u64::try_from(period.as_nanos()).ok()?;
        Self::from_nanos(limit, period_ns)
    }

    pub fn from_nanos(limit: u64, period_ns: u64) -> Option<Rate> {
        if limit == 0 || period_ns == 0 || period_ns < limit || period_ns > MAX_PERIOD_NS {
            return None;
        }
        Some(Rate { limit, period_ns })
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn period_ns(&self) -> u64 {
        self.period_ns
    }

    pub fn period(&self) -> Duration {
        Duration::from_nanos(self.period_ns)
    }

    /// Time for one unit to come back: `period / limit`, at least one nanosecond.
    pub fn emission_ns(&self) -> u64 {
        (self.period_ns / self.limit).max(1)
    }
}

impl fmt::Display for Rate {
    /// `10 per 1 minute`, `3 per 5 minutes`, `5 per 1.5 seconds`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (count, unit) = [(86_400, "day"), (3_600, "hour"), (60, "minute"), (1, "second")]
            .iter()
            .find(|(seconds, _)| self.period_ns % (seconds * NANOS_PER_SECOND) == 0)
            .map(|&(seconds, unit)| (self.period_ns / (seconds * NANOS_PER_SECOND), unit))
            .map_or_else(
                || (format!("{}", self.period_ns as f64 / NANOS_PER_SECOND as f64), "second"),
                |(count, unit)| (count.to_string(), unit),
            );
        let plural = if count == "1" { "" } else { "s" };
        write!(f, "{} per {count} {unit}{plural}", self.limit)
    }
}

fn unit_seconds(unit: &str) -> Option<u64> {
    Some(match unit {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600,
        "d" | "day" | "days" => 86_400,
        _ => return None,
    })
}

fn parse_one(item: &str, input: &str) -> Result<Rate, RateError> {
    let error = |reason: String| RateError {
        input: input.to_owned(),
        reason,
    };
    let lowered = item.trim().to_ascii_lowercase();
    let (count_text, period_text) = if let Some((count, period)) = lowered.split_once('/') {
        (count, period)
    } else if let Some((count, period)) = lowered.split_once(" per ") {
        (count, period)
    } else {
        return Err(error(format!(
            "{:?} has no '/' or 'per' between the count and the period",
            item.trim()
        )));
    };
    let count_text = count_text.trim();
    let limit: u64 = match count_text.parse() {
        Ok(0) => return Err(error("the count must be at least 1".to_owned())),
        Ok(limit) => limit,
        Err(_) if count_text.is_empty() => return Err(error("the count is missing".to_owned())),
        Err(_) => return Err(error(format!("the count {count_text:?} is not a whole number"))),
    };
    let period_text = period_text.trim();
    let digits_end = period_text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(period_text.len());
    let (multiplier_text, unit_text) = period_text.split_at(digits_end);
    let multiplier: u64 = if multiplier_text.is_empty() {
        1
    } else {
        match multiplier_text.parse() {
            Ok(0) => return Err(error("the period must be at least 1".to_owned())),
            Ok(multiplier) => multiplier,
            Err(_) => return Err(error(format!("the period multiplier {multiplier_text:?} is too large"))),
        }
    };
    let unit_text = unit_text.trim();
    if unit_text.is_empty() {
        return Err(error("the period's unit is missing (s, min, hour or day)".to_owned()));
    }
    let seconds = unit_seconds(unit_text)
        .ok_or_else(|| error(format!("unknown unit {unit_text:?} (use s, min, hour or day)")))?;
    let period_ns = multiplier
        .checked_mul(seconds)
        .and_then(|s| s.checked_mul(NANOS_PER_SECOND))
        .filter(|&period_ns| period_ns <= MAX_PERIOD_NS)
        .ok_or_else(|| error("the period is too long (ten years at most)".to_owned()))?;
    Rate::from_nanos(limit, period_ns).ok_or_else(|| error("more than one unit per nanosecond".to_owned()))
}

/// Parses one or several rates separated by `;` or `,`. Identical rates are kept once.
pub fn parse_rates(input: &str) -> Result<Vec<Rate>, RateError> {
    if input.trim().is_empty() {
        return Err(RateError {
            input: input.to_owned(),
            reason: "it is empty".to_owned(),
        });
    }
    let mut rates: Vec<Rate> = Vec::new();
    for item in input.split([';', ',']) {
        if item.trim().is_empty() {
            return Err(RateError {
                input: input.to_owned(),
                reason: "it has an empty item".to_owned(),
            });
        }
        let rate = parse_one(item, input)?;
        if !rates.contains(&rate) {
            rates.push(rate);
        }
    }
    Ok(rates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> (u64, u64) {
        let rates = parse_rates(text).unwrap();
        assert_eq!(rates.len(), 1, "{text}");
        (rates[0].limit(), rates[0].period_ns() / NANOS_PER_SECOND)
    }

    #[test]
    fn parses_every_documented_form() {
        assert_eq!(one("10/min"), (10, 60));
        assert_eq!(one("5/s"), (5, 1));
        assert_eq!(one("100/hour"), (100, 3600));
        assert_eq!(one("1000/day"), (1000, 86_400));
        assert_eq!(one("3/5min"), (3, 300));
        assert_eq!(one("3/5 minutes"), (3, 300));
        assert_eq!(one("10 per minute"), (10, 60));
        assert_eq!(one("10 per 2 hours"), (10, 7200));
        assert_eq!(one("  7 / Second "), (7, 1));
        assert_eq!(one("1/3650day"), (1, 3650 * 86_400));
        for unit in ["s", "sec", "second", "seconds"] {
            assert_eq!(one(&format!("1/{unit}")), (1, 1));
        }
        for unit in ["min", "minute", "minutes"] {
            assert_eq!(one(&format!("1/{unit}")), (1, 60));
        }
        for unit in ["h", "hr", "hour", "hours"] {
            assert_eq!(one(&format!("1/{unit}")), (1, 3600));
        }
        for unit in ["d", "day", "days"] {
            assert_eq!(one(&format!("1/{unit}")), (1, 86_400));
        }
    }

    #[test]
    fn parses_several_rates_and_drops_repeats() {
        let rates = parse_rates("10/s;1000/day").unwrap();
        assert_eq!(rates.len(), 2);
        assert_eq!(
            (rates[1].limit(), rates[1].period_ns()),
            (1000, 86_400 * NANOS_PER_SECOND)
        );
        assert_eq!(parse_rates("10/s, 1000/day").unwrap(), rates);
        assert_eq!(parse_rates("10/s;10/second").unwrap().len(), 1);
    }

    #[test]
    fn rejects_bad_strings_with_the_text_and_an_example() {
        for bad in [
            "",
            " ",
            "10",
            "abc",
            "/min",
            "10/",
            "10/fortnight",
            "0/min",
            "-1/min",
            "1.5/min",
            "10/0min",
            "10//min",
            "10/min;",
            ";10/min",
            "10/min;;5/s",
            "ten/min",
            "10/5",
            "10 per",
            "per minute",
            "99999999999999999999/min",
            "10/99999999999999999999s",
            "10/999999999999day",
            "2000000000/s",
        ] {
            let error = parse_rates(bad).expect_err(bad);
            let message = error.to_string();
            assert!(message.contains(&format!("{bad:?}")), "{message}");
            assert!(message.contains("'10/min'"), "{message}");
        }
        assert!(parse_rates("10/fortnight")
            .unwrap_err()
            .to_string()
            .contains("unknown unit \"fortnight\""));
    }

    #[test]
    fn displays_like_a_sentence() {
        assert_eq!(parse_rates("10/min").unwrap()[0].to_string(), "10 per 1 minute");
        assert_eq!(parse_rates("3/5min").unwrap()[0].to_string(), "3 per 5 minutes");
        assert_eq!(parse_rates("5/90s").unwrap()[0].to_string(), "5 per 90 seconds");
        assert_eq!(parse_rates("1/day").unwrap()[0].to_string(), "1 per 1 day");
        assert_eq!(
            Rate::new(5, Duration::from_millis(1500)).unwrap().to_string(),
            "5 per 1.5 seconds"
        );
    }
}
