//! Where events go: JSON lines to a file or to stderr.

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, Result};

use crate::event::{Body, Event};

/// The path that names stderr: stdout is the watched command's.
pub const STDERR: &str = "-";

/// The longest an event waits in a buffer before it reaches its file.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Whether `event` is written out at once rather than within
/// [`FLUSH_INTERVAL`]: an alert must be on disk even if agentwatch then
/// crashes or the machine goes down.
pub fn is_urgent(event: &Event) -> bool {
    matches!(event.body, Body::Alert(_))
}

/// `event` as one JSON line, to be written with a single write: a reader
/// tailing the file never sees half of one.
pub fn to_line(event: &Event) -> Vec<u8> {
    let mut line = serde_json::to_vec(event).expect("an Event always serializes");
    line.push(b'\n');
    line
}

pub struct JsonLines {
    out: BufWriter<Box<dyn Write + Send>>,
}

impl JsonLines {
    /// Appends to `path`, or writes to stderr when it is [`STDERR`].
    pub fn open(path: &Path) -> Result<Self> {
        let out: Box<dyn Write + Send> = if path == Path::new(STDERR) {
            Box::new(io::stderr())
        } else {
            Box::new(
                File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening {}", path.display()))?,
            )
        };
        Ok(Self {
            out: BufWriter::new(out),
        })
    }

    /// Buffers `event` as one line, and writes it out at once if it is urgent;
    /// the rest waits for [`flush`](Self::flush), due every [`FLUSH_INTERVAL`].
    pub fn write(&mut self, event: &Event) -> Result<()> {
        self.out.write_all(&to_line(event))?;
        if is_urgent(event) {
            self.flush()?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().context("writing events")
    }
}
