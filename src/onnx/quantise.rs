//! Numeric codecs for a cut tensor: what actually crosses a link between tiers.
//!
//! A cut tensor is `f32` data in row-major order with a shape and a *channel axis* (1 for NCHW).
//! [`encode`] turns it into payload bytes plus per-channel [`QuantParams`]; [`decode`] turns them
//! back into `f32`. [`roundtrip`] is what the receiving tier sees, so the accuracy oracle can
//! measure what an encoding costs without building a frame.
//!
//! Encodings (payload layout, all little-endian, elements in row-major order):
//! - `F32`: 4 bytes per element, bit-exact (NaN payloads included).
//! - `F16`: 2 bytes per element (IEEE binary16, round to nearest even). Finite values beyond
//!   ±65504 saturate to ±65504 rather than becoming infinite (a finite activation stays finite);
//!   ±inf and NaN stay ±inf and NaN.
//! - `Int8`: 1 byte per element, an unsigned code `q` in 0..=255.
//! - `Int4`: 4-bit codes `q` in 0..=15, two per byte: element `2k` in the low nibble of byte `k`,
//!   element `2k+1` in the high nibble; an odd count leaves the last high nibble 0 (checked).
//!
//! Integer encodings are *affine per channel*: channel `c` has `scale` and `offset` (the real
//! value of code 0, i.e. the channel minimum — the "zero point" in real units) and decodes as
//! `x = offset + scale * q`, with `scale = (max - min) / max_code`. Affine rather than symmetric
//! because cut tensors are mostly post-ReLU (non-negative) or hard-swish (≥ -0.375): a symmetric
//! code would spend half its range on values that never occur, doubling the step. Storing the
//! offset as an `f32` (not an integer zero point) keeps `min` exactly representable, so an
//! all-zero or constant channel decodes exactly.
//!
//! Every index of the channel axis is a channel: a 1-D tensor with axis 0 has one channel per
//! element, so pass `[1, n]` to quantise `n` values with a single scale.
//!
//! Edge cases, all deterministic:
//! - Constant channel (`max == min`): `scale = 0`, every code 0, decodes exactly to the constant.
//! - Non-finite inputs to integer encodings: min/max are taken over finite values only (a channel
//!   with none gets `offset = 0, scale = 0`); `+inf` saturates to the channel maximum, `-inf` to
//!   the channel minimum, and NaN is quantised as if it were `0.0` (clamped into the channel range).
//! - Empty tensors (a zero dimension): empty payload; integer encodings still carry one
//!   (`scale 0`, `offset 0`) pair per channel of the channel axis, so the header stays uniform.
//!
//! Error bounds (property-tested below): F32 exact; F16 relative error ≤ 2⁻¹¹ for normal values
//! and absolute ≤ 2⁻²⁵ for subnormal ones; Int8 / Int4 ≤ `scale / 2` per element, plus the final
//! rounding of the decoded value to `f32`.

use crate::planner::accuracy::WireEncoding;
use half::f16;

/// Quantisation parameters of one channel: `x = offset + scale * q`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChannelQuant {
    pub scale: f32,
    /// The real value of code 0 (the channel minimum): the zero point in real units.
    pub offset: f32,
}

/// Per-channel parameters: one entry per index of the channel axis for `Int8`/`Int4`, empty for
/// `F32`/`F16`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QuantParams {
    pub channels: Vec<ChannelQuant>,
}

/// An encoded tensor: payload bytes and the parameters needed to decode them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Encoded {
    pub payload: Vec<u8>,
    pub params: QuantParams,
}

/// Why a tensor could not be encoded or decoded. Decoding errors describe untrusted input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantError {
    #[error("shape {shape:?} holds {expected} elements but {got} values were given")]
    ShapeMismatch {
        shape: Vec<usize>,
        expected: usize,
        got: usize,
    },
    #[error("element count of shape {0:?} overflows")]
    ShapeOverflow(Vec<usize>),
    #[error("channel axis {axis} is out of range for rank {rank}")]
    ChannelAxis { axis: usize, rank: usize },
    #[error("{encoding:?} payload for {elements} elements must be {expected} bytes, got {got}")]
    PayloadLength {
        encoding: WireEncoding,
        elements: usize,
        expected: usize,
        got: usize,
    },
    #[error("{encoding:?} needs {expected} channel parameter pairs, got {got}")]
    ParamCount {
        encoding: WireEncoding,
        expected: usize,
        got: usize,
    },
    #[error("channel {channel}: {field} = {value} is invalid: {reason}")]
    InvalidParam {
        channel: usize,
        field: &'static str,
        value: f32,
        reason: &'static str,
    },
    #[error("int4 payload: the unused high nibble of the last byte is {0:#x}, must be 0")]
    Int4Padding(u8),
}

