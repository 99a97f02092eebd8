//! The numbers of one request and how they are sorted.
//!
//! Almost every request holds only 64-bit integers; those stay in a plain
//! `Vec<i64>` and are sorted with `sort_unstable` (ipnsort). On the project's
//! 2-core machines it beat the radix sorts tried (radsort, voracious_sort,
//! radsort on range-reduced `u32` keys) at 1e6 integers: 21-29 ms against
//! 22-51 ms, measured side by side, so no radix sort is used.
//! The first number of any other kind switches the collection to exact
//! [`Number`]s and a stable comparison sort.

use crate::number::Number;

/// Which way to sort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    #[default]
    Asc,
    Desc,
}

/// The numbers of a request, in input order until sorted.
#[derive(Debug, Clone, PartialEq)]
pub struct Numbers {
    values: Values,
    limit: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum Values {
    Ints(Vec<i64>),
    Mixed(Vec<Number>),
}

impl Numbers {
    /// An empty collection that refuses more than `limit` numbers.
    pub fn with_limit(limit: usize) -> Self {
        Numbers {
            values: Values::Ints(Vec::new()),
            limit,
        }
    }

    pub fn len(&self) -> usize {
        match &self.values {
            Values::Ints(v) => v.len(),
            Values::Mixed(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds an `i64`: the hot path of the scanner.
    #[inline]
    pub fn push_int(&mut self, value: i64) -> Result<(), usize> {
        match &mut self.values {
            Values::Ints(ints) if ints.len() < self.limit => {
                ints.push(value);
                Ok(())
            }
            _ => self.push(Number::Int(value)),
        }
    }

    /// Adds a number, or returns the limit when it is already reached.
    pub fn push(&mut self, number: Number) -> Result<(), usize> {
        if self.len() >= self.limit {
            return Err(self.limit);
        }
        match (&mut self.values, number) {
            (Values::Ints(ints), Number::Int(value)) => ints.push(value),
            (Values::Mixed(mixed), number) => mixed.push(number),
            (Values::Ints(ints), number) => {
                let mut mixed: Vec<Number> = ints.drain(..).map(Number::Int).collect();
                mixed.push(number);
                self.values = Values::Mixed(mixed);
            }
        }
        Ok(())
    }

    /// Sorts in the given order. Numerically equal values (`1` and `1.0`)
    /// keep their input order, in both directions.
    pub fn sort(&mut self, order: Order) {
        match &mut self.values {
            Values::Ints(ints) => {
                // Equal integers are indistinguishable, so an unstable sort and
                // a reversal give the same answer as a stable descending sort.
                ints.sort_unstable();
                if order == Order::Desc {
                    ints.reverse();
                }
            }
            // A stable sort of the numbers themselves. Tried and measured
            // slower on a 16 MiB body of 20-digit integers and floats: a
            // comparison on each number's nearest f64 first (140 ms against
            // 116 ms), and an unstable sort of (nearest f64, position) pairs
            // (28 ms) followed by writing the numbers in that order (130 ms:
            // reading them out of order costs a cache and TLB miss each).
            Values::Mixed(mixed) => match order {
                Order::Asc => mixed.sort(),
                Order::Desc => mixed.sort_by(|a, b| b.cmp(a)),
            },
        }
    }
}

impl Numbers {
    /// Appends the numbers as a JSON array, in their current order.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'[');
        let mut first = true;
        let mut separate = |out: &mut Vec<u8>| {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
        };
        match &self.values {
            Values::Ints(ints) => {
                let mut buffer = itoa::Buffer::new();
                for value in ints {
                    separate(out);
                    out.extend_from_slice(buffer.format(*value).as_bytes());
                }
            }
            Values::Mixed(mixed) => {
                for number in mixed {
                    separate(out);
                    number.write_json(out);
                }
            }
        }
        out.push(b']');
    }

    /// The numbers as a JSON array.
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(self.len() * 8 + 2);
        self.write_json(&mut out);
        // Only ASCII digits, signs, '.', 'e', '[', ']' and ',' were written.
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(values: Vec<Number>, order: Order) -> String {
        let mut numbers = Numbers::with_limit(usize::MAX);
        for value in values {
            numbers.push(value).unwrap();
        }
        numbers.sort(order);
        numbers.to_json()
    }

    #[test]
    fn equal_values_keep_input_order_in_both_directions() {
        let values = vec![Number::Float(1.0), Number::Int(2), Number::Int(1)];
        assert_eq!(sorted(values.clone(), Order::Asc), "[1.0,1,2]");
        assert_eq!(sorted(values, Order::Desc), "[2,1.0,1]");
    }

    #[test]
    fn integer_path_sorts_negatives_and_extremes() {
        let mut values: Vec<Number> = (0..2000)
            .map(|i| Number::Int((i * 7919) % 2000 - 1000))
            .collect();
        values.push(Number::Int(i64::MIN));
        values.push(Number::Int(i64::MAX));
        let mut expected: Vec<i64> = values
            .iter()
            .map(|n| match n {
                Number::Int(v) => *v,
                _ => unreachable!(),
            })
            .collect();
        expected.sort();
        assert_eq!(
            sorted(values, Order::Asc),
            serde_json::to_string(&expected).unwrap()
        );
    }

    #[test]
    fn push_refuses_past_the_limit() {
        let mut numbers = Numbers::with_limit(1);
        assert_eq!(numbers.push(Number::Int(1)), Ok(()));
        assert_eq!(numbers.push(Number::Int(2)), Err(1));
    }
}
