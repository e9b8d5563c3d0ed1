//! Test harness: real servers on free ports (started and stopped by the
//! tests themselves) and small data helpers.

pub mod kafka;
pub mod moto;
pub mod nats;
pub mod proxy;
pub mod random_case;
pub mod redis;

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;

use arrow_array::RecordBatch;
use parquet::arrow::ArrowWriter;

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Encodes `batch` as a Parquet file.
pub fn parquet_bytes(batch: &RecordBatch) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), None).expect("writer");
    w.write(batch).expect("write");
    w.close().expect("close");
    buf
}

/// Writes `batch` to a local Parquet file, creating folders.
pub fn write_parquet(path: &Path, batch: &RecordBatch) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, parquet_bytes(batch)).expect("write parquet");
}

/// Writes `batch` as Parquet to `location` in an object store.
pub async fn put_parquet(store: &Arc<dyn object_store::ObjectStore>, location: &str, batch: &RecordBatch) {
    use object_store::ObjectStoreExt;
    store
        .put(&object_store::path::Path::from(location), bytes::Bytes::from(parquet_bytes(batch)).into())
        .await
        .expect("put parquet");
}

/// Finds an executable: `$ENV_VAR`, then the repo's `.venv/bin`, then `PATH`.
pub fn find_executable(name: &str, env_var: &str) -> Option<std::path::PathBuf> {
    if let Ok(p) = std::env::var(env_var) {
        return Some(p.into());
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin").join(name);
    if venv.is_file() {
        return Some(venv);
    }
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()))
}

/// Writes `ca.crt`/`ca.key` (a fresh CA) and `server.crt`/`server.key` (for
/// `localhost` and `127.0.0.1`, signed by it) into `dir`, with the `openssl`
/// command (scripts/test.sh installs it).
pub fn make_certificates(d: &Path) {
    use std::process::Command;
    std::fs::write(
        d.join("ext.cnf"),
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext file");
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .expect("the openssl command is needed for the TLS tests (apt-get install openssl)");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=feature-store test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}
