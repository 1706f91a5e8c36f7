//! Entry points for the fuzz targets (`fuzz/`, `fuzzing/`) into what this crate keeps private:
//! the control socket's line splitter. Not part of the crate's API.

use crate::server::{LineSplitter, Piece};

/// Cuts what a control-socket client sent, read as `chunks` one after the other, into lines as
/// the server does: `Some(line)` for each whole line, `None` for a line over
/// [`MAX_LINE`](crate::MAX_LINE) that was skipped.
pub fn control_lines<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<Option<Vec<u8>>> {
    let mut splitter = LineSplitter::default();
    let mut pieces = Vec::new();
    for chunk in chunks {
        splitter.feed(chunk, &mut pieces);
    }
    pieces
        .into_iter()
        .map(|piece| match piece {
            Piece::Line(line) => Some(line),
            Piece::TooLong => None,
        })
        .collect()
}
