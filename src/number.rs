//! Exact numbers: what one element of the sorted list is, how two of them
//! compare, and how each is written back as JSON.
//!
//! Integers keep their exact value at any size (as Python's `int` did in the
//! original service). Decimal fractions and exponents are IEEE-754 doubles, as
//! Python's `float` was. Comparisons between the kinds are exact: a big integer
//! is never rounded through `f64`, and a float is compared by the exact value it
//! holds.

use std::cmp::Ordering;

/// One number taken from a request.
#[derive(Debug, Clone)]
pub enum Number {
    /// An integer that fits in 64 bits: the fast, common case.
    Int(i64),
    /// An integer outside the `i64` range that fits in 128 bits (every
    /// integer of up to 38 digits): held inline, so sorting and writing it
    /// never reads memory elsewhere, as a `BigInt` would.
    Wide(i128),
    /// An integer outside the `i128` range.
    Big(BigInt),
    /// A number written with a fraction or an exponent. Never NaN or infinite.
    Float(f64),
}

/// An integer outside the `i128` range, kept as its decimal digits.
///
/// Sorting only needs comparison and printing, and both are exact and linear
/// on decimal digits, so no arbitrary-precision arithmetic library is needed.
/// Against a float, the integer compares through its nearest `f64`, worked
/// out once when it is read: rounding never reverses an order, so only a tie
/// with that float needs the exact answer, and that is kept too. Every
/// comparison with a float is then O(1), whatever the sizes.
#[derive(Debug, Clone)]
pub struct BigInt {
    negative: bool,
    /// The magnitude: ASCII digits, no leading zero, never fits in `i128`.
    digits: Box<str>,
    /// The magnitude rounded to the nearest `f64` (infinite past `f64::MAX`).
    approx: f64,
    /// How the magnitude stands to `approx`, exactly.
    beyond_approx: Ordering,
}

/// 2^127 as an `f64`: every float at or beyond this magnitude is an integer
/// outside the `i128` range.
const TWO_POW_127: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;

impl BigInt {
    /// Builds an integer from a sign and decimal digits (leading zeros allowed).
    /// Returns `Number::Int` when the value fits in `i64`, `Number::Wide`
    /// when it fits in `i128`.
    pub fn from_digits(negative: bool, digits: &str) -> Number {
        let digits = digits.trim_start_matches('0');
        if digits.is_empty() {
            return Number::Int(0);
        }
        if digits.len() <= 39 {
            if let Ok(magnitude) = digits.parse::<u128>() {
                let value = if negative {
                    0i128.checked_sub_unsigned(magnitude)
                } else {
                    i128::try_from(magnitude).ok()
                };
                if let Some(value) = value {
                    return match i64::try_from(value) {
                        Ok(small) => Number::Int(small),
                        Err(_) => Number::Wide(value),
                    };
                }
            }
        }
        // Rust's parse rounds correctly, at any length (to infinity past
        // f64::MAX); the digits are plain ASCII digits, so it cannot fail.
        let approx = digits.parse::<f64>().unwrap_or(f64::INFINITY);
        Number::Big(BigInt {
            negative,
            beyond_approx: cmp_digits_with_float(digits, approx),
            digits: digits.into(),
            approx,
        })
    }

    /// Compares magnitudes: by their nearest `f64`s first (rounding never
    /// reverses an order, and those are in hand), then by the digits (no
    /// leading zeros) only when both round to the same `f64`. A sort of many
    /// big integers then rarely reads their digits, which live elsewhere.
    fn cmp_magnitude(&self, other: &BigInt) -> Ordering {
        match self.approx.partial_cmp(&other.approx) {
            Some(Ordering::Equal) | None => {
                let (a, b) = (&self.digits, &other.digits);
                a.len().cmp(&b.len()).then_with(|| a.cmp(b))
            }
            Some(order) => order,
        }
    }

    fn cmp_big(&self, other: &BigInt) -> Ordering {
        match (self.negative, other.negative) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => self.cmp_magnitude(other),
            (true, true) => other.cmp_magnitude(self),
        }
    }

    /// Where this integer stands against any `i128`: it is outside their
    /// range, so the sign alone decides.
    fn cmp_small(&self) -> Ordering {
        if self.negative {
            Ordering::Less
        } else {
            Ordering::Greater
        }
    }

    fn cmp_float(&self, float: f64) -> Ordering {
        if float.abs() < TWO_POW_127 {
            return self.cmp_small();
        }
        // Magnitudes: the rounded one decides unless it ties with the float.
        let magnitude = match self.approx.partial_cmp(&float.abs()) {
            Some(Ordering::Equal) | None => self.beyond_approx,
            Some(order) => order,
        };
        match (self.negative, float < 0.0) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => magnitude,
            (true, true) => magnitude.reverse(),
        }
    }
}

