//! Captures every log line of the test process so tests can assert that no
//! secret reaches a log.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn buffer() -> &'static Buffer {
    static BUF: OnceLock<Buffer> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Buffer::default();
        let writer = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        buf
    })
}

/// Start capturing (idempotent).
pub fn capture() {
    let _ = buffer();
}

/// Everything logged so far.
pub fn text() -> String {
    String::from_utf8_lossy(&buffer().0.lock().unwrap()).into_owned()
}
