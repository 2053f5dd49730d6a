//! Just enough of the Redis protocol (RESP2, over plain TCP) for the readiness checks and this
//! crate's own tests, so that the crate needs no Redis client library: the application picks
//! its own client, and test support should not pin or duplicate it.

use std::io::{BufRead, BufReader, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::time::Duration;

use anyhow::{Context as _, bail};

/// Largest bulk reply accepted; Redis itself caps strings at 512 MB, tests need far less.
const MAX_BULK: usize = 64 << 20;

/// Where to connect and how to log in, from a `redis://[[user]:password@]host[:port][/db]` URL.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) username: Option<Vec<u8>>,
    pub(crate) password: Option<Vec<u8>>,
    pub(crate) db: Option<u32>,
}

impl Target {
    /// Parses a `redis://` URL the way Redis clients read it: the port defaults to 6379, a
    /// password without a user name logs in as the default user, the path is a database index.
    ///
    /// # Errors
    ///
    /// If it is not such a URL; TLS (`rediss://`) and unix sockets are not supported here.
    pub(crate) fn parse(url: &str) -> anyhow::Result<Self> {
        let parsed = url::Url::parse(url).context("not a valid URL")?;
        match parsed.scheme() {
            "redis" => {}
            "rediss" => bail!("TLS (rediss://) is not supported by leadline-testsupport"),
            other => bail!("the URL scheme must be redis://, not {other}://"),
        }
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .context("the URL has no host")?;
        // `Url` keeps the brackets of an IPv6 literal; socket addresses need them off.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .to_owned();
        let username = Some(percent_decode(parsed.username())?).filter(|u| !u.is_empty());
        let password = parsed.password().map(percent_decode).transpose()?;
        let db = match parsed.path().trim_start_matches('/') {
            "" => None,
            index => Some(
                index
                    .parse()
                    .with_context(|| format!("the database index {index:?} is not a number"))?,
            ),
        };
        Ok(Self {
            host,
            port: parsed.port().unwrap_or(6379),
            username,
            password,
            db,
        })
    }
}

/// `%XX` escapes to bytes; URLs carry user names and passwords percent-encoded.
fn percent_decode(text: &str) -> anyhow::Result<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .with_context(|| format!("bad percent escape in {text:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// A reply. Error replies (`-ERR …`) are returned as `Err` by [`Connection::command`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    Status(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// One blocking connection; every read and write is bounded by the timeout it was opened with.
#[derive(Debug)]
pub(crate) struct Connection {
    stream: BufReader<TcpStream>,
}

impl Connection {
    /// Connects to `url` (see [`Target::parse`]), logs in (`AUTH`) if it names a password, and
    /// selects its database if it names one.
    ///
    /// # Errors
    ///
    /// A bad URL, a failed connection (e.g. refused), or an error reply to `AUTH`/`SELECT`.
    pub(crate) fn open(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let target = Target::parse(url)?;
        let addrs = (target.host.as_str(), target.port)
            .to_socket_addrs()
            .with_context(|| format!("resolving {}", target.host))?;
        let mut last_error = None;
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last_error = Some(anyhow::Error::new(e).context(format!("{addr}"))),
            }
        }
        let stream = match (stream, last_error) {
            (Some(stream), _) => stream,
            (None, Some(e)) => return Err(e.context("connecting to Redis")),
            (None, None) => bail!("{} resolves to no address", target.host),
        };
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        let mut conn = Self {
            stream: BufReader::new(stream),
        };
        if let Some(password) = &target.password {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(username) = &target.username {
                args.push(username);
            }
            args.push(password);
            conn.command(&args).context("AUTH")?;
        }
        if let Some(db) = target.db {
            conn.command(&[b"SELECT", db.to_string().as_bytes()])
                .with_context(|| format!("SELECT {db}"))?;
        }
        Ok(conn)
    }

    /// Sends one command and reads its reply.
    ///
    /// # Errors
    ///
    /// I/O errors and timeouts, a malformed reply, or the server's error reply.
    pub(crate) fn command(&mut self, args: &[&[u8]]) -> anyhow::Result<Reply> {
        self.stream
            .get_mut()
            .write_all(&encode(args))
            .context("sending a command to Redis")?;
        read_reply(&mut self.stream)
    }
}

/// `PING` on a new connection to `url`, expecting `PONG`.
///
/// # Errors
///
/// As [`Connection::open`], or any other reply than `PONG` (e.g. `-LOADING` while the server
/// reads its data).
pub(crate) fn ping(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let reply = Connection::open(url, timeout)?.command(&[b"PING"])?;
    anyhow::ensure!(
        reply == Reply::Status("PONG".to_owned()),
        "PING got {reply:?}, not PONG"
    );
    Ok(())
}

