//! The `sortd` process as systemd runs it: flags, settings from the
//! environment, socket activation and graceful shutdown on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SORTD: &str = env!("CARGO_BIN_EXE_sortd");

fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(SORTD)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("sortd runs")
}

#[test]
fn version_and_help_print_and_exit_zero() {
    let version = run(&["--version"], &[]);
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("sortd {}", sortd::VERSION)
    );
    let help = run(&["--help"], &[]);
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for variable in [
        "SORTD_LISTEN",
        "SORTD_MAX_BODY_BYTES",
        "SORTD_MAX_NUMBERS",
        "RUST_LOG",
    ] {
        assert!(help.contains(variable), "--help lacks {variable}");
    }
}

#[test]
fn defaults_print_the_default_settings_as_an_environment_file() {
    let defaults = run(&["--defaults"], &[]);
    assert!(defaults.status.success());
    let text = String::from_utf8_lossy(&defaults.stdout);
    assert!(
        text.lines()
            .any(|line| line == "SORTD_MAX_BODY_BYTES=16777216"),
        "{text}"
    );
    // Each setting of --help is there, after its meaning as a comment (the
    // man page and /etc/default/sortd are made from them), and every line
    // is a comment, a blank between settings, or an assignment.
    let help = String::from_utf8_lossy(&run(&["--help"], &[]).stdout).into_owned();
    let settings: Vec<&str> = help
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|word| word.starts_with("SORTD_"))
        .collect();
    assert!(settings.len() >= 8, "{help}");
    let lines: Vec<&str> = text.lines().collect();
    for variable in settings {
        let at = lines
            .iter()
            .position(|line| line.starts_with(&format!("{variable}=")))
            .unwrap_or_else(|| panic!("--defaults lacks {variable}: {text}"));
        assert!(
            at > 0 && lines[at - 1].starts_with("# "),
            "{variable} has no meaning above it: {text}"
        );
    }
    assert!(lines.iter().all(|line| line.is_empty()
        || line.starts_with("# ")
        || line
            .split_once('=')
            .is_some_and(|(name, _)| name.starts_with("SORTD_"))));
    // Whatever the environment says, --defaults prints the built-in ones.
    let overridden = run(&["--defaults"], &[("SORTD_MAX_BODY_BYTES", "1024")]);
    assert_eq!(overridden.stdout, defaults.stdout);
}

