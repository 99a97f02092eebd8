//! The numbers of one request and how they are sorted.
//!
//! Almost every request holds only 64-bit integers; those stay in a plain
//! `Vec<i64>` and are sorted with `sort_unstable` (ipnsort), which beat the
//! radix sorts tried (radsort, voracious_sort, radsort on range-reduced
//! `u32` keys) at 1e6 integers, measured side by side, so no radix sort is
//! used.
//!
//! The first number of any other kind splits the collection by kind
//! ([`Kinds`]): each kind is sorted on its own, with its numbers' input
//! positions, and the kinds are merged as the answer is written: a stable
//! sort of one `Vec` of 32-byte [`Number`]s was several times slower on
//! large bodies of mixed kinds, while per kind the values are compared as
//! machine numbers and moved in 16 bytes (32 for 128-bit integers).
//! `bench/attack.py` times the mixed bodies against plain integers.

use std::cmp::Ordering;

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
#[derive(Debug, Clone)]
pub struct Numbers {
    values: Values,
    limit: usize,
}

#[derive(Debug, Clone)]
enum Values {
    Ints(Vec<i64>),
    Kinds(Box<Kinds>),
}

/// Numbers of several kinds, each with its position in the input; once
/// sorted (`order` set), each kind by (value, position) in that order.
#[derive(Debug, Clone, Default)]
struct Kinds {
    ints: Vec<(i64, u32)>,
    wides: Vec<(i128, u32)>,
    /// Floats by their bits (never NaN).
    floats: Vec<(u64, u32)>,
    /// Integers past `i128`, kept as `Number::Big`.
    bigs: Vec<(Number, u32)>,
    order: Option<Order>,
}

impl Numbers {
    /// An empty collection that refuses more than `limit` numbers (at most
    /// `u32::MAX`: positions are 32-bit).
    pub fn with_limit(limit: usize) -> Self {
        Numbers {
            values: Values::Ints(Vec::new()),
            limit: limit.min(u32::MAX as usize),
        }
    }

    /// How many numbers there are.
    pub fn count(&self) -> usize {
        match &self.values {
            Values::Ints(v) => v.len(),
            Values::Kinds(k) => k.ints.len() + k.wides.len() + k.floats.len() + k.bigs.len(),
        }
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
        let at = self.count();
        if at >= self.limit {
            return Err(self.limit);
        }
        // Below the limit, so below u32::MAX.
        let at = at as u32;
        let kinds = match &mut self.values {
            Values::Ints(ints) => match number {
                Number::Int(value) => {
                    ints.push(value);
                    return Ok(());
                }
                _ => {
                    let ints = std::mem::take(ints).into_iter().zip(0u32..).collect();
                    self.values = Values::Kinds(Box::new(Kinds {
                        ints,
                        ..Kinds::default()
                    }));
                    match &mut self.values {
                        Values::Kinds(kinds) => kinds,
                        Values::Ints(_) => unreachable!("just replaced"),
                    }
                }
            },
            Values::Kinds(kinds) => kinds,
        };
        match number {
            Number::Int(value) => kinds.ints.push((value, at)),
            Number::Wide(value) => kinds.wides.push((value, at)),
            Number::Float(value) => kinds.floats.push((value.to_bits(), at)),
            big @ Number::Big(_) => kinds.bigs.push((big, at)),
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
            Values::Kinds(kinds) => kinds.sort(order),
        }
    }
}

/// Orders two (value, position) pairs: by value in `order`, then by
/// position, so that equal values keep their input order either way.
fn by<T>(
    order: Order,
    cmp: impl Fn(&T, &T) -> Ordering,
) -> impl Fn(&(T, u32), &(T, u32)) -> Ordering {
    move |a, b| {
        let values = cmp(&a.0, &b.0);
        match order {
            Order::Asc => values,
            Order::Desc => values.reverse(),
        }
        .then(a.1.cmp(&b.1))
    }
}

/// A float's bits as a key whose unsigned order is the floats' numeric
/// order, with -0.0 and 0.0 the same (they are equal numbers).
fn float_key(bits: u64) -> u64 {
    let bits = if f64::from_bits(bits) == 0.0 { 0 } else { bits };
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    }
}

impl Kinds {
    fn sort(&mut self, order: Order) {
        self.order = Some(order);
        // (value, position) pairs are all distinct, so unstable sorts are exact.
        self.ints.sort_unstable_by(by(order, i64::cmp));
        self.wides.sort_unstable_by(by(order, i128::cmp));
        self.floats.sort_unstable_by(by(order, |a: &u64, b: &u64| {
            float_key(*a).cmp(&float_key(*b))
        }));
        self.bigs.sort_unstable_by(by(order, Number::cmp));
    }

    /// Calls `write` on each number in order: a merge of the kinds, taking
    /// at each step the head that comes first by value in the sorted order,
    /// then by input position (before sorting: by input position alone).
    fn merged(&self, mut write: impl FnMut(&Number)) {
        let mut at = [0usize; 4];
        let head = |kind: usize, i: usize| -> Option<(Number, u32)> {
            match kind {
                0 => self.ints.get(i).map(|&(v, p)| (Number::Int(v), p)),
                1 => self.wides.get(i).map(|&(v, p)| (Number::Wide(v), p)),
                2 => self
                    .floats
                    .get(i)
                    .map(|&(v, p)| (Number::Float(f64::from_bits(v)), p)),
                _ => None,
            }
        };
        let mut heads: [Option<(Number, u32)>; 3] = [head(0, 0), head(1, 0), head(2, 0)];
        loop {
            let big = self.bigs.get(at[3]);
            let mut best: Option<(usize, &Number, u32)> = big.map(|(n, p)| (3, n, *p));
            for (kind, current) in heads.iter().enumerate() {
                if let Some((number, position)) = current {
                    let first = match best {
                        None => true,
                        Some((_, other, other_position)) => {
                            let values = match self.order {
                                None => Ordering::Equal,
                                Some(Order::Asc) => number.cmp(other),
                                Some(Order::Desc) => other.cmp(number),
                            };
                            values.then(position.cmp(&other_position)) == Ordering::Less
                        }
                    };
                    if first {
                        best = Some((kind, number, *position));
                    }
                }
            }
            let Some((kind, number, _)) = best else {
                return;
            };
            write(number);
            at[kind] += 1;
            if kind < 3 {
                heads[kind] = head(kind, at[kind]);
            }
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
            Values::Kinds(kinds) => kinds.merged(|number| {
                separate(out);
                number.write_json(out);
            }),
        }
        out.push(b']');
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn numbers_count_what_was_added() {
        let mut numbers = Numbers::with_limit(10);
        assert_eq!(numbers.count(), 0);
        numbers.push(Number::Int(1)).unwrap();
        numbers.push(Number::Float(0.5)).unwrap();
        assert_eq!(numbers.count(), 2);
    }

    /// The numbers as the JSON array that answers write.
    pub(crate) fn json(numbers: &Numbers) -> String {
        let mut out = Vec::new();
        numbers.write_json(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn sorted(values: Vec<Number>, order: Order) -> String {
        let mut numbers = Numbers::with_limit(usize::MAX);
        for value in values {
            numbers.push(value).unwrap();
        }
        numbers.sort(order);
        json(&numbers)
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
