//! Where log lines go: a buffer that a background thread writes to stdout
//! in batches.
//!
//! `tracing-appender`'s channel cost a wake-up of its thread, an
//! allocation and a `write` per line; under load the request log then took
//! a tenth of the host's CPU. Here a line is one copy into a shared buffer.
//! The writer thread, once woken, writes whatever has gathered every
//! [`LINGER`] until the buffer is found empty, so a busy host pays one
//! `write` per batch and no wake-ups, and a quiet one still sees each line
//! at once. A stalled stdout costs lines, never requests: past
//! [`MAX_BUFFERED`] lines are dropped and counted.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the writer lets lines gather while the host is busy.
const LINGER: Duration = Duration::from_millis(10);
/// Bytes held for a stdout that does not keep up; lines beyond are dropped.
const MAX_BUFFERED: usize = 16 << 20;

/// A cheap handle that appends whole lines to the shared buffer.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    dropped: AtomicU64,
}

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    /// The writer is waiting on `wake` (not lingering): the next line
    /// must wake it.
    parked: bool,
    stop: bool,
}

/// Keeps the writer thread alive; dropping it writes what is left.
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A writer to `out` and the guard of its thread.
pub fn spawn(out: impl Write + Send + 'static) -> (LogWriter, FlushGuard) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        wake: Condvar::new(),
        dropped: AtomicU64::new(0),
    });
    let thread = std::thread::Builder::new()
        .name("trellis-log".into())
        .spawn({
            let shared = shared.clone();
            move || write_batches(&shared, out)
        })
        .expect("spawning the log writer thread");
    (
        LogWriter {
            shared: shared.clone(),
        },
        FlushGuard {
            shared,
            thread: Some(thread),
        },
    )
}

impl LogWriter {
    /// Appends `line` (which should end in a newline).
    pub fn line(&self, line: &[u8]) {
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.buf.len() + line.len() > MAX_BUFFERED {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        state.buf.extend_from_slice(line);
        if state.parked {
            state.parked = false;
            self.shared.wake.notify_one();
        }
    }
}

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.line(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        self.clone()
    }
}

fn write_batches(shared: &Shared, mut out: impl Write) {
    let mut batch = Vec::new();
    loop {
        let stop = {
            let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            while state.buf.is_empty() && !state.stop {
                state.parked = true;
                state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            std::mem::swap(&mut batch, &mut state.buf);
            state.stop
        };
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let _ = writeln!(
                batch,
                "trellis: {dropped} log lines dropped: stdout did not keep up"
            );
        }
        // A failed write loses this batch, not the host.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if stop {
            return;
        }
        std::thread::sleep(LINGER);
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        {
            let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            state.stop = true;
            self.shared.wake.notify_one();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `io::Write` the test can read back.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_in_order_promptly_and_all_by_the_guard() {
        let sink = Sink::default();
        let (writer, guard) = spawn(sink.clone());
        writer.line(b"first\n");
        // A quiet writer is woken by the line, not by its linger timer.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while sink.0.lock().unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "first line never written"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        writer.line(format!("{t} {i}\n").as_bytes());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4001);
        assert_eq!(lines[0], "first");
        for t in 0..4 {
            let mine: Vec<usize> = lines[1..]
                .iter()
                .filter_map(|l| l.strip_prefix(&format!("{t} ")))
                .map(|i| i.parse().unwrap())
                .collect();
            assert_eq!(mine, (0..1000).collect::<Vec<_>>(), "thread {t}");
        }
    }
}
