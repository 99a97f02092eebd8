//! Settings, read from the environment so that the systemd unit can load them
//! from `/etc/default/sortd`.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// The largest `SORTD_MAX_BODY_BYTES` accepted: 1 GiB.
pub const MAX_BODY_BYTES_LIMIT: u64 = 1 << 30;

/// Declares each setting once: its field and type, its variable and what it
/// means, its default, what a value must be, and how a value is read and
/// written back. `Config`, its `Default`, `from_lookup`, `to_env` and
/// `--help` all come from this one list.
macro_rules! settings {
    ($(
        $(#[$why:meta])*
        $field:ident: $type:ty, $variable:literal, $meaning:literal,
            default $default:expr, expected $expected:literal, read $read:expr, write $write:expr;
    )*) => {
        /// Every setting sortd has, with its environment variable and default.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Config {
            $(
                #[doc = concat!("`", $variable, "`: ", $meaning, ".")]
                $(#[$why])*
                pub $field: $type,
            )*
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $( $field: $default, )* }
            }
        }

        impl Config {
            /// Each setting's variable, meaning and value, in the list's order.
            fn variables(&self) -> Vec<(&'static str, &'static str, String)> {
                vec![$( ($variable, $meaning, ($write)(&self.$field)) ),*]
            }

            /// Reads the settings through `lookup`; unset or empty variables
            /// keep their defaults.
            pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
                let defaults = Config::default();
                Config {
                    $( $field: setting(&lookup, $variable, $expected, $read)?.unwrap_or(defaults.$field), )*
                }
                .checked()
            }
        }
    };
}

settings! {
    listen: SocketAddr, "SORTD_LISTEN", "address:port to listen on when systemd passes no socket",
        default SocketAddr::from(([127, 0, 0, 1], 5000)),
        expected "an address and port such as 127.0.0.1:5000 or [::1]:5000",
        read |text: &str| text.parse().ok(), write SocketAddr::to_string;
    max_body_bytes: u64, "SORTD_MAX_BODY_BYTES", "largest request body in bytes, 413 beyond",
        default 16 * 1024 * 1024,
        expected "a positive number of bytes", read positive, write u64::to_string;
    max_numbers: usize, "SORTD_MAX_NUMBERS",
        "most numbers in one request, and most keys in its object, 413 beyond",
        default 1_000_000,
        expected "a positive whole number",
        read |text: &str| positive(text).and_then(|n| usize::try_from(n).ok()), write usize::to_string;
    drain_timeout: Duration, "SORTD_DRAIN_SECS", "seconds a shutdown waits for requests in flight",
        default Duration::from_secs(10),
        expected "a whole number of seconds", read whole_seconds, write seconds;
    /// Four bodies of the largest size at once: well inside the unit's
    /// MemoryMax=1G for every body shape.
    max_inflight_bytes: u64, "SORTD_MAX_INFLIGHT_BYTES",
        "body bytes all requests in flight may hold together, at least SORTD_MAX_BODY_BYTES",
        default 64 * 1024 * 1024,
        expected "a positive number of bytes", read positive, write u64::to_string;
    /// Under the load balancers' read timeout (lb_read_timeout, in the lb
    /// role's defaults), so a busy node's 503 reaches them in time to try
    /// another node.
    busy_wait: Duration, "SORTD_BUSY_WAIT_SECS", "seconds a request waits for that budget before a 503",
        default Duration::from_secs(1),
        expected "a whole number of seconds", read whole_seconds, write seconds;
    /// Longer than nginx keeps an idle upstream connection (the package
    /// site's keepalive_timeout), so nginx closes first and never sends a
    /// request on a connection sortd is closing.
    idle_timeout: Duration, "SORTD_IDLE_SECS",
        "seconds a connection may take to send a request's headers, from its start or its previous answer",
        default Duration::from_secs(10),
        expected "a positive whole number of seconds", read positive_seconds, write seconds;
    /// The largest body of the worst shape takes well under a second; nginx
    /// in front waits longer (the site's proxy_read_timeout).
    request_timeout: Duration, "SORTD_TIMEOUT_SECS",
        "seconds a request may take from its headers to its answer: then a body still arriving gets 408, \
         work still running is stopped and gets 503",
        default Duration::from_secs(10),
        expected "a positive whole number of seconds", read positive_seconds, write seconds;
}

fn positive(text: &str) -> Option<u64> {
    text.parse::<u64>().ok().filter(|&n| n > 0)
}

fn whole_seconds(text: &str) -> Option<Duration> {
    text.parse().ok().map(Duration::from_secs)
}

fn positive_seconds(text: &str) -> Option<Duration> {
    positive(text).map(Duration::from_secs)
}

fn seconds(duration: &Duration) -> String {
    duration.as_secs().to_string()
}