/// Number of elements of `shape`, or `None` on overflow.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Payload bytes for `elements` values under `enc` (its bits per value, rounded up to whole
/// bytes: what the planner costs too), or `None` on overflow.
pub fn payload_len(enc: WireEncoding, elements: usize) -> Option<usize> {
    Some(elements.checked_mul(enc.bits() as usize)?.div_ceil(8))
}

/// Largest integer code of a quantised encoding, `None` for float encodings (which carry no
/// per-channel parameters).
pub fn max_code(enc: WireEncoding) -> Option<u8> {
    match enc {
        WireEncoding::F32 | WireEncoding::F16 => None,
        WireEncoding::Int8 => Some(u8::MAX),
        WireEncoding::Int4 => Some(15),
    }
}

/// How many parameter pairs `enc` carries for a tensor with `channels` channels.
pub fn param_count(enc: WireEncoding, channels: usize) -> usize {
    if enc.is_quantised() {
        channels
    } else {
        0
    }
}

/// The tensor seen as `outer × channels × inner` contiguous runs.
#[derive(Debug, Clone, Copy)]
struct Layout {
    elements: usize,
    channels: usize,
    inner: usize,
}

impl Layout {
    fn new(shape: &[usize], axis: usize) -> Result<Self, QuantError> {
        if axis >= shape.len() {
            return Err(QuantError::ChannelAxis {
                axis,
                rank: shape.len(),
            });
        }
        let elements =
            element_count(shape).ok_or_else(|| QuantError::ShapeOverflow(shape.to_vec()))?;
        // Sub-products of a non-overflowing product cannot overflow unless another factor is 0;
        // then `elements == 0` and `inner` is never used for indexing.
        let inner = element_count(&shape[axis + 1..]).unwrap_or(0);
        Ok(Layout {
            elements,
            channels: shape[axis],
            inner,
        })
    }

    /// Calls `f(channel, start)` for every contiguous run of `inner` elements, in order.
    fn for_each_run(&self, mut f: impl FnMut(usize, usize)) {
        if self.elements == 0 {
            return;
        }
        let mut start = 0;
        while start < self.elements {
            for c in 0..self.channels {
                f(c, start);
                start += self.inner;
            }
        }
    }
}

/// Encodes `values` (row-major, `shape`, channels along `channel_axis`).
pub fn encode(
    values: &[f32],
    shape: &[usize],
    channel_axis: usize,
    enc: WireEncoding,
) -> Result<Encoded, QuantError> {
    let mut out = Encoded::default();
    encode_into(values, shape, channel_axis, enc, &mut out)?;
    Ok(out)
}

/// [`encode`] into a reused buffer (its previous contents are replaced).
pub fn encode_into(
    values: &[f32],
    shape: &[usize],
    channel_axis: usize,
    enc: WireEncoding,
    out: &mut Encoded,
) -> Result<(), QuantError> {
    // The loops below are legacy SSE: on a thread a model run left in the AVX "upper halves in
    // use" state they ran 5.7x slower (see `avx_state`).
    crate::onnx::avx_state::clear_upper_halves();
    let layout = Layout::new(shape, channel_axis)?;
    if values.len() != layout.elements {
        return Err(QuantError::ShapeMismatch {
            shape: shape.to_vec(),
            expected: layout.elements,
            got: values.len(),
        });
    }
    let payload = &mut out.payload;
    payload.clear();
    out.params.channels.clear();
    match enc {
        WireEncoding::F32 => {
            // Sized once, then written in place: a copy the compiler vectorises (extending by
            // four bytes per value cost 1.5–1.9 ns per value).
            payload.resize(values.len() * 4, 0);
            for (dst, v) in payload.chunks_exact_mut(4).zip(values) {
                dst.copy_from_slice(&v.to_le_bytes());
            }
        }
        WireEncoding::F16 => {
            payload.reserve(values.len() * 2);
            for &v in values {
                // Saturate finite values: f16 overflow would turn an activation into inf.
                let v = if v.is_finite() {
                    v.clamp(-f16::MAX.to_f32(), f16::MAX.to_f32())
                } else {
                    v
                };
                payload.extend_from_slice(&f16::from_f32(v).to_le_bytes());
            }
        }
        WireEncoding::Int8 | WireEncoding::Int4 => {
            let top = max_code(enc).unwrap_or(u8::MAX);
            channel_params(values, layout, top, &mut out.params.channels);
            let params = &out.params.channels;
            // One code per byte first; Int4 then packs in place (write index ≤ read index).
            payload.resize(values.len(), 0);
            layout.for_each_run(|c, start| {
                let q = params[c];
                let run = start..start + layout.inner;
                if q.scale == 0.0 {
                    // Constant channel (or no finite values): everything is code 0.
                    payload[run].fill(0);
                    return;
                }
                let top = f32::from(top);
                for (dst, &x) in payload[run.clone()].iter_mut().zip(&values[run]) {
                    *dst = quantise(x, q.offset, q.scale, top);
                }
            });
            if enc == WireEncoding::Int4 {
                pack_nibbles(payload);
            }
        }
    }
    Ok(())
}

