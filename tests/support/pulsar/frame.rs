//! Pulsar binary protocol framing, written here from the protocol documentation (not the
//! `pulsar` crate's codec; only its generated protobuf types are used):
//!
//! * simple command: `[totalSize u32][commandSize u32][BaseCommand]`
//! * payload command: `[totalSize][commandSize][BaseCommand][magic 0x0e01][CRC32C u32]
//!   [metadataSize u32][MessageMetadata][payload]`, the checksum (Castagnoli) covering
//!   `metadataSize + metadata + payload`. Without the magic number the frame carries no
//!   checksum (clients older than protocol v6).
//! * a batch payload: `num_messages_in_batch` times `[size u32][SingleMessageMetadata][payload]`.
//!
//! All integers are big-endian; `totalSize` does not count itself.

use ::pulsar::message::proto::{base_command::Type, BaseCommand, SingleMessageMetadata};
use prost::Message as _;

pub const MAGIC: u16 = 0x0e01;
/// Pulsar's default `maxMessageSize` (5 MiB), announced in CONNECTED.
pub const MAX_MESSAGE_SIZE: usize = 5 * 1024 * 1024;
/// Largest frame accepted: a message plus room for the command and metadata, as Pulsar pads it.
pub const MAX_FRAME_SIZE: usize = MAX_MESSAGE_SIZE + 10 * 1024;

/// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), table-driven.
pub fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// The payload part of a payload command, as received (metadata not decoded yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadFrame {
    /// The checksum the frame carries, `None` without the magic number.
    pub checksum: Option<u32>,
    /// CRC32C computed over `metadataSize + metadata + payload`.
    pub computed: u32,
    pub metadata: Vec<u8>,
    pub data: Vec<u8>,
}

impl PayloadFrame {
    /// True when the frame has no checksum or a matching one.
    pub fn checksum_ok(&self) -> bool {
        self.checksum.is_none_or(|c| c == self.computed)
    }
}

#[derive(Debug, Clone)]
pub struct Frame {
    pub command: BaseCommand,
    pub payload: Option<PayloadFrame>,
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Decodes one frame from the front of `buf`: `Ok(None)` when more bytes are needed,
/// `Ok(Some((frame, bytes used)))`, or an error naming what is wrong with the frame (the
/// connection cannot be resynchronised after that: close it).
pub fn decode_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, String> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let total = be_u32(buf, 0) as usize;
    if total > MAX_FRAME_SIZE {
        return Err(format!("frame of {total} bytes exceeds the maximum of {MAX_FRAME_SIZE}"));
    }
    if total < 4 {
        return Err(format!("frame totalSize {total} is too small to hold a commandSize"));
    }
    if buf.len() < 4 + total {
        return Ok(None);
    }
    let frame = &buf[4..4 + total];
    let command_size = be_u32(frame, 0) as usize;
    if command_size > total - 4 {
        return Err(format!("commandSize {command_size} exceeds the frame's {} remaining bytes", total - 4));
    }
    let command =
        BaseCommand::decode(&frame[4..4 + command_size]).map_err(|e| format!("BaseCommand does not decode: {e}"))?;
    let rest = &frame[4 + command_size..];
    let payload = if rest.is_empty() { None } else { Some(decode_payload(rest)?) };
    Ok(Some((Frame { command, payload }, 4 + total)))
}

fn decode_payload(rest: &[u8]) -> Result<PayloadFrame, String> {
    let (checksum, rest) = if rest.len() >= 2 && u16::from_be_bytes([rest[0], rest[1]]) == MAGIC {
        if rest.len() < 6 {
            return Err("payload frame ends inside its checksum".into());
        }
        (Some(be_u32(rest, 2)), &rest[6..])
    } else {
        (None, rest)
    };
    if rest.len() < 4 {
        return Err("payload frame ends inside its metadataSize".into());
    }
    let metadata_size = be_u32(rest, 0) as usize;
    if metadata_size > rest.len() - 4 {
        return Err(format!("metadataSize {metadata_size} exceeds the frame's {} remaining bytes", rest.len() - 4));
    }
    Ok(PayloadFrame {
        checksum,
        computed: crc32c(rest),
        metadata: rest[4..4 + metadata_size].to_vec(),
        data: rest[4 + metadata_size..].to_vec(),
    })
}

/// `[totalSize][commandSize][BaseCommand]`.
pub fn encode_command(command: &BaseCommand) -> Vec<u8> {
    let body = command.encode_to_vec();
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// A payload command with its CRC32C; `metadata` is an encoded `MessageMetadata`.
pub fn encode_payload_command(command: &BaseCommand, metadata: &[u8], data: &[u8]) -> Vec<u8> {
    let body = command.encode_to_vec();
    let mut checked = Vec::with_capacity(4 + metadata.len() + data.len());
    checked.extend_from_slice(&(metadata.len() as u32).to_be_bytes());
    checked.extend_from_slice(metadata);
    checked.extend_from_slice(data);
    let total = 4 + body.len() + 2 + 4 + checked.len();
    let mut out = Vec::with_capacity(4 + total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&MAGIC.to_be_bytes());
    out.extend_from_slice(&crc32c(&checked).to_be_bytes());
    out.extend_from_slice(&checked);
    out
}

/// Splits a batch payload into its `count` messages.
pub fn parse_batch(count: usize, mut data: &[u8]) -> Result<Vec<(SingleMessageMetadata, Vec<u8>)>, String> {
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        if data.len() < 4 {
            return Err(format!("batch message {i} of {count}: payload ends before its metadata size"));
        }
        let size = be_u32(data, 0) as usize;
        if size > data.len() - 4 {
            return Err(format!("batch message {i} of {count}: metadata size {size} exceeds the payload"));
        }
        let meta = SingleMessageMetadata::decode(&data[4..4 + size])
            .map_err(|e| format!("batch message {i} of {count}: SingleMessageMetadata does not decode: {e}"))?;
        let payload_size = usize::try_from(meta.payload_size)
            .map_err(|_| format!("batch message {i} of {count}: negative payload_size {}", meta.payload_size))?;
        let rest = &data[4 + size..];
        if payload_size > rest.len() {
            return Err(format!("batch message {i} of {count}: payload_size {payload_size} exceeds the payload"));
        }
        out.push((meta, rest[..payload_size].to_vec()));
        data = &rest[payload_size..];
    }
    if !data.is_empty() {
        return Err(format!("{} bytes left after the {count} batch messages", data.len()));
    }
    Ok(out)
}

/// Encodes a batch payload (the inverse of [`parse_batch`]).
pub fn encode_batch(messages: &[(SingleMessageMetadata, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (meta, payload) in messages {
        let meta = SingleMessageMetadata { payload_size: payload.len() as i32, ..meta.clone() };
        let bytes = meta.encode_to_vec();
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(&bytes);
        out.extend_from_slice(payload);
    }
    out
}

/// A `BaseCommand` of type `t` with no sub-command set yet.
pub fn base(t: Type) -> BaseCommand {
    BaseCommand { r#type: t as i32, ..Default::default() }
}

/// The protocol name of a command type (`"SEEK"`), or `type N` for a number outside the enum.
pub fn type_name(t: i32) -> String {
    Type::try_from(t).map(|t| t.as_str_name().to_string()).unwrap_or_else(|_| format!("type {t}"))
}
