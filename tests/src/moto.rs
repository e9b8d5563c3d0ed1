//! An S3-compatible server (`moto_server`) on a free port, stopped on drop.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{find_executable, free_port};

/// A running `moto_server`.
pub struct MotoServer {
    child: Child,
    port: u16,
    _log_dir: tempfile::TempDir,
}

impl MotoServer {
    /// Starts `moto_server` (from `$MOTO_SERVER`, `.venv/bin` or `PATH`) and
    /// waits until it answers. Without `$MOTO_SERVER`, scripts/test.sh's
    /// `moto_server_serial` wins when present: plain moto can let two
    /// conditional PUTs both succeed, so a bare `cargo test` of the registry's
    /// compare-and-swap would fail now and then for moto's reasons.
    ///
    /// Panics with install instructions when it is missing: the README's test
    /// command installs it.
    pub fn start() -> Self {
        let bin = find_executable("moto_server_serial", "MOTO_SERVER")
            .or_else(|| find_executable("moto_server", "MOTO_SERVER"))
            .expect(
            "moto_server not found: run ./scripts/test.sh (it installs moto[server] into .venv) or pip install \"moto[server]\"",
        );
        let log_dir = tempfile::tempdir().expect("tempdir");
        let log = std::fs::File::create(log_dir.path().join("moto.log")).expect("log file");
        let port = free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut server = Self { child, port, _log_dir: log_dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.request("GET", "/").is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("moto_server exited with {status}");
            }
            assert!(Instant::now() < deadline, "moto_server did not answer on port {port} within 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// `http://127.0.0.1:PORT`.
    /// The server's port (to put a [`crate::proxy::FaultProxy`] in front of it).
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Storage options that point object_store at this server.
    pub fn options(&self) -> BTreeMap<String, String> {
        [
            ("aws_endpoint", self.endpoint()),
            ("aws_region", "us-east-1".into()),
            ("aws_access_key_id", "testing".into()),
            ("aws_secret_access_key", "testing".into()),
            ("aws_allow_http", "true".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Creates a bucket.
    pub fn create_bucket(&self, name: &str) {
        let response = self.request("PUT", &format!("/{name}")).expect("create bucket");
        assert!(response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"), "{response}");
    }

    /// Stops the server now (it is also stopped on drop).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn request(&self, method: &str, path: &str) -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        if out.is_empty() {
            return Err(std::io::Error::other("empty response"));
        }
        Ok(out)
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.stop();
    }
}
