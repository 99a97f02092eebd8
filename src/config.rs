//! Settings, read from the environment so that the systemd unit can load them
//! from `/etc/default/sortd`.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// The largest `SORTD_MAX_BODY_BYTES` accepted: 1 GiB.
pub const MAX_BODY_BYTES_LIMIT: u64 = 1 << 30;

/// Every setting sortd has, with its environment variable and default.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `SORTD_LISTEN`: where to listen when systemd passes no socket.
    pub listen: SocketAddr,
    /// `SORTD_MAX_BODY_BYTES`: the largest request body accepted (413 beyond).
    pub max_body_bytes: u64,
    /// `SORTD_MAX_NUMBERS`: the most numbers one request may hold (413 beyond).
    pub max_numbers: usize,
    /// `SORTD_DRAIN_SECS`: how long a shutdown waits for requests in flight.
    pub drain_timeout: Duration,
    /// `SORTD_MAX_INFLIGHT_BYTES`: the request body bytes all requests in
    /// flight may hold together (at least `max_body_bytes`).
    pub max_inflight_bytes: u64,
    /// `SORTD_BUSY_WAIT_SECS`: how long a request waits for that budget
    /// before it is answered 503.
    pub busy_wait: Duration,
    /// `SORTD_IDLE_SECS`: how long a connection may take to send a request's
    /// headers, counted from its previous answer (or from its start) when
    /// it is kept alive; past it, the connection is closed.
    pub idle_timeout: Duration,
    /// `SORTD_TIMEOUT_SECS`: how long a request may take from its headers to
    /// its answer: a body still arriving then gets 408, work still running
    /// is stopped and gets 503.
    pub request_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            max_body_bytes: 16 * 1024 * 1024,
            max_numbers: 1_000_000,
            drain_timeout: Duration::from_secs(10),
            // Four bodies of the largest size at once: well inside the
            // unit's MemoryMax=1G for every body shape.
            max_inflight_bytes: 64 * 1024 * 1024,
            // Under the load balancers' read timeout (2 s), so a busy node's
            // 503 reaches them in time to try another node.
            busy_wait: Duration::from_secs(1),
            // Longer than nginx keeps an idle upstream connection (the
            // site's keepalive_timeout 5s), so nginx closes first and never
            // sends a request on a connection sortd is closing.
            idle_timeout: Duration::from_secs(10),
            // The largest body of the worst shape takes well under a second;
            // nginx in front waits 30 s (a load balancer 2 s, then retries).
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl Config {
    /// The settings as lines of an environment file (`VARIABLE=value`). With
    /// the defaults, `sortd --defaults` prints them; the package's
    /// `/etc/default/sortd` and nginx site are made from that output, so each
    /// default is written here alone.
    pub fn to_env(&self) -> String {
        format!(
            "SORTD_LISTEN={}\nSORTD_MAX_BODY_BYTES={}\nSORTD_MAX_NUMBERS={}\nSORTD_DRAIN_SECS={}\n\
             SORTD_MAX_INFLIGHT_BYTES={}\nSORTD_BUSY_WAIT_SECS={}\nSORTD_IDLE_SECS={}\n\
             SORTD_TIMEOUT_SECS={}\n",
            self.listen,
            self.max_body_bytes,
            self.max_numbers,
            self.drain_timeout.as_secs(),
            self.max_inflight_bytes,
            self.busy_wait.as_secs(),
            self.idle_timeout.as_secs(),
            self.request_timeout.as_secs()
        )
    }

    /// The variables, their meaning and default, as `--help` prints them.
    pub fn environment_help() -> String {
        let defaults = Config::default();
        format!(
            "  SORTD_LISTEN          address:port to listen on when systemd passes no socket
                        (default {})
  SORTD_MAX_BODY_BYTES  largest request body in bytes (default {})
  SORTD_MAX_NUMBERS     most numbers in one request (default {})
  SORTD_DRAIN_SECS      seconds a shutdown waits for requests in flight (default {})
  SORTD_MAX_INFLIGHT_BYTES
                        body bytes all requests in flight may hold together, at
                        least SORTD_MAX_BODY_BYTES (default {})
  SORTD_BUSY_WAIT_SECS  seconds a request waits for that budget before a 503
                        (default {})
  SORTD_IDLE_SECS       seconds a connection may take to send a request's headers,
                        from its start or its previous answer (default {})
  SORTD_TIMEOUT_SECS    seconds a request may take from its headers to its answer:
                        then a body still arriving gets 408, work still running is
                        stopped and gets 503 (default {})
  RUST_LOG              log filter for env_logger (default info)
  LISTEN_FDS            set by systemd socket activation: serve the inherited socket",
            defaults.listen,
            defaults.max_body_bytes,
            defaults.max_numbers,
            defaults.drain_timeout.as_secs(),
            defaults.max_inflight_bytes,
            defaults.busy_wait.as_secs(),
            defaults.idle_timeout.as_secs(),
            defaults.request_timeout.as_secs()
        )
    }
}