impl Config {
    /// The settings as an environment file: each setting's meaning as a
    /// comment, then `VARIABLE=value`. With the defaults, `sortd --defaults`
    /// prints it; the package's `/etc/default/sortd`, its man page's
    /// ENVIRONMENT and its nginx site are made from that output, so each
    /// setting is described here alone.
    pub fn to_env(&self) -> String {
        self.variables()
            .iter()
            .map(|(variable, meaning, value)| {
                let comment = fill(String::from("# "), "# ", meaning.split_whitespace(), 78);
                format!("{}\n{variable}={value}\n", comment.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The variables, their meaning and default, as `--help` prints them:
    /// the variable in a column of 22, its meaning wrapped beside it.
    pub fn environment_help() -> String {
        let others = [
            (
                "RUST_LOG",
                "log filter for env_logger",
                Some("info".to_string()),
            ),
            (
                "LISTEN_FDS",
                "set by systemd socket activation: serve the inherited socket",
                None,
            ),
        ];
        let settings = Config::default().variables().into_iter();
        let described =
            settings.map(|(variable, meaning, default)| (variable, meaning, Some(default)));
        let indent = " ".repeat(24);
        let mut lines = Vec::new();
        for (variable, meaning, default) in described.chain(others) {
            let first = if variable.len() < 22 {
                format!("  {variable:<22}")
            } else {
                lines.push(format!("  {variable}"));
                indent.clone()
            };
            // "(default ...)" stays whole, on one line.
            let default = default.map(|value| format!("(default {value})"));
            let words = meaning.split_whitespace().chain(default.as_deref());
            lines.extend(fill(first, &indent, words, 80));
        }
        lines.join("\n")
    }
}

/// `words` filled into lines of at most `width` columns (a longer word gets
/// a line of its own): the first line starts with `first`, the others with
/// `indent`, each then with as many words as fit, separated by spaces.
fn fill<'a>(
    first: String,
    indent: &str,
    words: impl Iterator<Item = &'a str>,
    width: usize,
) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = first;
    let mut start = line.len();
    for word in words {
        if line.len() > start && line.len() + 1 + word.len() > width {
            lines.push(std::mem::replace(&mut line, indent.to_owned()));
            start = indent.len();
        }
        if line.len() > start {
            line.push(' ');
        }
        line.push_str(word);
    }
    lines.push(line);
    lines
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
                    .filter(|line| !line.is_empty() && !line.starts_with('#'))
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

    /// The seconds of `name`'s first `name VALUEs` (nginx) or `name: VALUEs`
    /// (YAML) in `text`.
    fn seconds_of(text: &str, name: &str) -> u64 {
        let at = text
            .find(&format!("{name} "))
            .or_else(|| text.find(&format!("{name}: ")));
        let rest = &text[at.unwrap_or_else(|| panic!("{name} not found")) + name.len() + 1..];
        let value = rest
            .trim_start_matches([' ', ':'])
            .split(['s', ';', '\n'])
            .next()
            .unwrap();
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}: {value:?} is not seconds"))
    }

    /// The defaults' comments name the timeouts they are set against, which
    /// the package's nginx site and the lb role own: these relations hold.
    #[test]
    fn the_timeouts_fit_the_ones_of_nginx_in_front() {
        let site = include_str!("../debian/nginx-site.in");
        let lb = include_str!("../ansible/roles/lb/defaults/main.yaml");
        let defaults = Config::default();
        assert!(defaults.busy_wait.as_secs() < seconds_of(lb, "lb_read_timeout"));
        assert!(defaults.idle_timeout.as_secs() > seconds_of(site, "keepalive_timeout"));
        assert!(defaults.request_timeout.as_secs() < seconds_of(site, "proxy_read_timeout"));
    }

    /// `--help`: each variable at column 2, its meaning and "(default X)"
    /// from column 24 (a variable too long for its column alone on its
    /// line), filled within 80 columns, no word lost or split.
    #[test]
    fn the_help_fills_each_meaning_beside_its_variable_within_80_columns() {
        let help = Config::environment_help();
        let mut entries: Vec<(String, String)> = Vec::new();
        let mut previous = "";
        for line in help.lines() {
            assert!(line.len() <= 80, "{line}");
            let text = if line.starts_with(&" ".repeat(24)) {
                // The line's first word, or its whole "(default X)".
                let trimmed = line.trim();
                let first = match trimmed.strip_prefix("(default ") {
                    Some(rest) => {
                        &trimmed[..trimmed.len() - rest.len() + rest.find(')').unwrap() + 1]
                    }
                    None => trimmed.split(' ').next().unwrap(),
                };
                assert!(
                    previous.len() + 1 + first.len() > 80 || entries.last().unwrap().1.is_empty(),
                    "{previous}\n{line}"
                );
                line.trim()
            } else {
                let variable = line.trim_start().split(' ').next().unwrap();
                assert_eq!(line.find(variable), Some(2), "{line}");
                entries.push((variable.to_string(), String::new()));
                match variable.len() {
                    // A variable that fits its column has its meaning beside it.
                    ..22 => line.get(24..).filter(|text| !text.is_empty()).unwrap(),
                    _ => line.get(2 + variable.len()..).unwrap(),
                }
            };
            assert!(!text.starts_with(' '), "{line}");
            let entry = &mut entries.last_mut().unwrap().1;
            if !entry.is_empty() && !text.is_empty() {
                entry.push(' ');
            }
            entry.push_str(text);
            previous = line;
        }
        let settings: Vec<(String, String)> = Config::default()
            .variables()
            .into_iter()
            .map(|(variable, meaning, default)| {
                (
                    variable.to_string(),
                    format!("{meaning} (default {default})"),
                )
            })
            .collect();
        assert_eq!(entries[..settings.len()], settings[..], "{help}");
        let others: Vec<&str> = entries[settings.len()..]
            .iter()
            .map(|(v, _)| v.as_str())
            .collect();
        assert_eq!(others, ["RUST_LOG", "LISTEN_FDS"], "{help}");
        assert!(
            help.lines().all(|line| !line.ends_with("(default")),
            "{help}"
        );
    }
}
