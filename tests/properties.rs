//! Properties of the parser and sort, checked against an independent model:
//! every number as an exact rational (num-rational), sorted stably.
//! Also a fuzz of arbitrary bytes: parsing never panics.

use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::FromPrimitive;
use proptest::prelude::*;
use sortd::error::ApiError;
use sortd::input::{parse_body, InputError};
use sortd::sort::Order;

/// A generated input number: its text as a client would write it, its exact
/// value, and how sortd must write it back.
#[derive(Debug, Clone)]
struct Case {
    text: String,
    exact: BigRational,
    output: String,
}

fn int_case(text: String) -> Case {
    let value: BigInt = text.parse().unwrap();
    Case {
        output: value.to_string(),
        exact: BigRational::from_integer(value),
        text,
    }
}

fn number() -> impl Strategy<Value = Case> {
    prop_oneof![
        any::<i64>().prop_map(|i| int_case(i.to_string())),
        (-20i64..20).prop_map(|i| int_case(i.to_string())),
        "-?[1-9][0-9]{18,40}".prop_map(int_case),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| Case {
                text: format!("{f:?}"),
                exact: BigRational::from_float(f).unwrap(),
                output: serde_json::to_string(&f).unwrap(),
            }),
        // Floats near integers, where exact comparison matters most.
        (
            -20i64..20,
            prop::sample::select(vec![0.0, 0.5, -0.25, 1e-9])
        )
            .prop_map(|(i, frac)| i as f64 + frac)
            .prop_map(|f| Case {
                text: format!("{f:?}"),
                exact: BigRational::from_f64(f).unwrap(),
                output: serde_json::to_string(&f).unwrap(),
            }),
    ]
}

/// A float at or beyond 2^63 (an integer), of either sign, up to f64::MAX:
/// its exact value has from 19 to 309 digits.
fn big_float() -> impl Strategy<Value = f64> {
    (63u64..1024, 0u64..(1 << 52), any::<bool>()).prop_map(|(exponent, mantissa, negative)| {
        let magnitude = f64::from_bits(((exponent + 1023) << 52) | mantissa);
        if negative {
            -magnitude
        } else {
            magnitude
        }
    })
}

/// How a group of numbers is written into the body.
#[derive(Debug, Clone, Copy)]
enum Form {
    PythonListString,
    NativeArray,
    SingleStrings,
    NativeNumbers,
}

fn form() -> impl Strategy<Value = Form> {
    prop_oneof![
        Just(Form::PythonListString),
        Just(Form::NativeArray),
        Just(Form::SingleStrings),
        Just(Form::NativeNumbers),
    ]
}

/// Writes groups of numbers as one JSON object, each group in its own form.
fn body(groups: &[(Form, Vec<Case>)], trailing_comma: bool) -> String {
    let mut entries = Vec::new();
    for (g, (form, cases)) in groups.iter().enumerate() {
        let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
        match form {
            Form::PythonListString => {
                let comma = if trailing_comma && !texts.is_empty() {
                    ","
                } else {
                    ""
                };
                entries.push(format!("\"g{g}\": \"[ {}{comma} ]\"", texts.join(" ,\\n ")));
            }
            Form::NativeArray => entries.push(format!("\"g{g}\": [{}]", texts.join(", "))),
            Form::SingleStrings => {
                for (i, text) in texts.iter().enumerate() {
                    entries.push(format!("\"g{g}_{i}\": \" {text} \""));
                }
            }
            Form::NativeNumbers => {
                for (i, text) in texts.iter().enumerate() {
                    entries.push(format!("\"g{g}_{i}\": {text}"));
                }
            }
        }
    }
    format!("{{{}}}", entries.join(", "))
}

fn sorted_by_model(mut cases: Vec<Case>, order: Order) -> String {
    // A stable sort: equal values stay in input order, in both directions.
    match order {
        Order::Asc => cases.sort_by(|a, b| a.exact.cmp(&b.exact)),
        Order::Desc => cases.sort_by(|a, b| b.exact.cmp(&a.exact)),
    }
    let outputs: Vec<&str> = cases.iter().map(|c| c.output.as_str()).collect();
    format!("[{}]", outputs.join(","))
}

