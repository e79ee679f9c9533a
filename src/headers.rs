//! HTTP response fields for a decision: `X-RateLimit-*`, `Retry-After`, the IETF `RateLimit-Policy` and
//! `RateLimit` fields (draft-ietf-httpapi-ratelimit-headers), and the body of a 429.
//!
//! Every time is rounded up to whole seconds, so a client that waits as told is never early.

use std::fmt::Write;

use crate::decision::Decision;
use crate::rate::Rate;

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// One response field a decision can fill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// The quota of the binding limit: `10`.
    Limit,
    /// Units left: `7`.
    Remaining,
    /// When the quota is fully restored, in Unix seconds: `1700000060`.
    Reset,
    /// Seconds until a request of the same cost could pass, at least 1; only on a denial.
    RetryAfter,
    /// `"name";q=10;w=60`
    Policy,
    /// `"name";r=7;t=6`: `t` is the seconds to full restoration, or `Retry-After` on a denial.
    RateLimit,
}

/// Whole seconds in `nanos`, rounded up.
pub fn ceil_seconds(nanos: u64) -> u64 {
    nanos.div_ceil(NANOS_PER_SECOND)
}

/// `Retry-After` of a denial: seconds until a request of its cost could pass, rounded up, at least 1.
pub fn retry_after_s(decision: &Decision) -> u64 {
    ceil_seconds(decision.retry_after_ns).max(1)
}

/// When the quota is fully restored, in whole Unix seconds, rounded up.
pub fn reset_at_s(decision: &Decision, now_ns: u64) -> u64 {
    ceil_seconds(now_ns.saturating_add(decision.reset_after_ns))
}

/// A structured-field String (RFC 8941): quoted, `"` and `\` escaped, anything not printable ASCII dropped.
pub fn sf_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// What a field holds for one decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A whole number: the `X-RateLimit-*` fields and `Retry-After`.
    Number(u64),
    /// A structured field: the IETF fields.
    Text(String),
    /// The field does not apply (`Retry-After` when allowed).
    Absent,
}

/// The value of `field` for `decision`. `policy` names the limit in the IETF fields.
pub fn field_value(field: Field, decision: &Decision, now_ns: u64, policy: &str) -> Value {
    match field {
        Field::Limit => Value::Number(decision.limit),
        Field::Remaining => Value::Number(decision.remaining),
        Field::Reset => Value::Number(reset_at_s(decision, now_ns)),
        Field::RetryAfter if decision.allowed => Value::Absent,
        Field::RetryAfter => Value::Number(retry_after_s(decision)),
        Field::Policy => {
            let mut text = sf_string(policy);
            let window_s = ceil_seconds(decision.period_ns).max(1);
            write!(text, ";q={};w={window_s}", decision.limit).expect("writing to a String");
            Value::Text(text)
        }
        Field::RateLimit => {
            let until_s = if decision.allowed {
                ceil_seconds(decision.reset_after_ns)
            } else {
                retry_after_s(decision)
            };
            let mut text = sf_string(policy);
            write!(text, ";r={};t={until_s}", decision.remaining).expect("writing to a String");
            Value::Text(text)
        }
    }
}

/// The decimal digits of `number`, written into `buffer` without allocating.
pub fn digits(number: u64, buffer: &mut [u8; 20]) -> &[u8] {
    let mut rest = number;
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            return &buffer[start..];
        }
    }
}

/// `Rate limit exceeded: 10 per 1 minute`, naming the limit that bound the decision.
pub fn exceeded_detail(decision: &Decision) -> String {
    match Rate::from_nanos(decision.limit, decision.period_ns) {
        Some(rate) => format!("Rate limit exceeded: {rate}"),
        None => "Rate limit exceeded".to_owned(),
    }
}

