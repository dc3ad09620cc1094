//! An agent's output for `grove logs [-f]` against a coordinator: from the bus (workers
//! anywhere send their output as they go) or, when the bus carries no logs, from the log file
//! the workers of this machine write.
//!
//! Without follow, what is there is sent and the stream ends once nothing more comes for a
//! moment. With follow, the stream goes on until the task has ended and its last attempt's
//! output is complete (or, for an attempt whose worker died, for a short while after).

use std::time::Duration;

use grove_bus::LogStream;
use grove_proto::v1 as pb;
use tokio::sync::mpsc::Sender;
use tokio_stream::StreamExt;
use tonic::Status;

use crate::store::TaskRow;
use crate::{CoordError, Coordinator};

/// How long "nothing more comes" is, for a log that is not followed.
const SETTLE: Duration = Duration::from_millis(500);
/// How long a followed log waits for the output of an ended task's last attempt.
const AFTER_END: Duration = Duration::from_secs(2);
/// How often a followed log file is read again.
const POLL: Duration = Duration::from_millis(300);

/// The most bytes of a log file sent in one chunk (a message stays well under tonic's limit).
const PIECE: usize = 1 << 20;

type Out = Sender<Result<pb::LogChunk, Status>>;

/// Where a reader that lost the stream had got to: everything of attempts before `attempt`,
/// and of `attempt` up to `offset`. `None`: from the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    pub attempt: Option<u32>,
    pub offset: u64,
}

impl Cursor {
    /// What of `chunk` is new past the cursor: all of it, its end, or nothing.
    fn trim(&self, mut chunk: grove_core::task::LogChunk) -> Option<grove_core::task::LogChunk> {
        let Some(attempt) = self.attempt else { return Some(chunk) };
        if chunk.attempt > attempt {
            return Some(chunk);
        }
        let end = chunk.offset + chunk.data.len() as u64;
        if chunk.attempt < attempt || end < self.offset || (end == self.offset && !chunk.eof) {
            return None;
        }
        if chunk.offset < self.offset {
            let cut = (self.offset - chunk.offset) as usize;
            chunk.data.drain(..cut.min(chunk.data.len()));
            chunk.offset = self.offset;
        }
        Some(chunk)
    }
}

fn ended(coord: &Coordinator, task: &TaskRow) -> Result<(bool, u32), CoordError> {
    let now = coord.store.find_task(&format!("{}/{}", task.job, task.slug))?;
    Ok((now.state.is_terminal(), now.attempt))
}

/// Forward the bus's chunks of `task`'s log to `out`.
pub async fn forward(
    coord: &Coordinator,
    task: &TaskRow,
    mut chunks: LogStream,
    follow: bool,
    from: Cursor,
    out: &Out,
) -> Result<(), CoordError> {
    let mut complete: Option<u32> = None;
    let mut ended_at: Option<tokio::time::Instant> = None;
    loop {
        match tokio::time::timeout(SETTLE, chunks.next()).await {
            Ok(Some(chunk)) => {
                let chunk = chunk?;
                if chunk.eof {
                    complete = Some(complete.map_or(chunk.attempt, |a| a.max(chunk.attempt)));
                }
                // What the reader had before it lost the stream is not sent again.
                let Some(chunk) = from.trim(chunk) else { continue };
                if out.send(Ok(grove_bus::wire::log_pb(chunk))).await.is_err() {
                    return Ok(()); // the reader went away
                }
            }
            Ok(None) => return Ok(()),
            Err(_) if !follow => return Ok(()),
            Err(_) => {}
        }
        if follow {
            let (over, attempt) = ended(coord, task)?;
            if over {
                if complete.is_some_and(|a| a >= attempt) {
                    return Ok(());
                }
                let since = *ended_at.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= AFTER_END {
                    return Ok(());
                }
            }
        }
    }
}

/// Send `task`'s log file to `out` (from the cursor's offset: the file holds every attempt),
/// and with `follow` what is added to it until the task ends.
pub async fn tail_file(
    coord: &Coordinator,
    task: &TaskRow,
    follow: bool,
    from: Cursor,
    out: &Out,
) -> Result<(), CoordError> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let path = coord.layout.log(&task.job, &task.slug);
    let mut offset = from.offset;
    loop {
        let (over, attempt) = if follow { ended(coord, task)? } else { (true, task.attempt) };
        let mut data = Vec::new();
        match tokio::fs::File::open(&path).await {
            Ok(mut f) => {
                let io = |source| CoordError::Io { what: format!("reading {}", path.display()), source };
                f.seek(std::io::SeekFrom::Start(offset)).await.map_err(io)?;
                f.read_to_end(&mut data).await.map_err(io)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(CoordError::Io { what: format!("reading {}", path.display()), source });
            }
        }
        let grew = !data.is_empty();
        for piece in data.chunks(PIECE) {
            let chunk = pb::LogChunk {
                schema: grove_proto::SCHEMA_VERSION,
                job: task.job.to_string(),
                task: task.slug.clone(),
                attempt,
                offset,
                eof: false,
                data: piece.to_vec(),
            };
            offset += chunk.data.len() as u64;
            if out.send(Ok(chunk)).await.is_err() {
                return Ok(());
            }
        }
        // The task had ended before this read: everything it wrote is sent.
        if over && !grew {
            return Ok(());
        }
        if !follow {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(attempt: u32, offset: u64, data: &str, eof: bool) -> grove_core::task::LogChunk {
        grove_core::task::LogChunk {
            job: grove_core::JobId::new("j", 1),
            task: "t".into(),
            attempt,
            offset,
            data: data.as_bytes().to_vec(),
            eof,
        }
    }

    /// A reader resuming at (attempt 2, offset 5) gets nothing of attempt 1 and of attempt 2's
    /// first five bytes again, the rest whole, and an attempt's end even when empty.
    #[test]
    fn a_cursor_skips_what_was_read_and_cuts_a_chunk_that_straddles_it() {
        let c = Cursor { attempt: Some(2), offset: 5 };
        assert!(c.trim(chunk(1, 100, "old", false)).is_none());
        assert!(c.trim(chunk(2, 0, "hello", false)).is_none());
        let cut = c.trim(chunk(2, 3, "lo world", false)).expect("its end");
        assert_eq!((cut.offset, cut.data.as_slice()), (5, &b" world"[..]));
        assert!(c.trim(chunk(2, 5, "", true)).is_some_and(|e| e.eof));
        assert_eq!(c.trim(chunk(2, 9, "x", false)).map(|k| k.offset), Some(9));
        assert_eq!(c.trim(chunk(3, 0, "new", false)).map(|k| k.data), Some(b"new".to_vec()));
        assert!(Cursor::default().trim(chunk(1, 0, "all", false)).is_some());
    }
}