/// How the integer written as `digits` (no leading zero, at least 2^127)
/// stands to `float`, its nearest `f64`, exactly; once per integer read.
fn cmp_digits_with_float(digits: &str, float: f64) -> Ordering {
    if float.is_infinite() {
        return Ordering::Less;
    }
    // Up to 38 digits the integer fits in u128, and so does its rounding.
    if let Ok(value) = digits.parse::<u128>() {
        return value.cmp(&(float as u128));
    }
    // Past that, both in binary: the float is m * 2^e, an integer here.
    let bits = float.to_bits();
    let mantissa = (bits & ((1 << 52) - 1)) | (1 << 52);
    let shift = ((bits >> 52) & 0x7ff) as usize - 1075;
    let mut rounded = vec![0u64; shift / 64 + 2];
    rounded[shift / 64] = mantissa << (shift % 64);
    if shift % 64 != 0 {
        rounded[shift / 64 + 1] = mantissa >> (64 - shift % 64);
    }
    cmp_limbs(&decimal_to_limbs(digits), &rounded)
}

/// Decimal digits as little-endian 64-bit limbs. Quadratic in the length, so
/// only for integers within `f64`'s range (at most 309 digits).
fn decimal_to_limbs(digits: &str) -> Vec<u64> {
    let mut limbs: Vec<u64> = Vec::with_capacity(digits.len() / 19 + 2);
    for chunk in digits.as_bytes().chunks(19) {
        let scale = 10u64.pow(chunk.len() as u32);
        let mut carry = chunk
            .iter()
            .fold(0u64, |acc, digit| acc * 10 + u64::from(digit - b'0'));
        for limb in &mut limbs {
            let wide = u128::from(*limb) * u128::from(scale) + u128::from(carry);
            *limb = wide as u64;
            carry = (wide >> 64) as u64;
        }
        if carry != 0 {
            limbs.push(carry);
        }
    }
    limbs
}

/// Compares little-endian limbs as integers (high zero limbs allowed).
fn cmp_limbs(a: &[u64], b: &[u64]) -> Ordering {
    let significant =
        |limbs: &[u64]| limbs.len() - limbs.iter().rev().take_while(|&&l| l == 0).count();
    let (a, b) = (&a[..significant(a)], &b[..significant(b)]);
    a.len()
        .cmp(&b.len())
        .then_with(|| a.iter().rev().cmp(b.iter().rev()))
}