/// The JSON body of a 429: `{"detail": "Rate limit exceeded: 10 per 1 minute", "retry_after": 60}`.
pub fn denied_body(decision: &Decision) -> String {
    // The detail holds only digits, ASCII letters, spaces, '.' and ':', so it needs no JSON escaping.
    format!(
        "{{\"detail\":\"{}\",\"retry_after\":{}}}",
        exceeded_detail(decision),
        retry_after_s(decision)
    )
}

/// Whether `name` can be a header field name (an RFC 9110 token).
pub fn is_field_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of `field` as the text a response carries, or `None` when the field does not apply.
    fn value(field: Field, decision: &Decision, now_ns: u64, policy: &str) -> Option<String> {
        match field_value(field, decision, now_ns, policy) {
            Value::Number(number) => Some(number.to_string()),
            Value::Text(text) => Some(text),
            Value::Absent => None,
        }
    }

    #[test]
    fn digits_match_to_string() {
        let mut buffer = [0u8; 20];
        for number in [0, 7, 10, 99, 100, 1_700_000_060, u64::MAX] {
            assert_eq!(digits(number, &mut buffer), number.to_string().as_bytes());
        }
    }

    const S: u64 = NANOS_PER_SECOND;
    const NOW: u64 = 1_700_000_000 * S;

    fn denied(retry_after_ns: u64) -> Decision {
        Decision {
            allowed: false,
            limit: 10,
            remaining: 0,
            reset_after_ns: 60 * S,
            retry_after_ns,
            period_ns: 60 * S,
            index: 0,
        }
    }

    fn allowed() -> Decision {
        Decision {
            allowed: true,
            limit: 10,
            remaining: 7,
            reset_after_ns: 18 * S + 1,
            retry_after_ns: 0,
            period_ns: 60 * S,
            index: 0,
        }
    }

    #[test]
    fn times_round_up_and_retry_after_is_at_least_one() {
        assert_eq!(retry_after_s(&denied(6 * S)), 6);
        assert_eq!(retry_after_s(&denied(6 * S + 1)), 7);
        assert_eq!(retry_after_s(&denied(1)), 1);
        assert_eq!(retry_after_s(&denied(0)), 1);
        assert_eq!(reset_at_s(&allowed(), NOW), 1_700_000_019);
        assert_eq!(reset_at_s(&allowed(), NOW - 1), 1_700_000_018);
    }

    #[test]
    fn values_for_allowed_and_denied() {
        let ok = allowed();
        assert_eq!(value(Field::Limit, &ok, NOW, "default").as_deref(), Some("10"));
        assert_eq!(value(Field::Remaining, &ok, NOW, "default").as_deref(), Some("7"));
        assert_eq!(value(Field::RetryAfter, &ok, NOW, "default"), None);
        assert_eq!(
            value(Field::Policy, &ok, NOW, "default").as_deref(),
            Some("\"default\";q=10;w=60")
        );
        assert_eq!(
            value(Field::RateLimit, &ok, NOW, "default").as_deref(),
            Some("\"default\";r=7;t=19")
        );
        let no = denied(5 * S + 1);
        assert_eq!(value(Field::RetryAfter, &no, NOW, "x").as_deref(), Some("6"));
        assert_eq!(
            value(Field::RateLimit, &no, NOW, "x").as_deref(),
            Some("\"x\";r=0;t=6"),
            "t never points later than Retry-After"
        );
    }

    #[test]
    fn policy_names_are_quoted_safely() {
        assert_eq!(sf_string(r#"a "b" \c"#), r#""a \"b\" \\c""#);
        assert_eq!(sf_string("é/users/{id}\n"), "\"/users/{id}\"");
    }

    #[test]
    fn denied_body_names_the_rate() {
        assert_eq!(
            denied_body(&denied(6 * S)),
            r#"{"detail":"Rate limit exceeded: 10 per 1 minute","retry_after":6}"#
        );
    }

    #[test]
    fn field_names_are_tokens() {
        assert!(is_field_name("X-RateLimit-Limit"));
        assert!(!is_field_name(""));
        assert!(!is_field_name("Bad Name"));
        assert!(!is_field_name("Bad:Name"));
    }
}
