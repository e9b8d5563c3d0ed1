//! `redis-server` on free ports: one standalone server or a small cluster,
//! started by the tests and stopped on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{find_executable, free_port};

fn redis_server() -> PathBuf {
    find_executable("redis-server", "REDIS_SERVER")
        .expect("redis-server not found: run ./scripts/test.sh (it installs it) or apt-get install redis-server")
}

/// A running `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    password: Option<String>,
    extra: Vec<String>,
    dir: tempfile::TempDir,
    tls: bool,
}

impl RedisServer {
    /// Starts a server without persistence on a free port.
    pub fn start() -> Self {
        Self::start_with(None, Vec::new())
    }

    /// Starts a server with extra `redis-server` arguments (`--appendonly yes`
    /// keeps data across [`RedisServer::restart`]).
    pub fn start_with_args(args: &[&str]) -> Self {
        Self::start_with(None, args.iter().map(|a| (*a).to_owned()).collect())
    }

    /// Starts a server that requires `password` (AUTH).
    pub fn start_with_password(password: &str) -> Self {
        Self::start_with(Some(password.to_owned()), Vec::new())
    }

    fn start_with(password: Option<String>, extra: Vec<String>) -> Self {
        let mut s = Self {
            child: None,
            port: free_port(),
            password,
            extra,
            dir: tempfile::tempdir().expect("tempdir"),
            tls: false,
        };
        s.spawn();
        s
    }