/// A command as a RESP array of bulk strings.
fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn read_reply(reader: &mut impl BufRead) -> anyhow::Result<Reply> {
    let mut line = Vec::new();
    reader
        .read_until(b'\n', &mut line)
        .context("reading a reply from Redis")?;
    let Some(line) = line.strip_suffix(b"\r\n") else {
        bail!("Redis closed the connection or sent a line without CRLF");
    };
    let (kind, rest) = line.split_first().context("empty reply line")?;
    let text = String::from_utf8_lossy(rest);
    let length = || -> anyhow::Result<Option<usize>> {
        let n: i64 = text
            .parse()
            .with_context(|| format!("bad length {text:?}"))?;
        Ok(usize::try_from(n).ok())
    };
    match kind {
        b'+' => Ok(Reply::Status(text.into_owned())),
        b'-' => bail!("Redis replied with an error: {text}"),
        b':' => Ok(Reply::Integer(
            text.parse()
                .with_context(|| format!("bad integer {text:?}"))?,
        )),
        b'$' => {
            let Some(n) = length()? else {
                return Ok(Reply::Bulk(None));
            };
            anyhow::ensure!(n <= MAX_BULK, "bulk reply of {n} bytes is too large");
            let mut data = vec![0; n + 2];
            reader
                .read_exact(&mut data)
                .context("reading a bulk reply")?;
            anyhow::ensure!(data.ends_with(b"\r\n"), "bulk reply without CRLF");
            data.truncate(n);
            Ok(Reply::Bulk(Some(data)))
        }
        b'*' => {
            let Some(n) = length()? else {
                return Ok(Reply::Array(None));
            };
            let items = (0..n)
                .map(|_| read_reply(reader))
                .collect::<anyhow::Result<_>>()?;
            Ok(Reply::Array(Some(items)))
        }
        other => bail!("unknown reply type {:?}", char::from(*other)),
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    fn parse(bytes: &[u8]) -> anyhow::Result<Reply> {
        read_reply(&mut &bytes[..])
    }

    #[test]
    fn encodes_commands_as_bulk_arrays() {
        assert_eq!(encode(&[b"PING"]), b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(
            encode(&[b"SET", b"k", b""]),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"
        );
    }

    #[test]
    fn decodes_every_reply_type() {
        assert_eq!(
            parse(b"+PONG\r\n").expect("status"),
            Reply::Status("PONG".into())
        );
        assert_eq!(parse(b":-42\r\n").expect("integer"), Reply::Integer(-42));
        assert_eq!(parse(b"$-1\r\n").expect("nil"), Reply::Bulk(None));
        assert_eq!(
            parse(b"$4\r\na\r\nb\r\n").expect("bulk with CRLF inside"),
            Reply::Bulk(Some(b"a\r\nb".to_vec()))
        );
        assert_eq!(
            parse(b"*2\r\n:1\r\n$-1\r\n").expect("array"),
            Reply::Array(Some(vec![Reply::Integer(1), Reply::Bulk(None)]))
        );
        let err = parse(b"-NOAUTH Authentication required.\r\n").expect_err("error reply");
        assert!(format!("{err}").contains("NOAUTH"), "{err}");
        assert!(parse(b"+PONG").is_err(), "a truncated line is an error");
        assert!(parse(b"$5\r\nab\r\n").is_err(), "a short bulk is an error");
    }

    #[test]
    fn parses_urls_like_redis_clients() {
        let plain = Target::parse("redis://127.0.0.1:7000").expect("plain");
        assert_eq!(
            plain,
            Target {
                host: "127.0.0.1".into(),
                port: 7000,
                username: None,
                password: None,
                db: None
            }
        );
        let full = Target::parse("redis://app:p%40ss%3Aw@cache.internal/3").expect("full");
        assert_eq!(full.host, "cache.internal");
        assert_eq!(full.port, 6379);
        assert_eq!(full.username.as_deref(), Some(&b"app"[..]));
        assert_eq!(full.password.as_deref(), Some(&b"p@ss:w"[..]));
        assert_eq!(full.db, Some(3));
        let default_user = Target::parse("redis://:secret@[::1]:6380/").expect("ipv6");
        assert_eq!(default_user.host, "::1");
        assert_eq!(default_user.username, None);
        assert_eq!(default_user.db, None);
        assert!(Target::parse("rediss://h:6379").is_err());
        assert!(Target::parse("postgres://h:6379").is_err());
        assert!(Target::parse("redis://h:6379/x").is_err());
    }
}