fn sorted_by_sortd(body: &str, order: Order) -> String {
    let mut numbers = parse_body(body.as_bytes(), usize::MAX)
        .unwrap_or_else(|e| panic!("valid body refused: {e}\n{body}"));
    numbers.sort(order);
    let mut json = Vec::new();
    numbers.write_json(&mut json);
    String::from_utf8(json).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn output_is_the_exact_stable_sort_of_the_input(
        groups in prop::collection::vec((form(), prop::collection::vec(number(), 0..12)), 0..6),
        trailing_comma in any::<bool>(),
        desc in any::<bool>(),
    ) {
        let order = if desc { Order::Desc } else { Order::Asc };
        let body = body(&groups, trailing_comma);
        let all: Vec<Case> = groups.into_iter().flat_map(|(_, cases)| cases).collect();
        prop_assert_eq!(sorted_by_sortd(&body, order), sorted_by_model(all, order), "body {}", body);
    }

    #[test]
    fn big_integers_at_a_floats_exact_value_sort_exactly(
        floats in prop::collection::vec(big_float(), 1..4),
        picks in prop::collection::vec((0usize..4, -2i64..=2, any::<bool>()), 1..24),
        desc in any::<bool>(),
    ) {
        // Each integer is a float's exact value, or one or two away: where
        // the rounded comparison ties and the exact answer must decide.
        let mut cases: Vec<Case> = floats.iter().map(|&f| Case {
            text: format!("{f:?}"),
            exact: BigRational::from_float(f).unwrap(),
            output: serde_json::to_string(&f).unwrap(),
        }).collect();
        for (index, delta, with_float) in picks {
            let f = floats[index % floats.len()];
            let exact = BigRational::from_float(f).unwrap().to_integer() + BigInt::from(delta);
            cases.push(int_case(exact.to_string()));
            if with_float {
                cases.push(cases[index % floats.len()].clone());
            }
        }
        let order = if desc { Order::Desc } else { Order::Asc };
        let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
        let body = format!("[{}]", texts.join(","));
        prop_assert_eq!(sorted_by_sortd(&body, order), sorted_by_model(cases, order), "body {}", body);
    }

    #[test]
    fn many_integers_in_a_top_level_array_sort_exactly(
        values in prop::collection::vec(any::<i64>(), 0..3000),
        desc in any::<bool>(),
    ) {
        let order = if desc { Order::Desc } else { Order::Asc };
        let mut expected = values.clone();
        expected.sort();
        if desc { expected.reverse(); }
        let body = serde_json::to_string(&values).unwrap();
        prop_assert_eq!(sorted_by_sortd(&body, order), serde_json::to_string(&expected).unwrap());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Err(error) = parse_body(&bytes, 1000) {
            client_error(error)?;
        }
    }

    #[test]
    fn arbitrary_number_like_strings_never_panic(text in r#"[\[\]0-9eE+\-.,_ xa\n\\"\u{e9}]{0,40}"#) {
        let body = serde_json::json!({"k": text, "n": [text.clone()]}).to_string();
        if let Err(error) = parse_body(body.as_bytes(), 1000) {
            points_into(&error, &text)?;
            client_error(error)?;
        }
        if let Err(error) = parse_body(format!("[{text}]").as_bytes(), 1000) {
            client_error(error)?;
        }
    }
}

/// A parse error is the client's (a 4xx answer) and says what is wrong.
fn client_error(error: InputError) -> Result<(), TestCaseError> {
    let message = error.to_string();
    let answer = ApiError::from(error);
    prop_assert!(
        answer.status().is_client_error(),
        "{answer:?}: {}",
        answer.status()
    );
    prop_assert!(
        !answer.code().is_empty() && !message.is_empty(),
        "{answer:?}"
    );
    Ok(())
}

/// An invalid value of `{"k": text, "n": [text]}` is named by its key, at a
/// position inside `text`.
fn points_into(error: &InputError, text: &str) -> Result<(), TestCaseError> {
    if let InputError::InvalidValue { key, position, .. } = error {
        prop_assert!(matches!(key.as_deref(), Some("k" | "n")), "{error:?}");
        prop_assert!(*position <= text.chars().count(), "{error:?} in {text:?}");
    }
    Ok(())
}
