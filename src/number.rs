//! Exact numbers: what one element of the sorted list is, how two of them
//! compare, and how each is written back as JSON.
//!
//! Integers keep their exact value at any size (as Python's `int` did in the
//! original service). Decimal fractions and exponents are IEEE-754 doubles, as
//! Python's `float` was. Comparisons between the kinds are exact: a big integer
//! is never rounded through `f64`, and a float is compared by the exact value it
//! holds.

use std::cmp::Ordering;

use serde::ser::{Error as _, Serialize, Serializer};

/// One number taken from a request.
#[derive(Debug, Clone)]
pub enum Number {
    /// An integer that fits in 64 bits: the fast, common case.
    Int(i64),
    /// An integer outside the `i64` range.
    Big(BigInt),
    /// A number written with a fraction or an exponent. Never NaN or infinite.
    Float(f64),
}

/// An integer outside the `i64` range, kept as its decimal digits.
///
/// Sorting only needs comparison and printing, and both are exact and linear
/// on decimal digits, so no arbitrary-precision arithmetic library is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BigInt {
    negative: bool,
    /// The magnitude: ASCII digits, no leading zero, never fits in `i64`.
    digits: Box<str>,
}

/// 2^63 as an `f64`: every float at or beyond this magnitude is an integer
/// outside the `i64` range.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

impl BigInt {
    /// Builds an integer from a sign and decimal digits (leading zeros allowed).
    /// Returns `Number::Int` when the value fits in `i64`.
    pub fn from_digits(negative: bool, digits: &str) -> Number {
        let digits = digits.trim_start_matches('0');
        if digits.len() <= 19 {
            if let Ok(magnitude) = digits.parse::<u64>() {
                // "" (all zeros) parses as an error above, so handle it here.
                if let Some(value) = signed(negative, magnitude) {
                    return Number::Int(value);
                }
            }
        }
        if digits.is_empty() {
            return Number::Int(0);
        }
        Number::Big(BigInt {
            negative,
            digits: digits.into(),
        })
    }

    /// Compares magnitudes written as digit strings without leading zeros.
    fn cmp_magnitude(a: &str, b: &str) -> Ordering {
        a.len().cmp(&b.len()).then_with(|| a.cmp(b))
    }

    fn cmp_big(&self, other: &BigInt) -> Ordering {
        match (self.negative, other.negative) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => Self::cmp_magnitude(&self.digits, &other.digits),
            (true, true) => Self::cmp_magnitude(&other.digits, &self.digits),
        }
    }

    /// Where this integer stands against any `i64`: it is outside their range,
    /// so the sign alone decides.
    fn cmp_small(&self) -> Ordering {
        if self.negative {
            Ordering::Less
        } else {
            Ordering::Greater
        }
    }

    fn cmp_float(&self, float: f64) -> Ordering {
        if float.abs() < TWO_POW_63 {
            return self.cmp_small();
        }
        // Here the float is an integer; `{:.0}` prints its exact decimal value.
        let float_digits = format!("{:.0}", float.abs());
        let magnitude = Self::cmp_magnitude(&self.digits, &float_digits);
        match (self.negative, float < 0.0) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => magnitude,
            (true, true) => magnitude.reverse(),
        }
    }
}

impl std::fmt::Display for BigInt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.negative {
            f.write_str("-")?;
        }
        f.write_str(&self.digits)
    }
}

