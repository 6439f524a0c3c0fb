//! Where log lines go: a buffer that a background thread writes out in batches.
//!
//! The server logs one line per proxied request. Written one by one, that is one `write`
//! syscall per request, and with a queue handing each line to a writer thread (as
//! `tracing-appender` does) one or two thread wake-ups more: together about a tenth of the
//! server's CPU time per small request. Here a line is appended to a shared buffer under a
//! short lock; the writer thread sleeps until the first line of a batch arrives, lets the
//! batch gather for [`GATHER`], then writes it with one syscall. So a busy server wakes the
//! thread about 1/[`GATHER`] times a second instead of once per line, and a line waits at most
//! [`GATHER`] before it is written.
//!
//! Nothing is dropped: past [`MAX_BUFFERED`] bytes (the output is stuck, e.g. a full pipe) the
//! threads that log wait for the writer. Dropping the [`LogGuard`] writes everything buffered.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the first line of a batch waits for others to join it.
pub const GATHER: Duration = Duration::from_millis(10);
/// Buffered bytes that make the writer go at once rather than after [`GATHER`].
const HIGH_WATER: usize = 64 * 1024;
/// Buffered bytes past which logging waits for the writer (backpressure, never loss).
pub const MAX_BUFFERED: usize = 1024 * 1024;

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    /// The writer thread waits for a first line (so a line must wake it).
    writer_idle: bool,
    /// Threads waiting for room in the buffer.
    blocked: usize,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer thread.
    work: Condvar,
    /// Wakes threads waiting for room.
    room: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing that can panic runs under this lock; recover from poison rather than lose logs.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn append(&self, line: &[u8]) {
        let mut st = self.lock();
        while st.buf.len() + line.len() > MAX_BUFFERED && !st.buf.is_empty() && !st.closed {
            st.blocked += 1;
            self.work.notify_one();
            st = self.room.wait(st).unwrap_or_else(|e| e.into_inner());
            st.blocked -= 1;
        }
        let before = st.buf.len();
        st.buf.extend_from_slice(line);
        // Wake the writer only when it sleeps without a deadline, or when the batch is large;
        // a notification costs a syscall even when nobody waits.
        if (before == 0 && st.writer_idle) || (before < HIGH_WATER && st.buf.len() >= HIGH_WATER) {
            self.work.notify_one();
        }
    }
}

/// Hands out writers for `tracing-subscriber`; cheap to clone.
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

impl BatchWriter {
    /// Appends a whole line (or lines) to the buffer, as a line written through
    /// `tracing-subscriber` is.
    pub fn append(&self, line: &[u8]) {
        self.shared.append(line);
    }
}

/// Writes what is buffered and stops the writer thread when dropped.
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_one();
        self.shared.room.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join(); // a panicked writer has nothing left to flush
        }
    }
}

/// Starts the writer thread on `out`.
pub fn spawn<W: Write + Send + 'static>(out: W) -> io::Result<(BatchWriter, LogGuard)> {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        work: Condvar::new(),
        room: Condvar::new(),
    });
    let thread = std::thread::Builder::new()
        .name("tunnel-log".into())
        .spawn({
            let shared = shared.clone();
            move || write_batches(&shared, out)
        })?;
    Ok((
        BatchWriter {
            shared: shared.clone(),
        },
        LogGuard {
            shared,
            thread: Some(thread),
        },
    ))
}

fn write_batches<W: Write>(shared: &Shared, mut out: W) {
    let mut spare = Vec::new();
    let mut st = shared.lock();
    loop {
        while st.buf.is_empty() && !st.closed {
            st.writer_idle = true;
            st = shared.work.wait(st).unwrap_or_else(|e| e.into_inner());
            st.writer_idle = false;
        }
        if st.buf.is_empty() && st.closed {
            return;
        }
        if !st.closed && st.buf.len() < HIGH_WATER && st.blocked == 0 {
            st = shared
                .work
                .wait_timeout(st, GATHER)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        std::mem::swap(&mut st.buf, &mut spare);
        if st.blocked > 0 {
            shared.room.notify_all();
        }
        drop(st);
        // A failing stderr cannot be reported anywhere; the lines are dropped then, not kept
        // to grow without bound.
        let _ = out.write_all(&spare);
        let _ = out.flush();
        spare.clear();
        if spare.capacity() > 4 * HIGH_WATER {
            spare = Vec::new();
        }
        st = shared.lock();
    }
}

/// One event's writer: `tracing-subscriber` formats a line, then writes it in one call.
pub struct LineWriter<'a> {
    shared: &'a Shared,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.shared.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            shared: &self.shared,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output that records what reached it and in how many writes.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
            s.0.extend_from_slice(buf);
            s.1 += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_arrives_in_order_and_in_few_writes() {
        let sink = Sink::default();
        let (writer, guard) = spawn(sink.clone()).expect("thread");
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        let line = format!("t{t} line {i}\n");
                        w.make_writer().write_all(line.as_bytes()).expect("append");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("logging thread");
        }
        drop(guard); // writes everything
        let (bytes, writes) = sink.0.lock().expect("sink").clone();
        let text = String::from_utf8(bytes).expect("utf-8");
        for t in 0..4 {
            let mine: Vec<usize> = text
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("t{t} line ")))
                .map(|n| n.parse().expect("number"))
                .collect();
            assert_eq!(mine, (0..2000).collect::<Vec<_>>(), "thread {t}");
        }
        assert!(writes < 8000 / 10, "{writes} writes for 8000 lines");
    }

    /// An output that accepts nothing until released: logging must wait, not drop.
    #[test]
    fn a_stuck_output_blocks_logging_instead_of_losing_lines() {
        #[derive(Clone)]
        struct Gate(Arc<(Mutex<bool>, Condvar)>, Sink);
        impl Write for Gate {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                let (open, cv) = &*self.0;
                let mut o = open.lock().unwrap_or_else(|e| e.into_inner());
                while !*o {
                    o = cv.wait(o).unwrap_or_else(|e| e.into_inner());
                }
                self.1.write(buf)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let gate = Gate(
            Arc::new((Mutex::new(false), Condvar::new())),
            Sink::default(),
        );
        let (writer, guard) = spawn(gate.clone()).expect("thread");
        let line = vec![b'x'; 1023];
        let producer = std::thread::spawn({
            let writer = writer.clone();
            let line = line.clone();
            move || {
                for _ in 0..3000 {
                    let mut l = line.clone();
                    l.push(b'\n');
                    writer.make_writer().write_all(&l).expect("append");
                }
            }
        });
        // The producer cannot finish 3 MB against a 1 MiB bound while the output is stuck.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let st = writer.shared.lock();
            if st.blocked > 0 {
                assert!(st.buf.len() <= MAX_BUFFERED);
                break;
            }
            drop(st);
            assert!(
                std::time::Instant::now() < deadline,
                "producer never blocked"
            );
            std::thread::yield_now();
        }
        assert!(!producer.is_finished());
        {
            let (open, cv) = &*gate.0;
            *open.lock().expect("gate") = true;
            cv.notify_all();
        }
        producer.join().expect("producer");
        drop(guard);
        let (bytes, _) = gate.1 .0.lock().expect("sink").clone();
        assert_eq!(bytes.len(), 3000 * 1024);
    }
}
