//! A writer for the log and audit queues' tests: it writes nothing until
//! it is let go, like a stderr pipe that nobody reads.

use std::io::Write;
use std::sync::mpsc;

/// Waits for one `release` before each write, then hands the bytes to
/// `written`.
pub struct StalledSink {
    pub release: mpsc::Receiver<()>,
    pub written: mpsc::Sender<Vec<u8>>,
}

impl Write for StalledSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.release.recv();
        let _ = self.written.send(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