/// A setting that is present but unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {}={:?}: expected {}",
            self.variable, self.value, self.expected
        )
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup`; unset or empty variables keep
    /// their defaults.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let defaults = Config::default();
        let positive = |text: &str| text.parse::<u64>().ok().filter(|&n| n > 0);
        let seconds = |text: &str| positive(text).map(Duration::from_secs);
        Config {
            listen: setting(
                &lookup,
                "SORTD_LISTEN",
                "an address and port such as 127.0.0.1:5000 or [::1]:5000",
                |text| text.parse().ok(),
            )?
            .unwrap_or(defaults.listen),
            max_body_bytes: setting(
                &lookup,
                "SORTD_MAX_BODY_BYTES",
                "a positive number of bytes",
                positive,
            )?
            .unwrap_or(defaults.max_body_bytes),
            max_numbers: setting(
                &lookup,
                "SORTD_MAX_NUMBERS",
                "a positive whole number",
                |text| positive(text).and_then(|n| usize::try_from(n).ok()),
            )?
            .unwrap_or(defaults.max_numbers),
            drain_timeout: setting(
                &lookup,
                "SORTD_DRAIN_SECS",
                "a whole number of seconds",
                |text| text.parse().ok().map(Duration::from_secs),
            )?
            .unwrap_or(defaults.drain_timeout),
            max_inflight_bytes: setting(
                &lookup,
                "SORTD_MAX_INFLIGHT_BYTES",
                "a positive number of bytes",
                positive,
            )?
            .unwrap_or(defaults.max_inflight_bytes),
            busy_wait: setting(
                &lookup,
                "SORTD_BUSY_WAIT_SECS",
                "a whole number of seconds",
                |text| text.parse().ok().map(Duration::from_secs),
            )?
            .unwrap_or(defaults.busy_wait),
            idle_timeout: setting(
                &lookup,
                "SORTD_IDLE_SECS",
                "a positive whole number of seconds",
                seconds,
            )?
            .unwrap_or(defaults.idle_timeout),
            request_timeout: setting(
                &lookup,
                "SORTD_TIMEOUT_SECS",
                "a positive whole number of seconds",
                seconds,
            )?
            .unwrap_or(defaults.request_timeout),
        }
        .checked()
    }

    /// Settings that are each fine but wrong together.
    fn checked(self) -> Result<Self, ConfigError> {
        // A body is held in memory whole, and read with 32-bit offsets.
        if self.max_body_bytes > MAX_BODY_BYTES_LIMIT {
            return Err(ConfigError {
                variable: "SORTD_MAX_BODY_BYTES",
                value: self.max_body_bytes.to_string(),
                expected: "at most 1073741824 (1 GiB)",
            });
        }
        if self.max_inflight_bytes < self.max_body_bytes {
            return Err(ConfigError {
                variable: "SORTD_MAX_INFLIGHT_BYTES",
                value: self.max_inflight_bytes.to_string(),
                expected: "at least SORTD_MAX_BODY_BYTES, or a body of the largest size could never be read",
            });
        }
        Ok(self)
    }
}

/// One variable: `None` when unset or blank, an error naming it when unusable.
fn setting<T>(
    lookup: impl Fn(&str) -> Option<String>,
    variable: &'static str,
    expected: &'static str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, ConfigError> {
    match lookup(variable).filter(|value| !value.trim().is_empty()) {
        None => Ok(None),
        Some(value) => match parse(value.trim()) {
            Some(parsed) => Ok(Some(parsed)),
            None => Err(ConfigError {
                variable,
                value,
                expected,
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_lookup(|name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn the_env_lines_read_back_as_the_same_settings() {
        let custom =
            config(&[("SORTD_MAX_BODY_BYTES", "1024"), ("SORTD_DRAIN_SECS", "3")]).unwrap();
        for settings in [Config::default(), custom] {
            let lines = settings.to_env();
            let read = config(
                &lines
                    .lines()
                    .map(|line| line.split_once('=').unwrap())
                    .collect::<Vec<_>>(),
            )
            .unwrap();
            assert_eq!(read, settings, "{lines}");
        }
    }

    #[test]
    fn unset_variables_give_the_defaults() {
        assert_eq!(config(&[]).unwrap(), Config::default());
        assert_eq!(config(&[("SORTD_LISTEN", " ")]).unwrap(), Config::default());
    }

    #[test]
    fn variables_override_the_defaults() {
        let c = config(&[
            ("SORTD_LISTEN", "[::1]:8000"),
            ("SORTD_MAX_BODY_BYTES", "1024"),
            ("SORTD_MAX_NUMBERS", "10"),
            ("SORTD_DRAIN_SECS", "0"),
        ])
        .unwrap();
        assert_eq!(c.listen, "[::1]:8000".parse().unwrap());
        assert_eq!((c.max_body_bytes, c.max_numbers), (1024, 10));
        assert_eq!(c.drain_timeout, Duration::ZERO);
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let error = config(&[("SORTD_MAX_BODY_BYTES", "16M")]).unwrap_err();
        assert_eq!(error.variable, "SORTD_MAX_BODY_BYTES");
        assert!(error.to_string().contains("\"16M\""));
        assert!(config(&[("SORTD_LISTEN", "localhost")]).is_err());
        assert!(config(&[("SORTD_MAX_NUMBERS", "0")]).is_err());
        assert!(config(&[("SORTD_MAX_BODY_BYTES", "1073741825")]).is_err());
        assert!(config(&[
            ("SORTD_MAX_BODY_BYTES", "1073741824"),
            ("SORTD_MAX_INFLIGHT_BYTES", "1073741824")
        ])
        .is_ok());
        // 0 would close every connection before its first request.
        assert_eq!(
            config(&[("SORTD_IDLE_SECS", "0")]).unwrap_err().variable,
            "SORTD_IDLE_SECS"
        );
    }

    #[test]
    fn an_inflight_budget_smaller_than_one_body_is_refused() {
        let error = config(&[
            ("SORTD_MAX_BODY_BYTES", "2048"),
            ("SORTD_MAX_INFLIGHT_BYTES", "1024"),
        ])
        .unwrap_err();
        assert_eq!(error.variable, "SORTD_MAX_INFLIGHT_BYTES");
        assert!(
            error.to_string().contains("SORTD_MAX_BODY_BYTES"),
            "{error}"
        );
        let fits = config(&[
            ("SORTD_MAX_BODY_BYTES", "2048"),
            ("SORTD_MAX_INFLIGHT_BYTES", "2048"),
        ]);
        assert_eq!(fits.unwrap().max_inflight_bytes, 2048);
    }
}
