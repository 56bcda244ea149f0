//! The embedded stream source: JSON-lines files dropped into a folder.
//!
//! Files are read in name order, each exactly once: the committed position
//! is the number of files fully consumed, and a micro-batch always holds
//! whole files. Producers should write a file elsewhere and rename it into
//! the folder, with names that sort after the ones already there (e.g. a
//! timestamp prefix), so a half-written or earlier-sorting file is never read.

use std::path::PathBuf;
use std::sync::Arc;

use super::message::{Positions, RawMessage};
use crate::error::{Error, Result};

pub struct FileSource {
    dir: PathBuf,
    /// Index (in name order) of the next file to read.
    next_file: usize,
}

impl FileSource {
    pub fn new(dir: PathBuf) -> Result<FileSource> {
        if !dir.is_dir() {
            return Err(Error::Config(format!(
                "stream source folder {} does not exist: create it or point --source at a folder of .jsonl files",
                dir.display()
            )));
        }
        Ok(FileSource { dir, next_file: 0 })
    }

    /// The position key: the folder URL.
    pub fn key(&self) -> String {
        format!("file://{}", self.dir.display())
    }

    fn files(&self) -> Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(|e| Error::other(format!("reading {}", self.dir.display()), e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl" || x == "json"))
            .collect();
        files.sort();
        Ok(files)
    }

    /// The messages of files number `from..to` (in name order).
    pub fn region_predicate(&self, from: i64, to: i64) -> Result<String> {
        let names: Vec<String> = self
            .files()?
            .iter()
            .skip(from.max(0) as usize)
            .take((to - from).max(0) as usize)
            .filter_map(|p| p.file_name().map(|n| format!("'{}'", n.to_string_lossy().replace('\'', "''"))))
            .collect();
        Ok(if names.is_empty() { "false".to_string() } else { format!("topic IN ({})", names.join(", ")) })
    }

    pub fn seek(&mut self, positions: &Positions) -> Result<()> {
        self.next_file = positions.get(&self.key()).copied().unwrap_or(0).max(0) as usize;
        Ok(())
    }

    pub fn end_positions(&self) -> Result<Positions> {
        Ok([(self.key(), self.files()?.len() as i64)].into_iter().collect())
    }

    /// Whole files until at least `max` messages (or no more files).
    pub fn poll(&mut self, max: usize) -> Result<Vec<RawMessage>> {
        let files = self.files()?;
        let mut messages = Vec::new();
        while self.next_file < files.len() && messages.len() < max {
            let path = &files[self.next_file];
            let text = bytes::Bytes::from(
                std::fs::read(path).map_err(|e| Error::other(format!("reading {}", path.display()), e))?,
            );
            let name: Arc<str> = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default().into();
            let key: Arc<str> = self.key().into();
            self.next_file += 1;
            for (line_number, line) in text.split(|b| *b == b'\n').enumerate() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let payload = text.slice_ref(line);
                messages.push(RawMessage {
                    topic: name.clone(),
                    partition: 0,
                    offset: line_number as i64 + 1,
                    key: key.clone(),
                    next_position: self.next_file as i64,
                    payload,
                });
            }
        }
        Ok(messages)
    }
}
