//! Disk spill of a sink: a write-ahead log of observations that did not fit in the sink's
//! memory queue, so a long broker outage loses nothing up to `spill_max_bytes`, and what a
//! stopped `twinrt` still held is sent after its restart.
//!
//! Layout: a directory of segment files `{id:020}.log`, read in id order. A record is
//! `[length: u32 LE][crc32c of the payload: u32 LE][payload: the observation's MQTT JSON]`.
//! A segment is closed at [`SEGMENT_BYTES`]; a fully read segment is deleted. The read
//! position in the first segment is kept in `cursor` (segment id and offset), written each
//! time records are taken, so a restart does not send again what was already taken.
//! [`Spill::prepend`] writes a segment *before* the others (what the memory queue held at
//! shutdown is older than what was spilled).
//!
//! A torn or corrupt record (a crash in the middle of a write) ends its segment: what
//! follows it in that segment is skipped and counted as `corrupt`, never a panic.
//!
//! Durability: appends go through a buffer flushed when records are taken, on
//! [`Spill::flush`] (every few seconds and at shutdown) and when a segment closes; a crash
//! of the process loses at most the unflushed buffer.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use twins::Observation;

/// A segment is closed when it reaches this size.
pub const SEGMENT_BYTES: u64 = 4 << 20;
/// Ids of new segments start here, leaving room below for [`Spill::prepend`].
const FIRST_ID: u64 = 1 << 40;
const HEADER: usize = 8;
/// No record is longer (an observation is ~400 B): a longer length is corruption.
const MAX_RECORD: usize = 1 << 20;

/// What went wrong with the spill directory.
#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    #[error("spill {dir}: {what}: {source}")]
    Io { dir: String, what: String, source: std::io::Error },
    #[error("spill {dir} is full ({bytes} of {max} bytes)")]
    Full { dir: String, bytes: u64, max: u64 },
}

/// The disk spill of one sink. Not thread-safe by itself: the sink's handle keeps it
/// under a lock.
pub struct Spill {
    dir: PathBuf,
    max_bytes: u64,
    /// Segment ids on disk, oldest first.
    segments: VecDeque<u64>,
    /// Read offset in the first segment.
    read_offset: u64,
    /// The segment appended to (the last one), with its size.
    writer: Option<(u64, BufWriter<File>, u64)>,
    /// Bytes on disk (and in the writer's buffer) not yet read.
    bytes: u64,
    /// Records not yet read.
    records: u64,
    /// Records skipped as corrupt since start.
    pub corrupt: u64,
}