/// Packs one 4-bit code per byte into two per byte, in place (the buffer keeps its
/// allocation): element `2k` in the low nibble of byte `k`, `2k+1` in the high one, an odd
/// count's last high nibble 0.
///
/// Each pair is read as one little-endian u16 `v = lo | hi << 8` (codes ≤ 15), so
/// `v | v >> 4` holds `lo | hi << 4` in its low byte: a shift on 16-bit lanes, which x86 has
/// and 8-bit lanes do not. In blocks of [`PACK_BLOCK`] pairs: block `j ≥ 1` writes bytes
/// `[jB, jB + B)`, all before the `[2jB, 2jB + 2B)` it reads, so the two are disjoint slices
/// and the loop vectorises (indexing one buffer both ways ran byte by byte, 0.58 ns per value).
fn pack_nibbles(codes: &mut Vec<u8>) {
    let n = codes.len();
    let pairs = n / 2;
    let pack = |dst: &mut [u8], src: &[u8]| {
        for (d, pair) in dst.iter_mut().zip(src.chunks_exact(2)) {
            let v = u16::from_le_bytes([pair[0], pair[1]]);
            *d = (v | (v >> 4)) as u8;
        }
    };
    // Block 0 overlaps itself: through a copy on the stack.
    let first = pairs.min(PACK_BLOCK);
    let mut head = [0u8; 2 * PACK_BLOCK];
    head[..2 * first].copy_from_slice(&codes[..2 * first]);
    pack(&mut codes[..first], &head[..2 * first]);
    let mut j = 1;
    while j * PACK_BLOCK < pairs {
        let (w, b) = (j * PACK_BLOCK, PACK_BLOCK.min(pairs - j * PACK_BLOCK));
        let (left, right) = codes.split_at_mut(2 * w);
        pack(&mut left[w..w + b], &right[..2 * b]);
        j += 1;
    }
    if n % 2 == 1 {
        codes[pairs] = codes[n - 1];
    }
    codes.truncate(n.div_ceil(2));
}

/// Pairs packed per block by [`pack_nibbles`].
const PACK_BLOCK: usize = 256;

/// The lesser of `a` and `b` by one comparison: `a` when `b` is NaN (`f32::min` handles NaN
/// in either operand, several instructions more).
#[inline]
fn lower(a: f32, b: f32) -> f32 {
    if b < a {
        b
    } else {
        a
    }
}

/// The greater of `a` and `b` by one comparison: `a` when `b` is NaN.
#[inline]
fn upper(a: f32, b: f32) -> f32 {
    if b > a {
        b
    } else {
        a
    }
}

/// The least and greatest finite values of `run`; (+inf, −inf) when it has none.
///
/// In 16 independent lanes, folded at the end: a single running min/max is a chain
/// the compiler may not reorder (float min is not associative under its NaN rules), so it ran
/// one value at a time, 1.4 ns per value; the lanes vectorise, 0.2 ns. Non-finite values
/// become NaN, and a comparison with NaN is false, so they never replace a bound.
fn finite_range(run: &[f32]) -> (f32, f32) {
    const LANES: usize = 16;
    // [`lower`] and [`upper`], not `f32::min`/`max`: a global-pooled map (one value per
    // channel) paid their NaN handling 32 times per value when the lanes were folded with them
    // (66 ns per value against 6).
    let finite = |x: &f32| x.is_finite();
    if run.len() < 2 * LANES {
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        for &x in run.iter().filter(|x| finite(x)) {
            (lo, hi) = (lower(lo, x), upper(hi, x));
        }
        return (lo, hi);
    }
    let mut lo = [f32::INFINITY; LANES];
    let mut hi = [f32::NEG_INFINITY; LANES];
    let chunks = run.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for ((l, h), &x) in lo.iter_mut().zip(hi.iter_mut()).zip(chunk) {
            let y = if x.is_finite() { x } else { f32::NAN };
            *l = lower(*l, y);
            *h = upper(*h, y);
        }
    }
    let rest = rest.iter().copied().filter(finite);
    let lo = lo
        .into_iter()
        .chain(rest.clone())
        .fold(f32::INFINITY, lower);
    let hi = hi.into_iter().chain(rest).fold(f32::NEG_INFINITY, upper);
    (lo, hi)
}