/// Exact comparison of an integer with a float, with no rounding of either.
fn cmp_int_float(int: i128, float: f64) -> Ordering {
    if float >= TWO_POW_127 {
        return Ordering::Less;
    }
    if float < -TWO_POW_127 {
        return Ordering::Greater;
    }
    let whole = float.trunc();
    // In range and integral, so the cast is exact.
    int.cmp(&(whole as i128)).then_with(|| {
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
        use Number::{Big, Float, Int, Wide};
        match (self, other) {
            (Int(a), Int(b)) => a.cmp(b),
            // Floats here are never NaN, so `partial_cmp` always answers.
            (Float(a), Float(b)) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
            (Big(a), Big(b)) => a.cmp_big(b),
            (Big(a), Float(b)) => a.cmp_float(*b),
            (Float(a), Big(b)) => b.cmp_float(*a).reverse(),
            (Big(a), Int(_) | Wide(_)) => a.cmp_small(),
            (Int(_) | Wide(_), Big(b)) => b.cmp_small().reverse(),
            (Int(a), Float(b)) => cmp_int_float(i128::from(*a), *b),
            (Float(a), Int(b)) => cmp_int_float(i128::from(*b), *a).reverse(),
            (Wide(a), Float(b)) => cmp_int_float(*a, *b),
            (Float(a), Wide(b)) => cmp_int_float(*b, *a).reverse(),
            (Wide(a), Wide(b)) => a.cmp(b),
            (Int(a), Wide(b)) => i128::from(*a).cmp(b),
            (Wide(a), Int(b)) => a.cmp(&i128::from(*b)),
        }
    }
}

impl Number {
    /// Appends the number as JSON: integers of any size as JSON integers,
    /// floats in their shortest round-trip form (`2.5`, `1000.0`, `1e+300`),
    /// as serde_json writes them (with itoa and zmij, as serde_json does). No
    /// allocation: a big integer's digits are copied as they are.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Number::Int(value) => {
                out.extend_from_slice(itoa::Buffer::new().format(*value).as_bytes())
            }
            Number::Wide(value) => {
                out.extend_from_slice(itoa::Buffer::new().format(*value).as_bytes())
            }
            // Never NaN or infinite (the scanner refuses them).
            Number::Float(value) => {
                out.extend_from_slice(zmij::Buffer::new().format_finite(*value).as_bytes());
            }
            Number::Big(value) => {
                if value.negative {
                    out.push(b'-');
                }
                out.extend_from_slice(value.digits.as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2^63 as an `f64`.
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

    fn big(text: &str) -> Number {
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        BigInt::from_digits(negative, digits)
    }

    #[test]
    fn from_digits_keeps_each_integer_in_its_smallest_kind() {
        assert!(matches!(big("9223372036854775807"), Number::Int(i64::MAX)));
        assert!(matches!(big("-9223372036854775808"), Number::Int(i64::MIN)));
        assert!(matches!(big("-000"), Number::Int(0)));
        assert!(matches!(big("9223372036854775808"), Number::Wide(v) if v == 1 << 63));
        assert!(matches!(big("-9223372036854775809"), Number::Wide(_)));
        assert!(matches!(
            big("170141183460469231731687303715884105727"),
            Number::Wide(i128::MAX)
        ));
        assert!(matches!(
            big("-170141183460469231731687303715884105728"),
            Number::Wide(i128::MIN)
        ));
        assert!(matches!(
            big("170141183460469231731687303715884105728"),
            Number::Big(_)
        ));
        assert!(matches!(
            big("-170141183460469231731687303715884105729"),
            Number::Big(_)
        ));
        assert!(matches!(
            big("0001000000000000000000000000000000000000000"),
            Number::Big(_)
        ));
    }

    #[test]
    fn the_kinds_of_integers_order_among_themselves_and_with_floats() {
        let ordered = [
            big("-170141183460469231731687303715884105729"),
            Number::Float(-TWO_POW_127),
            big("-170141183460469231731687303715884105727"),
            big("-9223372036854775809"),
            Number::Int(i64::MIN),
            Number::Float(-0.5),
            Number::Int(0),
            Number::Float(TWO_POW_63),
            big("9223372036854775809"),
            big("170141183460469231731687303715884105727"),
            Number::Float(TWO_POW_127),
            big("170141183460469231731687303715884105729"),
        ];
        for (i, a) in ordered.iter().enumerate() {
            for (j, b) in ordered.iter().enumerate() {
                assert_eq!(a.cmp(b), i.cmp(&j), "{a:?} vs {b:?}");
            }
        }
        assert_eq!(
            big("-170141183460469231731687303715884105728"),
            Number::Float(-TWO_POW_127)
        );
        assert_eq!(
            big("170141183460469231731687303715884105728"),
            Number::Float(TWO_POW_127)
        );
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
            .map(|n| {
                let mut out = Vec::new();
                n.write_json(&mut out);
                String::from_utf8(out).unwrap()
            })
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
        // Equal means numerically equal, and nothing else is.
        assert!(Number::Int(3) != Number::Float(3.5));
        assert!(big("100000000000000000001") != Number::Float(1e20));
    }

    #[test]
    fn numbers_print_as_serde_json_prints_them() {
        let cases = [
            (Number::Float(2.5), "2.5"),
            (Number::Float(1000.0), "1000.0"),
            (Number::Float(0.1), "0.1"),
            (Number::Float(-0.0), "-0.0"),
            (Number::Float(1e300), "1e+300"),
            (Number::Float(5e-324), "5e-324"),
            (Number::Int(i64::MIN), "-9223372036854775808"),
            (
                big("-123456789012345678901234567890"),
                "-123456789012345678901234567890",
            ),
        ];
        for (number, text) in cases {
            let mut out = Vec::new();
            number.write_json(&mut out);
            assert_eq!(String::from_utf8(out).unwrap(), text);
            if let Number::Float(value) = number {
                assert_eq!(serde_json::to_string(&value).unwrap(), text);
            }
        }
    }
}