#[test]
fn invalid_settings_exit_2_with_a_clear_message_and_no_panic() {
    for (variable, value) in [
        ("SORTD_MAX_BODY_BYTES", "16M"),
        ("SORTD_MAX_NUMBERS", "-1"),
        ("SORTD_LISTEN", "localhost"),
        ("SORTD_DRAIN_SECS", "soon"),
    ] {
        let output = run(&[], &[(variable, value)]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{variable}={value}: {stderr}"
        );
        assert!(
            stderr.contains(variable) && stderr.contains(value),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let output = run(&["--frobnicate"], &[]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn busy_address_exits_1_with_a_clear_message() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = run(&[], &[("SORTD_LISTEN", &addr)]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}

/// A running sortd whose log is read until it says where it listens.
struct Server {
    child: Child,
    addr: String,
    log: BufReader<std::process::ChildStderr>,
}

impl Server {
    fn start(mut command: Command) -> Server {
        let mut child = command
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("sortd starts");
        let log = BufReader::new(child.stderr.take().unwrap());
        // From here on, Drop kills and reaps the process whatever happens.
        let mut server = Server {
            child,
            addr: String::new(),
            log,
        };
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                server.log.read_line(&mut line).unwrap() > 0,
                "sortd exited before listening"
            );
            if let Some((_, rest)) = line.split_once("listening on http://") {
                // Started without systemd: it says where its socket came from.
                assert!(rest.trim_end().ends_with("(SORTD_LISTEN)"), "{line}");
                server.addr = rest.split_whitespace().next().unwrap().to_owned();
                return server;
            }
        }
    }

    /// Waits for the exit and returns the status and the rest of the log.
    fn wait(&mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().unwrap();
        let mut rest = String::new();
        self.log.read_to_string(&mut rest).unwrap();
        (status, rest)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn post(addr: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_then_exits_zero() {
    let mut command = Command::new(SORTD);
    command.env("SORTD_LISTEN", "127.0.0.1:0");
    let mut server = Server::start(command);
    assert!(post(&server.addr, "[2,1]").ends_with(r#"{"sorted_list":[1,2]}"#));

    // A request whose body is still arriving when SIGTERM comes.
    let body = r#"{"x1":"[5,3,9]","x2":"4"}"#;
    let mut slow = TcpStream::connect(&server.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        slow,
        "POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        &body[..10]
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(Duration::from_millis(200));
    slow.write_all(&body.as_bytes()[10..]).unwrap();
    let mut answer = String::new();
    slow.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(r#"{"sorted_list":[3,4,5,9]}"#), "{answer}");

    let (status, log) = server.wait();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("shutting down") && log.contains("stopped"),
        "{log}"
    );
    // Each request's access line: method, path, status, the answer's bytes.
    assert!(
        log.contains("POST / 200 21B ") && log.contains("POST / 200 25B "),
        "{log}"
    );
    assert!(
        TcpStream::connect(&server.addr).is_err(),
        "still listening after exit"
    );
}

#[test]
fn sigterm_waits_for_a_stuck_request_no_longer_than_the_drain_time() {
    let mut command = Command::new(SORTD);
    command.envs([
        ("SORTD_LISTEN", "127.0.0.1:0"),
        ("SORTD_DRAIN_SECS", "2"),
        ("SORTD_TIMEOUT_SECS", "60"),
        ("SORTD_IDLE_SECS", "60"),
    ]);
    let mut server = Server::start(command);
    // A body that stops arriving: the request stays in flight.
    let mut stuck = TcpStream::connect(&server.addr).unwrap();
    stuck
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stuck,
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n[1,"
    )
    .unwrap();
    // Once sortd has the request (a second one answered on another
    // connection shows it serves), SIGTERM.
    assert!(post(&server.addr, "[2,1]").ends_with(r#"{"sorted_list":[1,2]}"#));
    let pid = server.child.id().to_string();
    let sent = std::time::Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let (status, log) = server.wait();
    let took = sent.elapsed();
    // It waited for the request (the drain), but not for the request's own
    // 60 s timeout: the drain time, 2 s, bounds the exit.
    assert!(status.success(), "{log}");
    assert!(log.contains("drain time over"), "{log}");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(30),
        "exited {took:?} after SIGTERM; {log}"
    );
    // The stuck client is told by the connection's close, not left hanging.
    let mut rest = Vec::new();
    assert!(stuck.read_to_end(&mut rest).is_ok(), "connection left open");
}

/// Sends SIGTERM to a systemd-socket-activate (which exec'd sortd), waits
/// for it and returns what it logged.
fn terminate_and_read_log(mut child: Child) -> String {
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    child.wait().unwrap();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    log
}

#[test]
fn serves_a_socket_passed_by_systemd() {
    // systemd-socket-activate binds the port and starts sortd with LISTEN_FDS
    // on the first connection, as systemd does with sortd.socket.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new("systemd-socket-activate")
        .args(["-l", &addr, "-E", "RUST_LOG=", SORTD])
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-socket-activate runs (package systemd)");
    let mut answer = String::new();
    for _ in 0..50 {
        if TcpStream::connect(&addr).is_ok() {
            answer = post(&addr, "[3,1,2]");
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = terminate_and_read_log(child);
    assert!(
        answer.ends_with(r#"{"sorted_list":[1,2,3]}"#),
        "answer {answer:?}, log {log}"
    );
    // Also shows that a blank RUST_LOG keeps the default level, info.
    assert!(log.contains("(socket from systemd)"), "{log}");
}

#[test]
fn serves_a_unix_socket_passed_by_systemd() {
    // The package's sortd.socket is a unix socket; nginx on the host uses it.
    let dir = std::env::temp_dir().join(format!("sortd-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sortd.sock");
    let child = Command::new("systemd-socket-activate")
        .args(["-l", path.to_str().unwrap(), "-E", "RUST_LOG=info", SORTD])
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-socket-activate runs (package systemd)");
    let mut answer = String::new();
    for _ in 0..50 {
        if let Ok(mut stream) = UnixStream::connect(&path) {
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let body = "[3,1,2]";
            write!(
                stream,
                "POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            stream.read_to_string(&mut answer).unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = terminate_and_read_log(child);
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        answer.ends_with(r#"{"sorted_list":[1,2,3]}"#),
        "answer {answer:?}, log {log}"
    );
    assert!(
        log.contains(&format!("listening on unix:{}", path.display())),
        "{log}"
    );
}

#[test]
fn pings_systemds_watchdog_within_every_watchdog_interval() {
    // systemd restarts a unit with WatchdogSec= that goes a whole interval
    // without "WATCHDOG=1" on its notify socket; sortd pings twice as often.
    let dir = std::env::temp_dir().join(format!("sortd-watchdog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify");
    let _ = std::fs::remove_file(&path);
    let notify = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let interval = Duration::from_secs(2);
    let mut command = Command::new(SORTD);
    command
        .env("SORTD_LISTEN", "127.0.0.1:0")
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", interval.as_micros().to_string());
    let _server = Server::start(command);
    let mut pings = Vec::new();
    let mut buffer = [0u8; 256];
    while pings.len() < 4 {
        let size = notify
            .recv(&mut buffer)
            .expect("a notification within 10 s");
        let message = String::from_utf8_lossy(&buffer[..size]).into_owned();
        if message.lines().any(|line| line == "WATCHDOG=1") {
            pings.push(std::time::Instant::now());
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    let gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|gap| *gap < interval), "{gaps:?}");
}
