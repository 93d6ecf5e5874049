//! Exact money for cost accounting: prices and budgets in micro-units (millionths
//! of a currency unit), costs in pico-units (a price per million tokens times a
//! token count), all integers, so sums never drift. Amounts are written as decimal
//! strings (`"0.15"`); a YAML number is accepted too and rounded to six places.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Micro-units per currency unit.
pub const MICROS_PER_UNIT: i64 = 1_000_000;

/// Pico-units per currency unit: a price in micro-units per million tokens times
/// a token count is a cost in pico-units.
pub const PICOS_PER_UNIT: i128 = 1_000_000_000_000;

/// An amount in micro-units of a currency (0.15 is `Micros(150_000)`); never negative.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Micros(pub i64);

/// Why an amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Not a plain decimal such as `0.15` or `12`.
    #[error("{0:?} is not a decimal amount such as 0.15 (digits, at most one point)")]
    NotDecimal(String),
    /// Below zero.
    #[error("{0} is negative; amounts must be zero or more")]
    Negative(String),
    /// More than six decimal places.
    #[error("{0} has more than 6 decimal places")]
    TooPrecise(String),
    /// Beyond what the accounting holds.
    #[error("{0} is too large")]
    TooLarge(String),
}

/// The largest amount accepted: one trillion units.
const MAX_MICROS: i64 = 1_000_000_000_000 * MICROS_PER_UNIT;

impl Micros {
    /// Parses a decimal such as `0.15`, `12` or `3.000001` exactly.
    pub fn parse(text: &str) -> Result<Self, MoneyError> {
        let t = text.trim();
        if t.starts_with('-') {
            return Err(MoneyError::Negative(t.to_owned()));
        }
        let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() && frac.is_empty() || !digits(whole) || !digits(frac) {
            return Err(MoneyError::NotDecimal(t.to_owned()));
        }
        let frac = frac.trim_end_matches('0');
        if frac.len() > 6 {
            return Err(MoneyError::TooPrecise(t.to_owned()));
        }
        let too_large = || MoneyError::TooLarge(t.to_owned());
        let whole: i64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| too_large())?
        };
        let frac_micros: i64 = format!("{frac:0<6}").parse().map_err(|_| too_large())?;
        let micros = whole
            .checked_mul(MICROS_PER_UNIT)
            .and_then(|w| w.checked_add(frac_micros))
            .filter(|m| *m <= MAX_MICROS)
            .ok_or_else(too_large)?;
        Ok(Self(micros))
    }

    /// A number from YAML or JSON, rounded to six decimal places (exact for any
    /// decimal written with at most six places).
    pub fn from_f64(value: f64) -> Result<Self, MoneyError> {
        if !value.is_finite() {
            return Err(MoneyError::NotDecimal(value.to_string()));
        }
        if value < 0.0 {
            return Err(MoneyError::Negative(value.to_string()));
        }
        let micros = (value * MICROS_PER_UNIT as f64).round();
        if micros > MAX_MICROS as f64 {
            return Err(MoneyError::TooLarge(value.to_string()));
        }
        Ok(Self(micros as i64))
    }

    /// The amount in pico-units.
    pub fn to_picos(self) -> i128 {
        i128::from(self.0) * 1_000_000
    }
}

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_picos(self.to_picos()))
    }
}

/// An exact decimal for an amount in pico-units: `1500000` is `"0.0000015"`;
/// whole amounts keep no point (`"12"`).
pub fn format_picos(picos: i128) -> String {
    let sign = if picos < 0 { "-" } else { "" };
    let abs = picos.unsigned_abs();
    let unit = PICOS_PER_UNIT.unsigned_abs();
    let (whole, frac) = (abs / unit, abs % unit);
    if frac == 0 {
        return format!("{sign}{whole}");
    }
    let frac = format!("{frac:012}");
    format!("{sign}{whole}.{}", frac.trim_end_matches('0'))
}

/// The cost in pico-units of `tokens` at `price_per_million` (exact: a price in
/// micro-units per million tokens times a token count).
pub fn cost_picos(tokens: u64, price_per_million: Micros) -> i128 {
    i128::from(tokens) * i128::from(price_per_million.0)
}

impl Serialize for Micros {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Micros {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AmountVisitor;
        impl Visitor<'_> for AmountVisitor {
            type Value = Micros;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal amount such as \"0.15\" or 0.15")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Micros, E> {
                Micros::parse(v).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Micros, E> {
                Micros::from_f64(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Micros, E> {
                Micros::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Micros, E> {
                Micros::parse(&v.to_string()).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(AmountVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_parse_exactly() {
        assert_eq!(Micros::parse("0.15"), Ok(Micros(150_000)));
        assert_eq!(Micros::parse("12"), Ok(Micros(12_000_000)));
        assert_eq!(Micros::parse(".5"), Ok(Micros(500_000)));
        assert_eq!(Micros::parse("3.000001"), Ok(Micros(3_000_001)));
        assert_eq!(Micros::parse("2.50000000"), Ok(Micros(2_500_000)));
        assert!(matches!(Micros::parse("-1"), Err(MoneyError::Negative(_))));
        assert!(matches!(
            Micros::parse("0.0000001"),
            Err(MoneyError::TooPrecise(_))
        ));
        assert!(matches!(
            Micros::parse("1e3"),
            Err(MoneyError::NotDecimal(_))
        ));
        assert!(matches!(Micros::parse("."), Err(MoneyError::NotDecimal(_))));
        assert!(matches!(
            Micros::parse("99999999999999999999"),
            Err(MoneyError::TooLarge(_))
        ));
    }

    #[test]
    fn numbers_round_to_six_places() {
        assert_eq!(Micros::from_f64(0.15), Ok(Micros(150_000)));
        assert_eq!(Micros::from_f64(0.6), Ok(Micros(600_000)));
        assert_eq!(Micros::from_f64(2.5), Ok(Micros(2_500_000)));
        assert!(Micros::from_f64(-0.01).is_err());
        assert!(Micros::from_f64(f64::NAN).is_err());
        let yaml: Micros = serde_yaml::from_str("0.15").unwrap();
        let text: Micros = serde_yaml::from_str("'0.15'").unwrap();
        let int: Micros = serde_yaml::from_str("3").unwrap();
        assert_eq!(
            (yaml, text, int),
            (Micros(150_000), Micros(150_000), Micros(3_000_000))
        );
        assert_eq!(
            serde_yaml::to_string(&Micros(150_000)).unwrap().trim(),
            "'0.15'"
        );
    }

    #[test]
    fn costs_are_exact() {
        // 1 token at 0.15 per million is 0.00000015.
        assert_eq!(format_picos(cost_picos(1, Micros(150_000))), "0.00000015");
        // Ten million tiny additions sum exactly.
        let total: i128 = (0..10_000_000)
            .map(|_| cost_picos(1, Micros(150_000)))
            .sum();
        assert_eq!(format_picos(total), "1.5");
        assert_eq!(format_picos(0), "0");
        assert_eq!(format_picos(12 * PICOS_PER_UNIT), "12");
        assert_eq!(Micros(1).to_string(), "0.000001");
    }
}