    /// Starts a TLS-only server requiring `password`, with a certificate for
    /// `localhost`/`127.0.0.1` signed by a fresh CA (see [`RedisServer::ca_cert`]).
    /// Needs the `openssl` command.
    pub fn start_tls(password: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        crate::make_certificates(d);
        let port = free_port();
        let path = |f: &str| d.join(f).display().to_string();
        let extra = vec![
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            path("server.crt"),
            "--tls-key-file".into(),
            path("server.key"),
            "--tls-ca-cert-file".into(),
            path("ca.crt"),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        let mut s = Self { child: None, port, password: Some(password.to_owned()), extra, dir, tls: true };
        s.spawn();
        s
    }

    /// The CA certificate (PEM) of a TLS server.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    fn spawn(&mut self) {
        let bin = redis_server();
        let plain_port = if self.tls { "0".to_owned() } else { self.port.to_string() };
        let mut args: Vec<String> = vec![
            "--port".into(),
            plain_port,
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            self.dir.path().display().to_string(),
            "--logfile".into(),
            "redis.log".into(),
        ];
        if let Some(p) = &self.password {
            args.extend(["--requirepass".into(), p.clone()]);
        }
        args.extend(self.extra.iter().cloned());
        let child = Command::new(&bin)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let ready = |s: &Self| {
            if s.tls { TcpStream::connect(("127.0.0.1", s.port)).is_ok() } else { s.command(&["PING"]).is_ok() }
        };
        while !ready(self) {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
                panic!("redis-server exited with {status}: {log}");
            }
            assert!(Instant::now() < deadline, "redis-server did not answer on port {} within 30 s", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
        // The free port may have been taken by another test's server in the
        // meantime: the one answering must be this child.
        if !self.tls {
            let pid = self.child.as_ref().map(Child::id).unwrap_or_default();
            let info = self.command(&["INFO", "server"]).unwrap_or_default();
            assert!(
                info.contains(&format!("process_id:{pid}\r\n")),
                "port {} answered by another redis-server than the one just started (pid {pid})",
                self.port
            );
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis[s]://[:password@]127.0.0.1:PORT` (`rediss://…localhost` for TLS,
    /// the name the certificate is for).
    pub fn url(&self) -> String {
        let (scheme, host) = if self.tls { ("rediss", "localhost") } else { ("redis", "127.0.0.1") };
        match &self.password {
            Some(p) => format!("{scheme}://:{p}@{host}:{}", self.port),
            None => format!("{scheme}://{host}:{}", self.port),
        }
    }

    /// Kills the server (data is lost: no persistence).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port, and waits until it has
    /// loaded its data (with persistence on, it answers PING before that,
    /// and other commands with `-LOADING`).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
        if !self.tls {
            let deadline = Instant::now() + Duration::from_secs(30);
            // Line by line: Redis 7 also reports `async_loading:0` while loading.
            while !self.command(&["INFO", "persistence"]).is_ok_and(|i| i.lines().any(|l| l.trim() == "loading:0")) {
                assert!(Instant::now() < deadline, "redis-server on port {} still loading after 30 s", self.port);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Sends one command and returns the raw RESP reply (first line for simple replies).
    pub fn command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut req = Vec::new();
        let mut push = |parts: &[&str]| {
            req.extend_from_slice(format!("*{}\r\n", parts.len()).as_bytes());
            for a in parts {
                req.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
            }
        };
        if let Some(p) = &self.password {
            push(&["AUTH", p]);
        }
        push(args);
        s.write_all(&req)?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        if self.password.is_some() {
            r.read_line(&mut line)?;
            line.clear();
        }
        r.read_line(&mut line)?;
        if line.is_empty() {
            return Err(std::io::Error::other("connection closed"));
        }
        if let Some(len) = line.strip_prefix('$') {
            let len: i64 = len.trim().parse().unwrap_or(-1);
            if len >= 0 {
                let mut body = vec![0; len as usize + 2];
                r.read_exact(&mut body)?;
                return Ok(String::from_utf8_lossy(&body[..len as usize]).into_owned());
            }
        }
        Ok(line.trim_end().to_owned())
    }

    /// The values of `field` in every entry of stream `key`, in order
    /// (`XRANGE key - +`).
    pub fn stream_field(&self, key: &str, field: &str) -> std::io::Result<Vec<String>> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut req = Vec::new();
        let mut push = |parts: &[&str]| {
            req.extend_from_slice(format!("*{}\r\n", parts.len()).as_bytes());
            for a in parts {
                req.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
            }
        };
        if let Some(p) = &self.password {
            push(&["AUTH", p]);
        }
        push(&["XRANGE", key, "-", "+"]);
        s.write_all(&req)?;
        let mut r = BufReader::new(s);
        if self.password.is_some() {
            let mut line = String::new();
            r.read_line(&mut line)?;
        }
        // Every bulk string of the nested reply, flattened: id, then field/value pairs.
        fn flat(r: &mut BufReader<TcpStream>, out: &mut Vec<String>) -> std::io::Result<()> {
            let mut line = String::new();
            r.read_line(&mut line)?;
            let (kind, rest) = line.split_at(1.min(line.len()));
            let n: i64 = rest.trim().parse().unwrap_or(-1);
            match kind {
                "*" => {
                    for _ in 0..n.max(0) {
                        flat(r, out)?;
                    }
                }
                "$" if n >= 0 => {
                    let mut body = vec![0; n as usize + 2];
                    r.read_exact(&mut body)?;
                    out.push(String::from_utf8_lossy(&body[..n as usize]).into_owned());
                }
                "-" => return Err(std::io::Error::other(line.trim_end().to_owned())),
                _ => {}
            }
            Ok(())
        }
        let mut header = String::new();
        r.read_line(&mut header)?;
        let entries: i64 =
            header.trim().trim_start_matches('*').parse().map_err(|_| std::io::Error::other(header.clone()))?;
        let mut values = Vec::new();
        for _ in 0..entries {
            let mut parts = Vec::new();
            flat(&mut r, &mut parts)?;
            // parts: id, f1, v1, f2, v2, ...
            for pair in parts[1..].chunks(2) {
                if pair.len() == 2 && pair[0] == field {
                    values.push(pair[1].clone());
                }
            }
        }
        Ok(values)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis Cluster of `n` primaries without replicas.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `n` cluster-enabled servers and joins them (slots split evenly).
    pub fn start(n: usize) -> Self {
        let nodes: Vec<RedisServer> = (0..n)
            .map(|_| {
                RedisServer::start_with(
                    None,
                    vec!["--cluster-enabled".into(), "yes".into(), "--cluster-node-timeout".into(), "2000".into()],
                )
            })
            .collect();
        // Assign slot ranges and introduce the nodes to each other.
        let per = 16384 / n;
        for (i, node) in nodes.iter().enumerate() {
            let lo = i * per;
            let hi = if i + 1 == n { 16383 } else { (i + 1) * per - 1 };
            let slots: Vec<String> = (lo..=hi).map(|s| s.to_string()).collect();
            let mut args = vec!["CLUSTER", "ADDSLOTS"];
            args.extend(slots.iter().map(String::as_str));
            let reply = node.command(&args).expect("addslots");
            assert_eq!(reply, "+OK", "CLUSTER ADDSLOTS: {reply}");
        }
        for node in &nodes[1..] {
            let port = nodes[0].port.to_string();
            let reply = node.command(&["CLUSTER", "MEET", "127.0.0.1", &port]).expect("meet");
            assert_eq!(reply, "+OK", "CLUSTER MEET: {reply}");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = nodes.iter().all(|n| {
                n.command(&["CLUSTER", "INFO"]).is_ok_and(|i| {
                    i.contains("cluster_state:ok") && i.contains(&format!("cluster_known_nodes:{}", nodes.len()))
                })
            });
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "the Redis cluster did not become ready within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { nodes }
    }

    /// Seed URLs of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }
}