/// Affine min/max parameters per channel, over finite values only.
fn channel_params(values: &[f32], layout: Layout, top: u8, out: &mut Vec<ChannelQuant>) {
    let mut ranges = vec![(f32::INFINITY, f32::NEG_INFINITY); layout.channels];
    layout.for_each_run(|c, start| {
        let (lo, hi) = finite_range(&values[start..start + layout.inner]);
        ranges[c] = (lower(ranges[c].0, lo), upper(ranges[c].1, hi));
    });
    out.extend(ranges.into_iter().map(|(lo, hi)| {
        if lo > hi {
            // No finite value in this channel (or no elements at all).
            ChannelQuant {
                scale: 0.0,
                offset: 0.0,
            }
        } else {
            // In f64 so `hi - lo` cannot overflow for extreme f32 ranges.
            let mut q = ChannelQuant {
                scale: ((f64::from(hi) - f64::from(lo)) / f64::from(top)) as f32,
                offset: lo,
            };
            // Rounding `scale` up can push the top code past f32::MAX for ranges near ±MAX;
            // step it down so the decoder's `validate_params` always accepts what we send.
            while q.scale > 0.0 && !dequantise(top, q).is_finite() {
                q.scale = f32::from_bits(q.scale.to_bits() - 1);
            }
            q
        }
    }));
}

/// The code of `x` in a channel with a finite `offset` and a finite `scale > 0`.
///
/// In f32, twice the lanes per vector instruction of f64 (the f64 loop ran 2.1–2.8 ns per
/// value on int8); a division rather than a multiplication by `1 / scale`, which overflows to
/// inf for the smallest scales and would make `0 · inf` a NaN. A code can differ from exact
/// arithmetic only where `x` sits within f32 rounding of a half-step, still within half a
/// step of `x`.
#[inline]
fn quantise(x: f32, offset: f32, scale: f32, top: f32) -> u8 {
    let x = if x.is_nan() { 0.0 } else { x };
    // `x − offset` is never NaN (offset is finite, x is not NaN) but may overflow to ±inf
    // for ranges near ±f32::MAX; the clamp puts those on the bounds, and absorbs the rounding
    // of `scale` to f32. Then t ≥ 0, so `+ 0.5` and truncation round to nearest.
    let t = ((x - offset) / scale).clamp(0.0, top);
    // SAFETY: `t + 0.5` is finite and in [0.5, top + 0.5] ⊂ [0, 256) (the clamp bounds a
    // non-NaN t; `top` ≤ 255), so it truncates to a `u8`. The saturating `as` cast costs a
    // compare and select per value that this range makes dead.
    unsafe { (t + 0.5).to_int_unchecked::<u8>() }
}

#[inline]
fn dequantise(code: u8, q: ChannelQuant) -> f32 {
    (f64::from(q.offset) + f64::from(code) * f64::from(q.scale)) as f32
}

/// Checks parameters received from elsewhere: right count, finite, non-negative scale, and every
/// code decodes to a finite `f32` (so integer encodings never deliver inf or NaN).
pub fn validate_params(
    enc: WireEncoding,
    channels: usize,
    params: &QuantParams,
) -> Result<(), QuantError> {
    let expected = param_count(enc, channels);
    if params.channels.len() != expected {
        return Err(QuantError::ParamCount {
            encoding: enc,
            expected,
            got: params.channels.len(),
        });
    }
    let Some(top) = max_code(enc) else {
        return Ok(());
    };
    for (channel, q) in params.channels.iter().enumerate() {
        let bad = |field, value, reason| QuantError::InvalidParam {
            channel,
            field,
            value,
            reason,
        };
        if !(q.scale.is_finite() && q.scale >= 0.0) {
            return Err(bad("scale", q.scale, "must be finite and non-negative"));
        }
        if !q.offset.is_finite() {
            return Err(bad("offset", q.offset, "must be finite"));
        }
        if !dequantise(top, *q).is_finite() {
            return Err(bad(
                "scale",
                q.scale,
                "offset + scale * max_code overflows f32",
            ));
        }
    }
    Ok(())
}

/// Decodes a payload produced by [`encode`] (or received over the wire: everything is checked).
pub fn decode(
    payload: &[u8],
    shape: &[usize],
    channel_axis: usize,
    enc: WireEncoding,
    params: &QuantParams,
) -> Result<Vec<f32>, QuantError> {
    let mut out = Vec::new();
    decode_into(payload, shape, channel_axis, enc, params, &mut out)?;
    Ok(out)
}

