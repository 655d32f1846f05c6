//! Where events go: JSON lines to a file or to stderr.

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::Path,
};

use anyhow::{Context as _, Result};
use serde::Serialize;

/// The path that names stderr: stdout is the watched command's.
pub const STDERR: &str = "-";

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

    pub fn write<T: Serialize>(&mut self, value: &T) -> Result<()> {
        serde_json::to_writer(&mut self.out, value)?;
        self.out.write_all(b"\n")?;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().context("writing events")
    }
}