fn signed(negative: bool, magnitude: u64) -> Option<i64> {
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// Exact comparison of an integer with a float, with no rounding of either.
fn cmp_int_float(int: i64, float: f64) -> Ordering {
    if float >= TWO_POW_63 {
        return Ordering::Less;
    }
    if float < -TWO_POW_63 {
        return Ordering::Greater;
    }
    let whole = float.trunc();
    // In range and integral, so the cast is exact.
    int.cmp(&(whole as i64)).then_with(|| {
        if float > whole {
            Ordering::Less
        } else if float < whole {
            Ordering::Greater
        } else {
            Ordering::Equal
        }
    })
}

/// Numeric equality, consistent with [`Ord`]: `1 == 1.0`.
impl PartialEq for Number {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Number {}

impl PartialOrd for Number {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Number {
    /// Numeric order across kinds. Values that are numerically equal (`1` and
    /// `1.0`, `0.0` and `-0.0`) compare `Equal`; a stable sort keeps them in
    /// input order.
    fn cmp(&self, other: &Self) -> Ordering {
        use Number::{Big, Float, Int};
        match (self, other) {
            (Int(a), Int(b)) => a.cmp(b),
            // Floats here are never NaN, so `partial_cmp` always answers.
            (Float(a), Float(b)) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
            (Big(a), Big(b)) => a.cmp_big(b),
            (Int(a), Float(b)) => cmp_int_float(*a, *b),
            (Float(a), Int(b)) => cmp_int_float(*b, *a).reverse(),
            (Big(a), Int(_)) => a.cmp_small(),
            (Int(_), Big(b)) => b.cmp_small().reverse(),
            (Big(a), Float(b)) => a.cmp_float(*b),
            (Float(a), Big(b)) => b.cmp_float(*a).reverse(),
        }
    }
}

impl Serialize for Number {
    /// Integers as JSON integers of any size, floats in their shortest
    /// round-trip form (`2.5`, `1000.0`, `1e300`).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Number::Int(value) => serializer.serialize_i64(*value),
            Number::Float(value) => serializer.serialize_f64(*value),
            Number::Big(value) => serde_json::value::RawValue::from_string(value.to_string())
                .map_err(S::Error::custom)?
                .serialize(serializer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn big(text: &str) -> Number {
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        BigInt::from_digits(negative, digits)
    }

    #[test]
    fn from_digits_keeps_i64_values_small() {
        assert_eq!(big("9223372036854775807"), Number::Int(i64::MAX));
        assert_eq!(big("-9223372036854775808"), Number::Int(i64::MIN));
        assert_eq!(big("-000"), Number::Int(0));
        assert!(matches!(big("9223372036854775808"), Number::Big(_)));
        assert!(matches!(big("-9223372036854775809"), Number::Big(_)));
    }

    #[test]
    fn big_integers_order_by_sign_then_magnitude() {
        let mut values = [
            big("99999999999999999999999"),
            big("-99999999999999999999999"),
            Number::Int(1),
            big("100000000000000000000000"),
            big("-100000000000000000000000"),
        ];
        values.sort();
        let printed: Vec<String> = values
            .iter()
            .map(|n| serde_json::to_string(n).unwrap())
            .collect();
        assert_eq!(
            printed,
            [
                "-100000000000000000000000",
                "-99999999999999999999999",
                "1",
                "99999999999999999999999",
                "100000000000000000000000"
            ]
        );
    }

    #[test]
    fn floats_compare_exactly_with_integers_beyond_two_pow_53() {
        // 2^53 + 1 is not representable as f64; rounding it would make it equal 2^53.
        let two_pow_53 = 9_007_199_254_740_992.0;
        assert!(Number::Int(9_007_199_254_740_993) > Number::Float(two_pow_53));
        assert!(Number::Int(9_007_199_254_740_992) == Number::Float(two_pow_53));
        // 1e20 as f64 is exactly 100000000000000000000.
        assert_eq!(
            big("100000000000000000000").cmp(&Number::Float(1e20)),
            Ordering::Equal
        );
        assert!(big("100000000000000000001") > Number::Float(1e20));
        assert!(big("-100000000000000000001") < Number::Float(-1e20));
        assert!(Number::Int(i64::MAX) < Number::Float(TWO_POW_63));
        assert!(Number::Int(i64::MIN) == Number::Float(-TWO_POW_63));
        assert!(Number::Int(3) < Number::Float(3.5));
        assert!(Number::Int(-3) > Number::Float(-3.5));
    }

    #[test]
    fn floats_print_in_shortest_round_trip_form() {
        let printed = serde_json::to_string(&[
            Number::Float(2.5),
            Number::Float(1000.0),
            Number::Float(0.1),
        ])
        .unwrap();
        assert_eq!(printed, "[2.5,1000.0,0.1]");
    }
}
