//! Black-box HTTP tests: the real server on 127.0.0.1:0, spoken to over TCP.

use std::time::Duration;

use serde_json::Value;
use sortd::config::Config;
use sortd::startup::Application;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct TestApp {
    base: String,
    addr: std::net::SocketAddr,
    client: reqwest::Client,
}

async fn spawn_app() -> TestApp {
    spawn_app_with(Config::default()).await
}

async fn spawn_app_with(config: Config) -> TestApp {
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..config
    };
    let app = Application::build(config)
        .await
        .expect("the test server binds");
    let addr = app.local_addr().expect("a TCP address");
    tokio::spawn(app.run_until(std::future::pending()));
    TestApp {
        base: format!("http://{addr}"),
        addr,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    }
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {}", self.text))
    }
}

impl TestApp {
    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("the server answers");
        Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            text: response.text().await.expect("the body arrives"),
        }
    }

    async fn post(&self, path_and_query: &str, body: impl Into<reqwest::Body>) -> Answer {
        let url = format!("{}{path_and_query}", self.base);
        self.send(self.client.post(url).body(body)).await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(self.client.get(format!("{}{path}", self.base)))
            .await
    }
}

/// (body, expected `sorted_list` exactly as text)
#[rustfmt::skip]
const VALID: &[(&str, &str)] = &[
    // The original client's request.
    (r#"{"x": "[1, 4, 15, 10, 7, 90, 50]", "y": "[11, 14, 5]"}"#, "[1,4,5,7,10,11,14,15,50,90]"),
    (r#"{"x1": "5", "x2": "7"}"#, "[5,7]"),
    (r#"{"x1": "[5,3,9]"}"#, "[3,5,9]"),
    (r#"{"x1": "[5,3,9]", "x2": "4", "x3": "-1"}"#, "[-1,3,4,5,9]"),
    (r#"{"a": " -3 ", "b": "+7", "c": "2.5", "d": "1e3"}"#, "[-3,2.5,7,1000.0]"),
    (r#"{"a": "123456789012345678901234567890", "b": "-5"}"#, "[-5,123456789012345678901234567890]"),
    (r#"{"a": "[]"}"#, "[]"),
    (r#"{"a": "[11,14,5,]"}"#, "[5,11,14]"),
    ("{\"a\": \"\\n[ 5 ,\\t3,\\r\\n 9 ,\\n]\\n\"}", "[3,5,9]"),
    (r#"{"a": "[-1.5e-3, 2E2, .5, 5., -0]"}"#, "[-0.0015,0,0.5,5.0,200.0]"),
    (r#"{"x1": 5, "x2": [3, 1]}"#, "[1,3,5]"),
    (r#"{"x1": 2.5, "x2": [1e2, -7]}"#, "[-7,2.5,100.0]"),
    ("[3,1,2]", "[1,2,3]"),
    ("[]", "[]"),
    ("{}", "[]"),
    (r#"{"a": "[1, 99999999999999999999999]"}"#, "[1,99999999999999999999999]"),
    (r#"{"a": [99999999999999999999999, -99999999999999999999999, 0]}"#, "[-99999999999999999999999,0,99999999999999999999999]"),
    // 2^53 + 1 sorts above the float 2^53: nothing is rounded through f64.
    (r#"{"a": "9007199254740993", "b": 9007199254740992.0}"#, "[9007199254740992.0,9007199254740993]"),
    (r#"{"a": "100000000000000000001", "b": "1e20", "c": "99999999999999999999"}"#, "[99999999999999999999,1e+20,100000000000000000001]"),
    // Numerically equal values keep their input order.
    (r#"{"a": "1.0", "b": 1, "c": "[0.0, -0.0]"}"#, "[0.0,-0.0,1.0,1]"),
    (r#"{"a": "1_000", "b": "[2_0, 1_0.5]"}"#, "[10.5,20,1000]"),
    (r#"{"": "2", "ключ": "1", "x y": "[3]"}"#, "[1,2,3]"),
    // A repeated key keeps its last value, as Python's json did.
    (r#"{"a": "1", "a": "9"}"#, "[9]"),
    (r#"{"a": [9223372036854775807, -9223372036854775808, 9223372036854775808]}"#, "[-9223372036854775808,9223372036854775807,9223372036854775808]"),
];

#[tokio::test]
async fn post_valid_inputs_returns_sorted_list() {
    let app = spawn_app().await;
    for (body, expected) in VALID {
        let answer = app.post("/", *body).await;
        assert_eq!(
            answer.status, 200,
            "payload {body} answered {}",
            answer.text
        );
        assert_eq!(
            answer.text,
            format!(r#"{{"sorted_list":{expected}}}"#),
            "payload {body}"
        );
        assert_eq!(
            answer.headers["content-type"], "application/json",
            "payload {body}"
        );
    }
}

#[tokio::test]
async fn post_with_order_desc_returns_descending_and_keeps_ties_in_input_order() {
    let app = spawn_app().await;
    let answer = app
        .post(
            "/?order=desc",
            r#"{"a": "[1, 3.5, 2]", "b": "1.0", "c": 99999999999999999999}"#,
        )
        .await;
    assert_eq!(
        answer.text,
        r#"{"sorted_list":[99999999999999999999,3.5,2,1,1.0]}"#
    );
    let answer = app.post("/?order=asc", "[2,1]").await;
    assert_eq!(answer.text, r#"{"sorted_list":[1,2]}"#);
}

#[tokio::test]
async fn post_accepts_json_whatever_the_content_type() {
    let app = spawn_app().await;
    for content_type in [
        "application/x-www-form-urlencoded", // what `curl -d` sends
        "text/plain",
        "application/json",
        "application/octet-stream",
    ] {
        let request = app
            .client
            .post(&app.base)
            .header("content-type", content_type)
            .body(r#"{"x1":"[5,3,9]","x2":"4"}"#);
        let answer = app.send(request).await;
        assert_eq!(
            answer.text, r#"{"sorted_list":[3,4,5,9]}"#,
            "content type {content_type}"
        );
    }
}

/// (body, code, key, position, words the message must contain)
type InvalidCase = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<u64>,
    &'static str,
);

#[rustfmt::skip]
const INVALID: &[InvalidCase] = &[
    ("", "empty_body", None, None, "empty"),
    (" \n ", "empty_body", None, None, "empty"),
    ("{", "malformed_json", None, None, "line 1 column 1"),
    ("{\"x1\": \"5\",}", "malformed_json", None, None, "trailing comma"),
    ("abc", "malformed_json", None, None, "not valid JSON"),
    (r#"{"x1": NaN}"#, "malformed_json", None, None, "not valid JSON"),
    (r#"{"x1": Infinity}"#, "malformed_json", None, None, "not valid JSON"),
    ("5", "wrong_body_type", None, None, "found a number"),
    (r#""[1,2]""#, "wrong_body_type", None, None, "found a string"),
    ("null", "wrong_body_type", None, None, "found null"),
    (r#"{"x1": "abc"}"#, "invalid_value", Some("x1"), Some(0), "expected a number, found 'a'"),
    (r#"{"x1": "__import__('os')"}"#, "invalid_value", Some("x1"), Some(0), "found '_'"),
    (r#"{"x1": true}"#, "invalid_value", Some("x1"), Some(0), "found a boolean"),
    (r#"{"x1": null}"#, "invalid_value", Some("x1"), Some(0), "found null"),
    (r#"{"x1": {}}"#, "invalid_value", Some("x1"), Some(0), "found an object"),
    (r#"{"x1": ""}"#, "invalid_value", Some("x1"), Some(0), "found the end of the value"),
    (r#"{"x1": "[[1,2],3]"}"#, "invalid_value", Some("x1"), Some(1), "nested lists"),
    (r#"{"x1": [[1,2],3]}"#, "invalid_value", Some("x1"), Some(1), "nested lists"),
    (r#"{"x1": "NaN"}"#, "invalid_value", Some("x1"), Some(0), "found 'N'"),
    (r#"{"x1": "Infinity"}"#, "invalid_value", Some("x1"), Some(0), "found 'I'"),
    (r#"{"x1": "[1, inf]"}"#, "invalid_value", Some("x1"), Some(4), "found 'i'"),
    (r#"{"x1": "1e999"}"#, "invalid_value", Some("x1"), Some(0), "too large for a 64-bit float"),
    (r#"{"x1": "1_"}"#, "invalid_value", Some("x1"), Some(1), "underscore"),
    (r#"{"x1": "1__000"}"#, "invalid_value", Some("x1"), Some(1), "underscore"),
    (r#"{"x1": "0x1F"}"#, "invalid_value", Some("x1"), Some(1), "found 'x'"),
    (r#"{"x1": "1.2.3"}"#, "invalid_value", Some("x1"), Some(3), "found '.'"),
    (r#"{"x1": "--1"}"#, "invalid_value", Some("x1"), Some(1), "found '-'"),
    (r#"{"x1": "[5, 3"}"#, "invalid_value", Some("x1"), Some(5), "found the end of the value"),
    (r#"{"x1": "[5 3]"}"#, "invalid_value", Some("x1"), Some(3), "expected ',' or ']'"),
    (r#"{"x1": "[1,,2]"}"#, "invalid_value", Some("x1"), Some(3), "found ','"),
    (r#"{"x1": "[1, 2] 3"}"#, "invalid_value", Some("x1"), Some(7), "unexpected '3'"),
    (r#"{"ok": "1", "bad": "[1, 2, x]"}"#, "invalid_value", Some("bad"), Some(7), "found 'x'"),
    (r#"{"x1": ["1"]}"#, "invalid_value", Some("x1"), Some(1), "found '\"'"),
    (r#"[1, true]"#, "invalid_value", None, Some(4), "found 't'"),
];

#[tokio::test]
async fn post_invalid_inputs_returns_400_with_what_and_where() {
    let app = spawn_app().await;
    for (body, code, key, position, words) in INVALID {
        let answer = app.post("/", *body).await;
        assert_eq!(
            answer.status, 400,
            "payload {body:?} answered {}",
            answer.text
        );
        let error = &answer.json()["error"];
        assert_eq!(error["status"], 400, "payload {body:?}");
        assert_eq!(error["code"], *code, "payload {body:?}: {error}");
        assert_eq!(error["key"].as_str(), *key, "payload {body:?}: {error}");
        assert_eq!(
            error["position"].as_u64(),
            *position,
            "payload {body:?}: {error}"
        );
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains(words),
            "payload {body:?}: message {message:?} lacks {words:?}"
        );
    }
}

#[tokio::test]
async fn post_with_bad_query_returns_400() {
    let app = spawn_app().await;
    let answer = app.post("/?order=sideways", "[1]").await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["error"]["code"], "bad_query");
}

#[tokio::test]
async fn wrong_method_returns_405_with_allow_and_unknown_path_404() {
    let app = spawn_app().await;
    for (method, path, allow) in [
        ("PUT", "/", "GET, POST"),
        ("DELETE", "/", "GET, POST"),
        ("POST", "/healthz", "GET"),
        ("PATCH", "/metrics", "GET"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let answer = app
            .send(
                app.client
                    .request(method.clone(), format!("{}{path}", app.base)),
            )
            .await;
        assert_eq!(answer.status, 405, "{method} {path}");
        assert_eq!(answer.headers["allow"], allow, "{method} {path}");
        assert_eq!(answer.json()["error"]["code"], "method_not_allowed");
    }
    for path in ["/nope", "/healthz/x", "/sort", "//"] {
        let answer = app.post(path, "[1]").await;
        assert_eq!(answer.status, 404, "POST {path}");
        assert_eq!(answer.json()["error"]["code"], "not_found", "POST {path}");
    }
}

#[tokio::test]
async fn body_over_the_limit_returns_413() {
    let app = spawn_app_with(Config {
        max_body_bytes: 1024,
        ..Config::default()
    })
    .await;
    let just_fits = format!("[{}1]", " ".repeat(1021));
    assert_eq!(app.post("/", just_fits).await.status, 200);
    let answer = app.post("/", format!("[{}1]", " ".repeat(1022))).await;
    assert_eq!(answer.status, 413, "{}", answer.text);
    assert_eq!(answer.json()["error"]["code"], "body_too_large");
}

#[tokio::test]
async fn client_sending_a_too_large_body_without_waiting_reads_the_413() {
    // As Python's urllib does: no `Expect: 100-continue`, the whole body
    // written before the answer is read. Far more than socket buffers hold,
    // so a server that stopped reading would reset the connection.
    let app = spawn_app_with(Config {
        max_body_bytes: 1024,
        ..Config::default()
    })
    .await;
    let body = vec![b' '; 8 * 1024 * 1024];
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), stream.write_all(&body))
        .await
        .expect("the server keeps reading")
        .expect("the whole body is sent without a reset");
    let answer = read_answer(&mut stream, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");
}

/// The first bytes of the server's answer on `stream`, within `wait`.
async fn read_answer(stream: &mut tokio::net::TcpStream, wait: Duration) -> String {
    let mut answer = vec![0; 4096];
    let read = tokio::time::timeout(wait, stream.read(&mut answer))
        .await
        .expect("the server answers in time")
        .unwrap();
    String::from_utf8_lossy(&answer[..read]).into_owned()
}

/// How long after `sent` the server closes the connection (reads EOF or a
/// reset), sending `trickle` one byte at a time every 200 ms meanwhile.
async fn closed_after(
    stream: &mut tokio::net::TcpStream,
    sent: std::time::Instant,
    trickle: &[u8],
) -> Duration {
    let mut trickle = trickle.iter();
    let mut buffer = [0; 4096];
    loop {
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return sent.elapsed(),
            Ok(Ok(_)) => {} // an answer: read on, the connection may stay
            Err(_) => {
                if let Some(byte) = trickle.next() {
                    // A write to a connection closed meanwhile may fail.
                    let _ = stream.write_all(&[*byte]).await;
                }
                assert!(sent.elapsed() < Duration::from_secs(10), "never closed");
            }
        }
    }
}

#[tokio::test]
async fn slow_or_idle_connections_are_closed_after_the_idle_timeout() {
    let app = spawn_app_with(Config {
        idle_timeout: Duration::from_secs(1),
        ..Config::default()
    })
    .await;
    let connect = || tokio::net::TcpStream::connect(app.addr);
    // Connects and sends nothing.
    let mut silent = connect().await.unwrap();
    let took = closed_after(&mut silent, std::time::Instant::now(), b"").await;
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // Slowloris: a byte of the head every 200 ms never gets more time.
    let mut slow = connect().await.unwrap();
    let head = b"POST / HTTP/1.1\r\nHost: test\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let took = closed_after(&mut slow, std::time::Instant::now(), head).await;
    assert!(took < Duration::from_secs(3), "{took:?}");
    // Kept alive after an answer, then idle.
    let mut idle = connect().await.unwrap();
    idle.write_all(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\n[2,1]")
        .await
        .unwrap();
    let answered = std::time::Instant::now();
    let took = closed_after(&mut idle, answered, b"").await;
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // Meanwhile, and after, the server answers as ever.
    assert_eq!(
        app.post("/", "[3,1]").await.text,
        r#"{"sorted_list":[1,3]}"#
    );
}

#[tokio::test]
async fn chunked_body_over_the_limit_returns_413_without_reading_it_all() {
    let app = spawn_app_with(Config {
        max_body_bytes: 1024,
        ..Config::default()
    })
    .await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = "POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    // 2 KiB in chunks, without the terminating chunk: the server must answer anyway.
    for _ in 0..4 {
        let chunk = " ".repeat(512);
        stream
            .write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
            .await
            .unwrap();
    }
    let mut answer = vec![0; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("the server answers before the body ends")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");
}

#[tokio::test]
async fn bodies_past_the_inflight_budget_wait_then_get_503_with_retry_after() {
    let app = spawn_app_with(Config {
        max_body_bytes: 1024 * 1024,
        max_inflight_bytes: 1024 * 1024,
        busy_wait: Duration::from_secs(1),
        ..Config::default()
    })
    .await;
    // A slow client holds the whole budget: its body is announced, not sent.
    let mut slow = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = "POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 1048576\r\n\r\n[1";
    slow.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Another large body waits, then hears it may retry.
    let large = format!("[{}1]", " ".repeat(100 * 1024));
    let started = std::time::Instant::now();
    let answer = app.post("/", large.clone()).await;
    assert_eq!(answer.status, 503, "{}", answer.text);
    assert_eq!(answer.json()["error"]["code"], "busy");
    assert_eq!(answer.headers["retry-after"], "1");
    assert!(started.elapsed() >= Duration::from_millis(900));
    // Small bodies need no budget: they are served at once.
    let started = std::time::Instant::now();
    let answer = app.post("/", "[3, 1, 2]").await;
    assert_eq!(answer.text, r#"{"sorted_list":[1,2,3]}"#);
    assert!(started.elapsed() < Duration::from_millis(500));

    // Once the slow request is gone, its budget is back.
    drop(slow);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.post("/", large).await.text, r#"{"sorted_list":[1]}"#);
}

#[tokio::test]
async fn more_keys_than_the_limit_returns_413() {
    let app = spawn_app_with(Config {
        max_numbers: 3,
        ..Config::default()
    })
    .await;
    assert_eq!(app.post("/", r#"{"a":[],"b":[],"c":[]}"#).await.status, 200);
    // A repeated key is one key.
    assert_eq!(
        app.post("/", r#"{"a":[],"b":[],"c":[],"a":[1]}"#)
            .await
            .status,
        200
    );
    let answer = app.post("/", r#"{"a":[],"b":[],"c":[],"d":[]}"#).await;
    assert_eq!(answer.status, 413, "{}", answer.text);
    assert_eq!(answer.json()["error"]["code"], "too_many_keys");
}

#[tokio::test]
async fn more_numbers_than_the_limit_returns_413() {
    let app = spawn_app_with(Config {
        max_numbers: 5,
        ..Config::default()
    })
    .await;
    assert_eq!(
        app.post("/", r#"{"a": "[1,2,3]", "b": [4, 5]}"#)
            .await
            .status,
        200
    );
    let answer = app
        .post("/", r#"{"a": "[1,2,3]", "b": [4, 5], "c": "6"}"#)
        .await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.json()["error"]["code"], "too_many_numbers");
    assert!(
        answer.text.contains("more than 5 numbers"),
        "{}",
        answer.text
    );
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408_and_frees_its_budget() {
    let app = spawn_app_with(Config {
        request_timeout: Duration::from_secs(1),
        max_inflight_bytes: 16 * 1024 * 1024,
        ..Config::default()
    })
    .await;
    // Announces the largest body, which takes the whole budget, then stalls.
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = "POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 16777216\r\n\r\n[1,";
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_answer(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    // The budget it held is free again: a large body is served at once.
    let body = serde_json::to_string(&(0..100_000).rev().collect::<Vec<i64>>()).unwrap();
    assert_eq!(app.post("/", body).await.status, 200);
}

/// The value of a metric without labels, from the `/metrics` text.
fn metric(metrics: &str, name: &str) -> Option<String> {
    metrics.lines().find_map(|line| {
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .map(str::to_owned)
    })
}

/// Polls `/metrics` until `done` holds, for at most 10 s; returns the text.
async fn metrics_when(app: &TestApp, done: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = app.get("/metrics").await.text;
        if done(&metrics) {
            return metrics;
        }
        assert!(std::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn work_for_a_client_that_went_away_is_stopped() {
    let app = spawn_app().await;
    // Large enough for the blocking pool and for steps that take a while
    // (under the 1,000,000-number limit), sent whole; once its sort is under
    // way, the client leaves.
    let body = serde_json::to_string(&(0..900_000).rev().collect::<Vec<i64>>()).unwrap();
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    metrics_when(&app, |m| {
        metric(m, "sortd_sorts_in_progress").as_deref() == Some("1")
    })
    .await;
    drop(stream);
    // The request is counted abandoned, and its work stops at the next step
    // instead of running to its end.
    let metrics = metrics_when(&app, |m| {
        metric(m, "sortd_http_requests_abandoned_total").as_deref() == Some("1")
            && metric(m, "sortd_sorts_in_progress").as_deref() == Some("0")
    })
    .await;
    assert_eq!(
        metric(&metrics, "sortd_sorts_stopped_total").as_deref(),
        Some("1"),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "sortd_numbers_sorted_total").as_deref(),
        Some("0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn large_request_is_sorted_exactly() {
    let app = spawn_app().await;
    let values: Vec<i64> = (0..200_000i64)
        .map(|i| (i * 2_654_435_761) % 1_000_003 - 500_000)
        .collect();
    let mut expected = values.clone();
    expected.sort();
    let answer = app.post("/", serde_json::to_string(&values).unwrap()).await;
    assert_eq!(answer.status, 200);
    let sorted: Vec<i64> = serde_json::from_value(answer.json()["sorted_list"].clone()).unwrap();
    assert_eq!(sorted, expected);
    // A body of a MiB or more: once no request holds the budget, sortd gives
    // the memory back (each second, for a while), and counts it.
    metrics_when(&app, |m| {
        metric(m, "sortd_memory_trims_total").is_some_and(|n| n != "0")
    })
    .await;
}

#[tokio::test]
async fn get_root_explains_usage() {
    let app = spawn_app().await;
    let answer = app.get("/").await;
    assert_eq!(answer.status, 200);
    let usage = answer.json();
    assert!(usage["usage"].as_str().unwrap().contains("POST /"));
    assert_eq!(usage["limits"]["max_body_bytes"], 16 * 1024 * 1024);
    // The examples in the usage document are true.
    for example in usage["examples"].as_array().unwrap() {
        let answer = app.post("/", example["request"].to_string()).await;
        assert_eq!(
            answer.json(),
            example["response"],
            "usage example {example}"
        );
    }
}

#[tokio::test]
async fn healthz_answers_status_and_the_version_in_a_header_only() {
    let app = spawn_app().await;
    let answer = app.get("/healthz").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["x-sortd-version"], sortd::VERSION);
    // Only the header, which a load balancer can hide, names the build.
    assert_eq!(answer.json(), serde_json::json!({"status": "ok"}));
    assert!(!app.get("/").await.text.contains(sortd::VERSION));
}

#[tokio::test]
async fn metrics_count_requests_numbers_and_latency() {
    let app = spawn_app().await;
    app.post("/", r#"{"x1": "[5,3,9]", "x2": "4"}"#).await;
    app.post("/", r#"{"x1": "abc"}"#).await;
    app.get("/nope").await;
    app.get("/healthz").await;
    // Counted once answered: the next scrape shows this one.
    app.get("/metrics").await;
    let answer = app.get("/metrics").await;
    assert_eq!(answer.status, 200);
    assert!(answer.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = answer.text;
    for line in [
        r#"sortd_http_requests_total{route="/",method="POST",status="200"} 1"#,
        r#"sortd_http_requests_total{route="/",method="POST",status="400"} 1"#,
        r#"sortd_http_requests_total{route="unmatched",method="GET",status="404"} 1"#,
        r#"sortd_http_requests_total{route="/healthz",method="GET",status="200"} 1"#,
        r#"sortd_http_requests_total{route="/metrics",method="GET",status="200"} 1"#,
        "sortd_numbers_sorted_total 4",
        r#"sortd_http_request_duration_seconds_count{route="/"} 2"#,
        // The metrics request itself is in flight while it is encoded.
        "sortd_http_requests_in_flight 1",
        // The process's, under the names Prometheus's client libraries use.
        "# TYPE process_resident_memory_bytes gauge",
        "# TYPE process_start_time_seconds gauge",
    ] {
        assert!(text.contains(line), "metrics lack {line:?}:\n{text}");
    }
    let value = |name: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap();
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    // Read at each scrape: at least the binary's own pages.
    assert!(value("process_resident_memory_bytes") > 1e6, "{text}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = value("process_start_time_seconds");
    assert!(
        started <= now && started > now - 600.0,
        "{started} vs {now}"
    );
}