fn crc32c(data: &[u8]) -> u32 {
    // Castagnoli, reflected, bitwise: records are small and this is not on a hot path.
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

fn segment_name(id: u64) -> String {
    format!("{id:020}.log")
}

impl Spill {
    /// Open (or create) the spill directory, finding what a previous run left.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spill, SpillError> {
        let io = |what: &str, source| SpillError::Io { dir: dir.display().to_string(), what: what.to_string(), source };
        fs::create_dir_all(dir).map_err(|e| io("cannot create the directory", e))?;
        let mut segments: Vec<u64> = fs::read_dir(dir)
            .map_err(|e| io("cannot list the directory", e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".log")).and_then(|n| n.parse().ok()))
            .collect();
        segments.sort_unstable();
        let mut spill = Spill {
            dir: dir.to_path_buf(),
            max_bytes,
            segments: segments.into(),
            read_offset: 0,
            writer: None,
            bytes: 0,
            records: 0,
            corrupt: 0,
        };
        if let Some((id, offset)) = spill.read_cursor() {
            if spill.segments.front() == Some(&id) {
                spill.read_offset = offset;
            }
        }
        // Count what is there (and stop at a torn tail).
        let ids: Vec<u64> = spill.segments.iter().copied().collect();
        for (i, id) in ids.iter().enumerate() {
            let from = if i == 0 { spill.read_offset } else { 0 };
            let (n, bytes, _) = spill.scan(*id, from, usize::MAX)?;
            spill.records += n;
            spill.bytes += bytes;
        }
        Ok(spill)
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(segment_name(id))
    }

    fn io(&self, what: impl Into<String>, source: std::io::Error) -> SpillError {
        SpillError::Io { dir: self.dir.display().to_string(), what: what.into(), source }
    }

    fn read_cursor(&self) -> Option<(u64, u64)> {
        let text = fs::read_to_string(self.dir.join("cursor")).ok()?;
        let (id, off) = text.trim().split_once(' ')?;
        Some((id.parse().ok()?, off.parse().ok()?))
    }

    fn write_cursor(&self) -> Result<(), SpillError> {
        let text = match self.segments.front() {
            Some(id) => format!("{id} {}\n", self.read_offset),
            None => String::new(),
        };
        let tmp = self.dir.join("cursor.tmp");
        fs::write(&tmp, text).map_err(|e| self.io("cannot write the cursor", e))?;
        fs::rename(&tmp, self.dir.join("cursor")).map_err(|e| self.io("cannot write the cursor", e))
    }

    /// Records not yet taken.
    pub fn len(&self) -> u64 {
        self.records
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Bytes not yet taken.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn encode(obs: &Observation, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER]);
        obs.write_mqtt_json(out);
        let payload = &out[start + HEADER..];
        let len = payload.len() as u32;
        let crc = crc32c(payload);
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    /// Append observations at the end (after everything spilled so far). Fails, writing
    /// nothing, when they do not fit under `max_bytes`.
    pub fn append(&mut self, obs: &[&Observation]) -> Result<(), SpillError> {
        let mut buf = Vec::with_capacity(obs.len() * 512);
        for o in obs {
            Self::encode(o, &mut buf);
        }
        if self.bytes + buf.len() as u64 > self.max_bytes {
            return Err(SpillError::Full {
                dir: self.dir.display().to_string(),
                bytes: self.bytes,
                max: self.max_bytes,
            });
        }
        let roll = match &self.writer {
            None => true,
            Some((_, _, size)) => *size >= SEGMENT_BYTES,
        };
        if roll {
            self.close_writer()?;
            let id = self.segments.back().map_or(FIRST_ID, |last| (last + 1).max(FIRST_ID));
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path(id))
                .map_err(|e| self.io(format!("cannot create {}", segment_name(id)), e))?;
            self.segments.push_back(id);
            self.writer = Some((id, BufWriter::with_capacity(64 << 10, f), 0));
        }
        if let Some((id, w, size)) = &mut self.writer {
            let id = *id;
            if let Err(e) = w.write_all(&buf) {
                return Err(SpillError::Io {
                    dir: self.dir.display().to_string(),
                    what: format!("cannot write {}", segment_name(id)),
                    source: e,
                });
            }
            *size += buf.len() as u64;
        }
        self.bytes += buf.len() as u64;
        self.records += obs.len() as u64;
        Ok(())
    }

    /// Write observations *before* everything spilled so far (e.g. the memory queue at
    /// shutdown, which is older), in their order.
    pub fn prepend(&mut self, obs: &[&Observation]) -> Result<(), SpillError> {
        if obs.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(obs.len() * 512);
        for o in obs {
            Self::encode(o, &mut buf);
        }
        // Past the cap, the oldest are kept first: they are the next to send.
        let id = match self.segments.front() {
            Some(first) => first.checked_sub(1).ok_or_else(|| {
                self.io("no segment id left to prepend", std::io::Error::other("segment ids exhausted"))
            })?,
            None => FIRST_ID - 1,
        };
        let path = self.path(id);
        fs::write(&path, &buf).map_err(|e| self.io(format!("cannot write {}", segment_name(id)), e))?;
        // The first segment was partly read: its unread part stays where it is (the cursor
        // moves to the new first segment, offset 0, and the old one is read from its offset
        // by rewriting it without its read part).
        if self.read_offset > 0 {
            if let Some(old) = self.segments.front().copied() {
                self.close_writer_if(old)?;
                self.drop_read_prefix(old)?;
            }
        }
        self.segments.push_front(id);
        self.read_offset = 0;
        self.bytes += buf.len() as u64;
        self.records += obs.len() as u64;
        self.write_cursor()
    }

    /// Rewrite segment `id` without its first `read_offset` bytes.
    fn drop_read_prefix(&mut self, id: u64) -> Result<(), SpillError> {
        let path = self.path(id);
        let mut data = Vec::new();
        File::open(&path)
            .and_then(|mut f| {
                f.seek(SeekFrom::Start(self.read_offset))?;
                f.read_to_end(&mut data)
            })
            .map_err(|e| self.io(format!("cannot read {}", segment_name(id)), e))?;
        fs::write(&path, &data).map_err(|e| self.io(format!("cannot rewrite {}", segment_name(id)), e))?;
        self.read_offset = 0;
        Ok(())
    }

    fn close_writer(&mut self) -> Result<(), SpillError> {
        if let Some((id, mut w, _)) = self.writer.take() {
            w.flush().map_err(|e| self.io(format!("cannot write {}", segment_name(id)), e))?;
            w.get_ref().sync_data().map_err(|e| self.io(format!("cannot sync {}", segment_name(id)), e))?;
        }
        Ok(())
    }

    fn close_writer_if(&mut self, id: u64) -> Result<(), SpillError> {
        if self.writer.as_ref().is_some_and(|(w, _, _)| *w == id) {
            self.close_writer()?;
        }
        Ok(())
    }

    /// Flush buffered appends to the file system.
    pub fn flush(&mut self) -> Result<(), SpillError> {
        if let Some((id, w, _)) = &mut self.writer {
            let id = *id;
            if let Err(e) = w.flush() {
                return Err(self.io(format!("cannot write {}", segment_name(id)), e));
            }
        }
        Ok(())
    }

    /// Read records of segment `id` from `offset`: (records, bytes, observations) for at
    /// most `max` records; stops at a torn or corrupt record (counted).
    fn scan(&mut self, id: u64, offset: u64, max: usize) -> Result<(u64, u64, Vec<Observation>), SpillError> {
        let mut data = Vec::new();
        match File::open(self.path(id)) {
            Ok(mut f) => {
                f.seek(SeekFrom::Start(offset))
                    .and_then(|_| f.read_to_end(&mut data))
                    .map_err(|e| self.io(format!("cannot read {}", segment_name(id)), e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0, Vec::new())),
            Err(e) => return Err(self.io(format!("cannot open {}", segment_name(id)), e)),
        }
        let (mut at, mut n, mut out) = (0usize, 0u64, Vec::new());
        while n < max as u64 && at + HEADER <= data.len() {
            let len = u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
            let crc = u32::from_le_bytes([data[at + 4], data[at + 5], data[at + 6], data[at + 7]]);
            let end = at + HEADER + len;
            if len > MAX_RECORD || end > data.len() || crc32c(&data[at + HEADER..end]) != crc {
                break;
            }
            match Observation::from_mqtt_json(&data[at + HEADER..end]) {
                Ok(o) => out.push(o),
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), segment = id, offset = offset + at as u64, error = %e, "spilled record skipped");
                    self.corrupt += 1;
                }
            }
            at = end;
            n += 1;
        }
        if n < max as u64 && at < data.len() {
            // A torn or corrupt tail: nothing after it in this segment can be trusted.
            self.corrupt += 1;
            tracing::warn!(dir = %self.dir.display(), segment = id, offset = offset + at as u64, "corrupt spill record: the rest of the segment is skipped");
            return Ok((n, data.len() as u64, out));
        }
        Ok((n, at as u64, out))
    }

    /// Take up to `max` of the oldest records (they leave the spill: the cursor moves, read
    /// segments are deleted).
    pub fn take(&mut self, max: usize) -> Result<Vec<Observation>, SpillError> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(id) = self.segments.front().copied() else { break };
            // Make the writer's buffer readable.
            if self.writer.as_ref().is_some_and(|(w, _, _)| *w == id) {
                self.flush()?;
            }
            let (n, bytes, obs) = self.scan(id, self.read_offset, max - out.len())?;
            self.records = self.records.saturating_sub(n);
            self.bytes = self.bytes.saturating_sub(bytes);
            self.read_offset += bytes;
            out.extend(obs);
            let size = fs::metadata(self.path(id)).map(|m| m.len()).unwrap_or(0);
            if self.read_offset >= size {
                // Fully read: delete it (a segment being written is closed first).
                self.close_writer_if(id)?;
                fs::remove_file(self.path(id))
                    .map_err(|e| self.io(format!("cannot delete {}", segment_name(id)), e))?;
                self.segments.pop_front();
                self.read_offset = 0;
            } else if n == 0 {
                break;
            }
        }
        if self.segments.is_empty() {
            self.records = 0;
            self.bytes = 0;
        }
        self.write_cursor()?;
        Ok(out)
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = self.close_writer();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twins::{GeoPoint, SensorKind};

    fn obs(id: &str, seq: u64) -> Observation {
        Observation {
            sensor_id: id.into(),
            kind: SensorKind::Noise,
            seq,
            observed_at: chrono::DateTime::from_timestamp(1_780_000_000 + seq as i64, 0).expect("time"),
            location: GeoPoint { lat: 14.6, lon: -61.0 },
            district: "Fort-de-France".into(),
            values: twins::Values::filled(50.0, SensorKind::Noise.quantities().len()),
        }
    }

    fn seqs(v: &[Observation]) -> Vec<u64> {
        v.iter().map(|o| o.seq).collect()
    }

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn appends_come_back_in_order_and_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Spill::open(dir.path(), 1 << 30).expect("open");
        let all: Vec<Observation> = (1..=100).map(|i| obs("a", i)).collect();
        s.append(&all[..60].iter().collect::<Vec<_>>()).expect("append");
        assert_eq!(s.len(), 60);
        assert_eq!(seqs(&s.take(10).expect("take")), (1..=10).collect::<Vec<_>>());
        s.append(&all[60..].iter().collect::<Vec<_>>()).expect("append");
        s.flush().expect("flush");
        drop(s);
        // A restart: what was taken is not read again.
        let mut s = Spill::open(dir.path(), 1 << 30).expect("reopen");
        assert_eq!(s.len(), 90);
        let rest = s.take(1000).expect("take");
        assert_eq!(seqs(&rest), (11..=100).collect::<Vec<_>>());
        assert!(s.is_empty() && s.bytes() == 0);
        let left: Vec<_> = fs::read_dir(dir.path())
            .expect("ls")
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
            .collect();
        assert!(left.is_empty(), "read segments are deleted: {left:?}");
    }

    #[test]
    fn the_cap_refuses_what_does_not_fit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Spill::open(dir.path(), 2000).expect("open");
        let mut accepted = 0;
        for i in 1..=20 {
            match s.append(&[&obs("a", i)]) {
                Ok(()) => accepted += 1,
                Err(SpillError::Full { .. }) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(accepted > 0 && accepted < 20, "{accepted}");
        assert!(s.bytes() <= 2000);
        assert!(matches!(s.append(&[&obs("a", 99)]), Err(SpillError::Full { .. })));
        assert_eq!(s.take(100).expect("take").len(), accepted);
    }

    #[test]
    fn prepend_goes_before_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Spill::open(dir.path(), 1 << 30).expect("open");
        let late: Vec<Observation> = (11..=20).map(|i| obs("a", i)).collect();
        let early: Vec<Observation> = (1..=10).map(|i| obs("a", i)).collect();
        s.append(&late.iter().collect::<Vec<_>>()).expect("append");
        assert_eq!(seqs(&s.take(2).expect("take")), vec![11, 12]);
        s.prepend(&early.iter().collect::<Vec<_>>()).expect("prepend");
        drop(s);
        let mut s = Spill::open(dir.path(), 1 << 30).expect("reopen");
        let got = seqs(&s.take(100).expect("take"));
        assert_eq!(got, (1..=10).chain(13..=20).collect::<Vec<_>>());
    }

    #[test]
    fn a_torn_tail_is_skipped_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Spill::open(dir.path(), 1 << 30).expect("open");
        s.append(&(1..=5).map(|i| obs("a", i)).collect::<Vec<_>>().iter().collect::<Vec<_>>()).expect("append");
        drop(s);
        // A crash in the middle of a write: half a record at the end, and garbage.
        let seg = fs::read_dir(dir.path())
            .expect("ls")
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "log"))
            .expect("a segment");
        let mut f = OpenOptions::new().append(true).open(&seg).expect("open");
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'{', b'"']).expect("write");
        drop(f);
        let mut s = Spill::open(dir.path(), 1 << 30).expect("reopen");
        assert_eq!(s.len(), 5);
        assert_eq!(seqs(&s.take(100).expect("take")), vec![1, 2, 3, 4, 5]);
        assert!(s.corrupt >= 1);
        assert!(s.is_empty());
    }
}