/// [`decode`] into a reused buffer (its previous contents are replaced).
pub fn decode_into(
    payload: &[u8],
    shape: &[usize],
    channel_axis: usize,
    enc: WireEncoding,
    params: &QuantParams,
    out: &mut Vec<f32>,
) -> Result<(), QuantError> {
    crate::onnx::avx_state::clear_upper_halves();
    let layout = Layout::new(shape, channel_axis)?;
    let n = layout.elements;
    let expected = payload_len(enc, n).ok_or_else(|| QuantError::ShapeOverflow(shape.to_vec()))?;
    if payload.len() != expected {
        return Err(QuantError::PayloadLength {
            encoding: enc,
            elements: n,
            expected,
            got: payload.len(),
        });
    }
    validate_params(enc, layout.channels, params)?;
    if enc == WireEncoding::Int4 && n % 2 == 1 {
        // Canonical form: one valid frame per tensor, so re-encoding reproduces the bytes.
        let pad = payload[n / 2] >> 4;
        if pad != 0 {
            return Err(QuantError::Int4Padding(pad));
        }
    }
    out.clear();
    match enc {
        WireEncoding::F32 => {
            out.resize(n, 0.0);
            for (dst, b) in out.iter_mut().zip(payload.chunks_exact(4)) {
                *dst = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        WireEncoding::F16 => out.extend(
            payload
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        WireEncoding::Int8 | WireEncoding::Int4 => {
            out.resize(n, 0.0);
            let int4 = enc == WireEncoding::Int4;
            let codes = usize::from(max_code(enc).unwrap_or(u8::MAX)) + 1;
            let mut table = [0f32; 256];
            layout.for_each_run(|c, start| {
                let q = params.channels[c];
                let run = &mut out[start..start + layout.inner];
                if run.len() < codes {
                    // Shorter than a table: each value directly.
                    for (i, dst) in (start..).zip(run) {
                        *dst = dequantise(code_at(payload, i, int4), q);
                    }
                    return;
                }
                // The channel's every code decoded once (the same f64 arithmetic), then looked
                // up: the per-value f64 multiply-add and nibble arithmetic ran one value at a
                // time.
                for (code, v) in table[..codes].iter_mut().enumerate() {
                    *v = dequantise(code as u8, q);
                }
                if int4 {
                    unpack_nibbles(payload, start, run, &table);
                } else {
                    for (dst, &b) in run.iter_mut().zip(&payload[start..]) {
                        *dst = table[usize::from(b)];
                    }
                }
            });
        }
    }
    Ok(())
}

/// The code of element `i` of a payload: its byte, or its nibble for int4.
#[inline]
fn code_at(payload: &[u8], i: usize, int4: bool) -> u8 {
    if int4 {
        (payload[i / 2] >> (4 * (i % 2))) & 0x0f
    } else {
        payload[i]
    }
}

/// Decodes the int4 elements `start..start + run.len()` of `payload` into `run` through
/// `table` (code → value): byte by byte, two values each, with an odd element at either end
/// on its own.
fn unpack_nibbles(payload: &[u8], start: usize, run: &mut [f32], table: &[f32; 256]) {
    let (mut i, end) = (start, start + run.len());
    let mut out = run.iter_mut();
    if i % 2 == 1 && i < end {
        if let Some(d) = out.next() {
            *d = table[usize::from(payload[i / 2] >> 4)];
        }
        i += 1;
    }
    let pairs = (end - i) / 2;
    let rest = out.into_slice();
    let (body, tail) = rest.split_at_mut(2 * pairs);
    for (d, &b) in body.chunks_exact_mut(2).zip(&payload[i / 2..i / 2 + pairs]) {
        d[0] = table[usize::from(b & 0x0f)];
        d[1] = table[usize::from(b >> 4)];
    }
    if let Some(d) = tail.first_mut() {
        *d = table[usize::from(payload[(i + 2 * pairs) / 2] & 0x0f)];
    }
}

/// What the receiving tier sees after `enc`: `decode(encode(values))`.
pub fn roundtrip(
    values: &[f32],
    shape: &[usize],
    channel_axis: usize,
    enc: WireEncoding,
) -> Result<Vec<f32>, QuantError> {
    let e = encode(values, shape, channel_axis, enc)?;
    decode(&e.payload, shape, channel_axis, enc, &e.params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use WireEncoding::*;

    const ALL: [WireEncoding; 4] = [F32, F16, Int8, Int4];

    /// Channel index of row-major element `i`.
    fn channel_of(i: usize, shape: &[usize], axis: usize) -> usize {
        let inner: usize = shape[axis + 1..].iter().product();
        (i / inner) % shape[axis]
    }

    /// A shape of rank 1..=4, a channel axis in it, and values of mixed magnitudes.
    fn tensor() -> impl Strategy<Value = (Vec<usize>, usize, Vec<f32>)> {
        (
            prop::collection::vec(1usize..6, 1..=4),
            any::<prop::sample::Index>(),
        )
            .prop_flat_map(|(shape, ax)| {
                let n: usize = shape.iter().product();
                let axis = ax.index(shape.len());
                let magnitude = prop_oneof![Just(1.0f32), Just(1e-3), Just(1e4), Just(1e30)];
                (
                    Just(shape),
                    Just(axis),
                    magnitude.prop_flat_map(move |m| {
                        prop::collection::vec(
                            prop_oneof![4 => -1.0f32..1.0, 1 => Just(0.0)].prop_map(move |x| x * m),
                            n,
                        )
                    }),
                )
            })
    }

    #[test]
    fn known_int8_codes() {
        // Shape [1, 4], axis 0: one channel spanning [0, 2.55]: scale 0.01, codes are the values in hundredths.
        let v = [0.0, 1.0, 2.55, 0.005];
        let e = encode(&v, &[1, 4], 0, Int8).unwrap();
        assert_eq!(e.params.channels.len(), 1);
        assert!((e.params.channels[0].scale - 0.01).abs() < 1e-7);
        assert_eq!(e.params.channels[0].offset, 0.0);
        assert_eq!(e.payload[..3], [0, 100, 255]);
        assert!(e.payload[3] <= 1); // 0.5 of a step: either neighbour is within scale/2
    }

    #[test]
    fn int4_nibble_order_and_padding() {
        // Codes 0..=4 of one channel spanning [0, 15]: bytes (lo, hi) = (0,1), (2,3), (4,pad 0).
        let v = [0.0, 1.0, 2.0, 3.0, 15.0];
        let e = encode(&v, &[1, 5], 0, Int4).unwrap();
        assert_eq!(e.payload, vec![0x10, 0x32, 0x0f]);
        let d = decode(&e.payload, &[1, 5], 0, Int4, &e.params).unwrap();
        assert_eq!(d, v);
        let mut bad = e.payload.clone();
        bad[2] |= 0x50;
        assert_eq!(
            decode(&bad, &[1, 5], 0, Int4, &e.params),
            Err(QuantError::Int4Padding(5))
        );
    }

    #[test]
    fn per_channel_along_axis_1() {
        // NCHW [1,2,1,2]: channel 0 is small, channel 1 large; each gets its own scale.
        let v = [0.0, 1.0, 0.0, 1000.0];
        let e = encode(&v, &[1, 2, 1, 2], 1, Int8).unwrap();
        let s: Vec<f32> = e.params.channels.iter().map(|q| q.scale).collect();
        assert!((s[0] - 1.0 / 255.0).abs() < 1e-9 && (s[1] - 1000.0 / 255.0).abs() < 1e-4);
        assert_eq!(roundtrip(&v, &[1, 2, 1, 2], 1, Int8).unwrap(), v);
    }

    #[test]
    fn constant_channels_are_exact() {
        let v = [3.5f32; 6];
        for enc in [Int8, Int4] {
            let e = encode(&v, &[2, 3], 1, enc).unwrap();
            assert!(e.params.channels.iter().all(|q| q.scale == 0.0));
            assert_eq!(decode(&e.payload, &[2, 3], 1, enc, &e.params).unwrap(), v);
        }
    }

    #[test]
    fn non_finite_inputs_are_deterministic() {
        let v = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1.0, 3.0];
        assert!(roundtrip(&v, &[5], 0, F32)
            .unwrap()
            .iter()
            .zip(&v)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        let h = roundtrip(&v, &[5], 0, F16).unwrap();
        assert!(h[0].is_nan() && h[1] == f32::INFINITY && h[2] == f32::NEG_INFINITY);
        for enc in [Int8, Int4] {
            // Range from finite values only: [1, 3]. inf → max, -inf → min, NaN as 0 → min.
            let d = roundtrip(&v, &[1, 5], 0, enc).unwrap();
            assert_eq!(d, vec![1.0, 3.0, 1.0, 1.0, 3.0], "{enc:?}");
        }
        // A channel with no finite value at all decodes to zeros.
        let d = roundtrip(&[f32::NAN, f32::INFINITY], &[1, 2], 0, Int8).unwrap();
        assert_eq!(d, vec![0.0, 0.0]);
    }

    #[test]
    fn f16_saturates_finite_values() {
        let d = roundtrip(&[1e6, -1e6, 65504.0], &[3], 0, F16).unwrap();
        assert_eq!(d, vec![65504.0, -65504.0, 65504.0]);
    }

    #[test]
    fn extreme_ranges_do_not_overflow() {
        let v = [-f32::MAX, f32::MAX]; // one channel of two
        for enc in [Int8, Int4] {
            let e = encode(&v, &[1, 2], 0, enc).unwrap();
            assert!(e.params.channels[0].scale.is_finite());
            let d = decode(&e.payload, &[1, 2], 0, enc, &e.params).unwrap();
            assert_eq!(d[0], -f32::MAX);
            assert!((d[1] - f32::MAX).abs() <= f32::MAX * 1e-6);
        }
    }

    #[test]
    fn empty_tensors() {
        for enc in ALL {
            // Zero batch: no payload, but one parameter pair per channel for integer codes.
            let e = encode(&[], &[0, 4, 3], 1, enc).unwrap();
            assert!(e.payload.is_empty());
            assert_eq!(e.params.channels.len(), param_count(enc, 4));
            assert_eq!(
                decode(&e.payload, &[0, 4, 3], 1, enc, &e.params).unwrap(),
                Vec::<f32>::new()
            );
            let e = encode(&[], &[2, 0], 1, enc).unwrap();
            assert!(e.payload.is_empty() && e.params.channels.is_empty());
        }
    }

    #[test]
    fn caller_errors() {
        assert!(matches!(
            encode(&[1.0; 5], &[2, 3], 1, Int8),
            Err(QuantError::ShapeMismatch {
                expected: 6,
                got: 5,
                ..
            })
        ));
        assert_eq!(
            encode(&[1.0], &[1], 1, F32),
            Err(QuantError::ChannelAxis { axis: 1, rank: 1 })
        );
        assert!(matches!(
            encode(&[], &[usize::MAX, 2, 0], 0, F16),
            Err(QuantError::ShapeOverflow(_))
        ));
    }

    #[test]
    fn decode_rejects_bad_input() {
        let e = encode(&[0.0, 1.0, 2.0, 3.0], &[2, 2], 1, Int8).unwrap();
        let dec = |p: &[u8], q: &QuantParams| decode(p, &[2, 2], 1, Int8, q);
        assert!(matches!(
            dec(&e.payload[..3], &e.params),
            Err(QuantError::PayloadLength {
                expected: 4,
                got: 3,
                ..
            })
        ));
        let one = QuantParams {
            channels: e.params.channels[..1].to_vec(),
        };
        assert!(matches!(
            dec(&e.payload, &one),
            Err(QuantError::ParamCount {
                expected: 2,
                got: 1,
                ..
            })
        ));
        for (scale, offset, field) in [
            (f32::NAN, 0.0, "scale"),
            (-1.0, 0.0, "scale"),
            (1.0, f32::INFINITY, "offset"),
            (f32::MAX, f32::MAX, "scale"),
        ] {
            let mut p = e.params.clone();
            p.channels[1] = ChannelQuant { scale, offset };
            match dec(&e.payload, &p) {
                Err(QuantError::InvalidParam {
                    channel: 1,
                    field: f,
                    ..
                }) => assert_eq!(f, field),
                other => panic!("{scale} {offset}: {other:?}"),
            }
        }
        // Float encodings carry no parameters.
        let f = encode(&[1.0], &[1], 0, F16).unwrap();
        assert!(decode(&f.payload, &[1], 0, F16, &e.params).is_err());
    }

    /// The codecs before their fast paths (one value at a time): what the lanes, the block
    /// packing and the decode tables must reproduce bit for bit.
    fn reference_encode(values: &[f32], shape: &[usize], axis: usize, top: u8) -> Vec<u8> {
        let inner: usize = shape[axis + 1..].iter().product();
        let channels = shape[axis];
        let mut range = vec![(f32::INFINITY, f32::NEG_INFINITY); channels];
        for (i, &x) in values.iter().enumerate() {
            let c = (i / inner) % channels;
            if x.is_finite() {
                range[c] = (range[c].0.min(x), range[c].1.max(x));
            }
        }
        let codes: Vec<u8> = values
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let (lo, hi) = range[(i / inner) % channels];
                if lo >= hi {
                    return 0;
                }
                let scale = ((f64::from(hi) - f64::from(lo)) / f64::from(top)) as f32;
                quantise(x, lo, scale, f32::from(top))
            })
            .collect();
        if top == 15 {
            let mut packed = vec![0u8; codes.len().div_ceil(2)];
            for (i, &c) in codes.iter().enumerate() {
                packed[i / 2] |= c << (4 * (i % 2));
            }
            packed
        } else {
            codes
        }
    }

    #[test]
    fn fast_paths_match_the_value_at_a_time_codecs() {
        // Runs longer than both tables, odd runs starting on odd elements, payloads across
        // several pack blocks, an odd total, and non-finite values in a long channel.
        let shapes: [(&[usize], usize); 6] = [
            (&[1, 4, 112, 112], 1),
            (&[2, 3, 171], 1),
            (&[1, 1, 1025], 1),
            (&[3, 517], 0),
            (&[5, 301], 1),
            (&[1, 2, 17], 1),
        ];
        for (shape, axis) in shapes {
            let n: usize = shape.iter().product();
            let mut v: Vec<f32> = (0..n)
                .map(|i| ((i * 7919 + 13) % 1009) as f32 / 97.0 - 0.375)
                .collect();
            v[n / 3] = f32::NAN;
            v[n / 2] = f32::INFINITY;
            v[n - 1] = f32::NEG_INFINITY;
            for enc in [Int8, Int4] {
                let top = max_code(enc).unwrap();
                let e = encode(&v, shape, axis, enc).unwrap();
                assert_eq!(
                    e.payload,
                    reference_encode(&v, shape, axis, top),
                    "{enc} {shape:?}"
                );
                let inner: usize = shape[axis + 1..].iter().product();
                let d = decode(&e.payload, shape, axis, enc, &e.params).unwrap();
                for (i, &y) in d.iter().enumerate() {
                    let q = e.params.channels[(i / inner) % shape[axis]];
                    let want = dequantise(code_at(&e.payload, i, enc == Int4), q);
                    assert_eq!(y.to_bits(), want.to_bits(), "{enc} {shape:?} element {i}");
                }
            }
        }
        // Packing keeps the buffer it was given.
        let mut e = Encoded::default();
        encode_into(&[1.0; 4096], &[4096], 0, Int8, &mut e).unwrap();
        let cap = e.payload.capacity();
        encode_into(&[2.0; 4096], &[4096], 0, Int4, &mut e).unwrap();
        assert_eq!((e.payload.len(), e.payload.capacity()), (2048, cap));
    }

    #[test]
    fn buffers_are_reused() {
        let mut e = Encoded::default();
        encode_into(&[1.0; 64], &[64], 0, F32, &mut e).unwrap();
        let cap = e.payload.capacity();
        encode_into(&[2.0; 64], &[64], 0, Int8, &mut e).unwrap();
        assert_eq!(e.payload.len(), 64);
        assert_eq!(
            e.payload.capacity(),
            cap,
            "no reallocation for a smaller payload"
        );
        let mut out = vec![9.0; 3];
        decode_into(&e.payload, &[64], 0, Int8, &e.params, &mut out).unwrap();
        assert_eq!(out, vec![2.0; 64]);
    }

    proptest! {
        #[test]
        fn f32_is_bit_exact(v in prop::collection::vec(any::<f32>(), 0..64)) {
            let n = v.len();
            let d = roundtrip(&v, &[n], 0, F32).unwrap();
            prop_assert!(d.iter().zip(&v).all(|(a, b)| a.to_bits() == b.to_bits()));
            prop_assert_eq!(d.len(), n);
        }

        #[test]
        fn f16_relative_error(v in prop::collection::vec(-65504.0f32..65504.0, 0..64)) {
            let n = v.len();
            let d = roundtrip(&v, &[n], 0, F16).unwrap();
            for (x, y) in v.iter().zip(&d) {
                // Half an ulp: 2^-11 relative for normals, 2^-25 absolute below 2^-14.
                let bound = (x.abs() * 2f32.powi(-11)).max(2f32.powi(-25));
                prop_assert!((x - y).abs() <= bound, "{} -> {}", x, y);
            }
        }

        #[test]
        fn int_error_within_half_step((shape, axis, v) in tensor(), int4 in any::<bool>()) {
            let enc = if int4 { Int4 } else { Int8 };
            let top = f64::from(max_code(enc).unwrap());
            let e = encode(&v, &shape, axis, enc).unwrap();
            prop_assert_eq!(e.payload.len(), payload_len(enc, v.len()).unwrap());
            prop_assert_eq!(e.params.channels.len(), shape[axis]);
            let d = decode(&e.payload, &shape, axis, enc, &e.params).unwrap();
            prop_assert_eq!(&d, &roundtrip(&v, &shape, axis, enc).unwrap());
            // Each channel's scale is the tight one, so the bound below is not vacuous.
            for (c, q) in e.params.channels.iter().enumerate() {
                let xs: Vec<(usize, f32)> = v
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| channel_of(*i, &shape, axis) == c)
                    .map(|(i, x)| (i, *x))
                    .collect();
                let lo = xs.iter().map(|p| p.1).fold(f32::MAX, f32::min);
                let hi = xs.iter().map(|p| p.1).fold(f32::MIN, f32::max);
                prop_assert_eq!(q.offset, lo);
                let tight = (f64::from(hi) - f64::from(lo)) / top;
                prop_assert!((f64::from(q.scale) - tight).abs() <= tight * 1e-6 + 1e-44);
                for (i, x) in xs {
                    let err = f64::from((d[i] - x).abs());
                    // scale/2, plus rounding the decoded value to f32.
                    let tol = f64::from(q.scale) / 2.0 * (1.0 + 1e-6)
                        + (f64::from(x.abs()) + f64::from(q.scale)) * 2f64.powi(-23)
                        + 1e-44;
                    prop_assert!(err <= tol, "{} -> {}: err {} > {}", x, d[i], err, tol);
                }
            }
        }

        #[test]
        fn encode_is_deterministic_and_sized((shape, axis, v) in tensor()) {
            for enc in ALL {
                let a = encode(&v, &shape, axis, enc).unwrap();
                prop_assert_eq!(a.payload.len(), payload_len(enc, v.len()).unwrap());
                prop_assert_eq!(&a, &encode(&v, &shape, axis, enc).unwrap());
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod avx_state_tests {
    use super::*;
    use crate::onnx::avx_state::{dirty_upper_halves, upper_halves_in_use};

    #[test]
    fn the_codec_clears_the_avx_upper_halves_before_its_own_loops_whatever_ran_before() {
        let values: Vec<f32> = (0..4 * 64).map(|i| (i % 17) as f32 * 0.25).collect();
        let shape = [1, 4, 8, 8];
        for enc in WireEncoding::ALL {
            dirty_upper_halves();
            let encoded = encode(&values, &shape, 1, enc).expect("encodes");
            assert_eq!(upper_halves_in_use(), Some(false), "encoding {enc}");
            dirty_upper_halves();
            let back = decode(&encoded.payload, &shape, 1, enc, &encoded.params);
            assert_eq!(upper_halves_in_use(), Some(false), "decoding {enc}");
            assert_eq!(back.expect("decodes").len(), values.len());
        }
    }
}
