//! An app's output: bytes from its stdout and stderr pipes cut into lines of bounded length,
//! and the ring of its most recent lines that `logs` shows.

use std::collections::VecDeque;

use serde::Serialize;

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line an app wrote, without its newline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutputLine {
    /// Where it was written.
    pub stream: Stream,
    /// The text; invalid UTF-8 is replaced, a line over the length limit is cut in pieces.
    pub line: String,
}

/// Cuts a byte stream into lines of at most `max_len` bytes.
#[derive(Debug)]
pub struct LineSplitter {
    partial: Vec<u8>,
    max_len: usize,
    /// A line was just cut at the limit: a newline right after it ends that line.
    cut: bool,
}

impl LineSplitter {
    /// A splitter for lines of at most `max_len` bytes (at least 1).
    pub fn new(max_len: usize) -> LineSplitter {
        LineSplitter {
            partial: Vec::new(),
            max_len: max_len.max(1),
            cut: false,
        }
    }

    /// Feeds `bytes`, calling `line` for every line completed (or cut at the limit).
    pub fn push(&mut self, mut bytes: &[u8], mut line: impl FnMut(String)) {
        while !bytes.is_empty() {
            if std::mem::take(&mut self.cut) && bytes.first() == Some(&b'\n') {
                bytes = &bytes[1..];
                continue;
            }
            let room = self.max_len - self.partial.len();
            let window = &bytes[..bytes.len().min(room)];
            match window.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    self.partial.extend_from_slice(&window[..end]);
                    line(self.take());
                    bytes = &bytes[end + 1..];
                }
                None => {
                    self.partial.extend_from_slice(window);
                    bytes = &bytes[window.len()..];
                    if self.partial.len() == self.max_len {
                        line(self.take());
                        self.cut = true;
                    }
                }
            }
        }
    }

    /// The unfinished last line, if any (at end of stream).
    pub fn finish(&mut self) -> Option<String> {
        (!self.partial.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> String {
        let bytes = std::mem::take(&mut self.partial);
        let text = String::from_utf8(bytes)
            .unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned());
        match text.strip_suffix('\r') {
            Some(stripped) => stripped.to_owned(),
            None => text,
        }
    }
}

/// The last `capacity` lines.
#[derive(Debug)]
pub struct OutputRing {
    lines: VecDeque<OutputLine>,
    capacity: usize,
    dropped: u64,
}

impl OutputRing {
    /// An empty ring keeping `capacity` lines.
    pub fn new(capacity: usize) -> OutputRing {
        OutputRing {
            lines: VecDeque::new(),
            capacity,
            dropped: 0,
        }
    }

    /// Adds a line, forgetting the oldest when full.
    pub fn push(&mut self, line: OutputLine) {
        if self.capacity == 0 {
            self.dropped += 1;
            return;
        }
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
            self.dropped += 1;
        }
        self.lines.push_back(line);
    }

    /// The last `count` lines, oldest first.
    pub fn last(&self, count: usize) -> Vec<OutputLine> {
        let skip = self.lines.len().saturating_sub(count);
        self.lines.iter().skip(skip).cloned().collect()
    }

    /// Lines forgotten to stay within the capacity.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn split(max: usize, chunks: &[&[u8]]) -> (Vec<String>, Option<String>) {
        let mut splitter = LineSplitter::new(max);
        let mut lines = Vec::new();
        for chunk in chunks {
            splitter.push(chunk, |line| lines.push(line));
        }
        (lines, splitter.finish())
    }

    #[test]
    fn lines_across_chunks() {
        let (lines, rest) = split(100, &[b"ab", b"c\nde\r\n", b"\nf"]);
        assert_eq!(lines, ["abc", "de", ""]);
        assert_eq!(rest.as_deref(), Some("f"));
    }

    #[test]
    fn long_lines_are_cut() {
        let (lines, rest) = split(4, &[b"abcdefghij\nxy"]);
        assert_eq!(lines, ["abcd", "efgh", "ij"]);
        assert_eq!(rest.as_deref(), Some("xy"));
        let (lines, _) = split(4, &[b"abcd\nef\n"]);
        assert_eq!(lines, ["abcd", "ef"]);
        let (lines, _) = split(4, &[b"abcd", b"\n\n"]);
        assert_eq!(lines, ["abcd", ""]);
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let (lines, _) = split(100, &[b"a\xffb\n"]);
        assert_eq!(lines, ["a\u{fffd}b"]);
    }

    #[test]
    fn ring_keeps_the_last_lines() {
        let mut ring = OutputRing::new(3);
        for n in 0..5 {
            ring.push(OutputLine {
                stream: Stream::Stdout,
                line: n.to_string(),
            });
        }
        let last: Vec<String> = ring.last(10).into_iter().map(|l| l.line).collect();
        assert_eq!(last, ["2", "3", "4"]);
        assert_eq!(ring.last(1)[0].line, "4");
        assert_eq!(ring.dropped(), 2);
    }
}
