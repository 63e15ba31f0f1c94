//! KServe's Open Inference Protocol v2, REST flavour (the same as Triton's HTTP API), with
//! Triton's binary tensor data extension: a pure codec between body bytes and tensors.
//!
//! The HTTP server owns the transport (routes, headers, status lines); this module only turns
//! `POST /v2/models/{name}/infer` bodies into an [`InferRequest`] and outputs into response
//! bytes, and defines the metadata and error objects the protocol returns.
//!
//! # Binary tensor data extension
//!
//! With the `Inference-Header-Content-Length: n` header, the first `n` body bytes are the JSON
//! header and the rest are the raw tensors, in input order, for the inputs whose parameters say
//! `"binary_data_size": k` (little-endian, row-major, no padding). Responses use the same layout
//! for outputs requested with `"binary_data": true` (or all outputs, with the request parameter
//! `"binary_data_output": true`).
//!
//! # Hostile input
//!
//! Every size is checked against [`Limits`] with checked arithmetic before it is trusted, and
//! `data` values are stored only up to `max_elements` per input (the rest are counted, not kept),
//! so memory stays proportional to the limits, not to what a request claims. Nesting depth is
//! bounded by serde_json's recursion limit.

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// The header that carries the JSON header's length in binary-extension bodies.
pub const HEADER_LENGTH_HEADER: &str = "Inference-Header-Content-Length";
/// Content type of a response without binary outputs.
pub const JSON_CONTENT_TYPE: &str = "application/json";
/// Content type of a response with at least one binary output.
pub const BINARY_CONTENT_TYPE: &str = "application/octet-stream";
/// The protocol extensions this codec implements, for [`ServerMetadata`].
pub const EXTENSIONS: &[&str] = &["binary_tensor_data"];

/// Datatypes this server accepts in requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Fp32,
    Uint8,
}

impl DataType {
    /// Parses an OIP datatype string; every datatype but FP32 and UINT8 is a 400.
    pub fn parse(s: &str) -> Result<Self, OipError> {
        match s {
            "FP32" => Ok(Self::Fp32),
            "UINT8" => Ok(Self::Uint8),
            _ => Err(OipError::bad_request(format!(
                "datatype {s:?} is not supported; this server accepts FP32 and UINT8"
            ))),
        }
    }

    /// The protocol's name for the datatype.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Fp32 => "FP32",
            Self::Uint8 => "UINT8",
        }
    }

    /// Bytes per element in binary tensor data.
    pub const fn size(self) -> usize {
        match self {
            Self::Fp32 => 4,
            Self::Uint8 => 1,
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An input's elements, flattened in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    U8(Vec<u8>),
}

impl TensorData {
    pub fn datatype(&self) -> DataType {
        match self {
            Self::F32(_) => DataType::Fp32,
            Self::U8(_) => DataType::Uint8,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::U8(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements as f32 (UINT8 values converted exactly), which is what the models take.
    pub fn into_f32(self) -> Vec<f32> {
        match self {
            Self::F32(v) => v,
            Self::U8(v) => v.into_iter().map(f32::from).collect(),
        }
    }
}

/// One request input; `data.len()` always equals the product of `shape`.
#[derive(Debug, Clone, PartialEq)]
pub struct InputTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

/// An entry of the request's `outputs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedOutput {
    pub name: String,
    /// The output's parameter `"binary_data": true`.
    pub binary: bool,
}

/// A parsed inference request.
#[derive(Debug, Clone, PartialEq)]
pub struct InferRequest {
    pub id: Option<String>,
    /// Never empty; names are distinct.
    pub inputs: Vec<InputTensor>,
    /// Empty: all outputs. Names are distinct.
    pub outputs: Vec<RequestedOutput>,
    /// The request parameter `"binary_data_output": true`.
    pub binary_output: bool,
    /// The request's `parameters`, as sent.
    pub parameters: Map<String, Value>,
}

/// Bounds on what a request may make the server hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Whole body, JSON header and binary data together.
    pub max_body_bytes: usize,
    /// Elements of one input (the product of its shape).
    pub max_elements: usize,
}

/// A protocol error: the HTTP status and the message of the protocol's error object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct OipError {
    pub status: u16,
    pub message: String,
}

impl OipError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }

    /// 413.
    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(413, message)
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, message)
    }

    /// The protocol's error object, `{"error": "<message>"}`.
    pub fn body(&self) -> String {
        serde_json::json!({ "error": self.message }).to_string()
    }
}

/// Parses the `Inference-Header-Content-Length` header value. Only ASCII digits are accepted:
/// `str::parse` would also take a leading `+`, which the header's grammar does not allow.
pub fn parse_header_length(value: &str) -> Result<usize, OipError> {
    let v = value.trim();
    let bad = || {
        OipError::bad_request(format!(
            "{HEADER_LENGTH_HEADER} must be a non-negative integer that fits in memory, got {value:?}"
        ))
    };
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    v.parse().map_err(|_| bad())
}

/// Parses an inference request body. `header_length` is the parsed
/// `Inference-Header-Content-Length` ([`parse_header_length`]), if the header was sent.
pub fn parse_infer_request(
    body: &[u8],
    header_length: Option<usize>,
    limits: &Limits,
) -> Result<InferRequest, OipError> {
    if body.len() > limits.max_body_bytes {
        return Err(OipError::payload_too_large(format!(
            "the request body is {} bytes; the limit is {}",
            body.len(),
            limits.max_body_bytes
        )));
    }
    let (header, mut binary) = match header_length {
        None => (body, None),
        Some(n) => {
            let (h, t) = body.split_at_checked(n).ok_or_else(|| {
                OipError::bad_request(format!(
                    "{HEADER_LENGTH_HEADER} is {n} but the body is only {} bytes",
                    body.len()
                ))
            })?;
            (h, Some(t))
        }
    };

    let mut de = serde_json::Deserializer::from_slice(header);
    let raw = RequestSeed {
        max_elements: limits.max_elements,
    }
    .deserialize(&mut de)
    .and_then(|r| de.end().map(|()| r))
    .map_err(|e| OipError::bad_request(format!("malformed inference request: {e}")))?;

    let raw_inputs = raw
        .inputs
        .ok_or_else(|| OipError::bad_request("the request has no \"inputs\""))?;
    if raw_inputs.is_empty() {
        return Err(OipError::bad_request(
            "\"inputs\" is empty; the request needs at least one input",
        ));
    }
    let mut inputs: Vec<InputTensor> = Vec::with_capacity(raw_inputs.len());
    for (index, raw_input) in raw_inputs.into_iter().enumerate() {
        let input = convert_input(index, raw_input, limits, &mut binary)?;
        if inputs.iter().any(|i| i.name == input.name) {
            return Err(OipError::bad_request(format!(
                "input {:?} appears more than once",
                input.name
            )));
        }
        inputs.push(input);
    }
    if let Some(rest) = binary {
        if !rest.is_empty() {
            return Err(OipError::bad_request(format!(
                "the body has {} bytes after the JSON header that no input's binary_data_size accounts for",
                rest.len()
            )));
        }
    }

    let mut outputs: Vec<RequestedOutput> = Vec::new();
    for raw_output in raw.outputs.unwrap_or_default() {
        let binary = match raw_output
            .parameters
            .as_ref()
            .and_then(|p| p.get("binary_data"))
        {
            None => false,
            Some(v) => v.as_bool().ok_or_else(|| {
                OipError::bad_request(format!(
                    "parameter \"binary_data\" of output {:?} must be a boolean, got {v}",
                    raw_output.name
                ))
            })?,
        };
        if outputs.iter().any(|o| o.name == raw_output.name) {
            return Err(OipError::bad_request(format!(
                "output {:?} is requested more than once",
                raw_output.name
            )));
        }
        outputs.push(RequestedOutput {
            name: raw_output.name,
            binary,
        });
    }

    let parameters = raw.parameters.unwrap_or_default();
    let binary_output = match parameters.get("binary_data_output") {
        None => false,
        Some(v) => v.as_bool().ok_or_else(|| {
            OipError::bad_request(format!(
                "request parameter \"binary_data_output\" must be a boolean, got {v}"
            ))
        })?,
    };

    Ok(InferRequest {
        id: raw.id,
        inputs,
        outputs,
        binary_output,
        parameters,
    })
}

/// Validates one raw input and takes its binary data (if any) from the front of `binary`.
fn convert_input(
    index: usize,
    raw: RawInput,
    limits: &Limits,
    binary: &mut Option<&[u8]>,
) -> Result<InputTensor, OipError> {
    let name = raw
        .name
        .ok_or_else(|| OipError::bad_request(format!("input {index} has no \"name\"")))?;
    let datatype = raw
        .datatype
        .ok_or_else(|| OipError::bad_request(format!("input {name:?} has no \"datatype\"")))?;
    let datatype = DataType::parse(&datatype)
        .map_err(|e| OipError::bad_request(format!("input {name:?}: {e}")))?;
    let raw_shape = raw
        .shape
        .ok_or_else(|| OipError::bad_request(format!("input {name:?} has no \"shape\"")))?;
    let shape = raw_shape
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| {
                if d < 0 {
                    OipError::bad_request(format!(
                        "input {name:?} has shape {raw_shape:?}; dimensions must be non-negative"
                    ))
                } else {
                    OipError::payload_too_large(format!(
                        "input {name:?} has a dimension {d} this server cannot address"
                    ))
                }
            })
        })
        .collect::<Result<Vec<usize>, _>>()?;
    let count = element_count(&shape).ok_or_else(|| {
        OipError::payload_too_large(format!(
            "input {name:?} has shape {shape:?}, whose element count overflows; the limit is {} elements",
            limits.max_elements
        ))
    })?;
    if count > limits.max_elements {
        return Err(OipError::payload_too_large(format!(
            "input {name:?} has shape {shape:?}, {count} elements; the limit is {}",
            limits.max_elements
        )));
    }

    let binary_size = match raw
        .parameters
        .as_ref()
        .and_then(|p| p.get("binary_data_size"))
    {
        None => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            OipError::bad_request(format!(
                "parameter \"binary_data_size\" of input {name:?} must be a non-negative integer, got {v}"
            ))
        })?),
    };

    let data = match (raw.data, binary_size) {
        (Some(_), Some(_)) => {
            return Err(OipError::bad_request(format!(
                "input {name:?} has both \"data\" and a binary_data_size; send one"
            )))
        }
        (None, None) => {
            return Err(OipError::bad_request(format!(
                "input {name:?} has neither \"data\" nor a binary_data_size parameter"
            )))
        }
        (Some(flat), None) => json_data(&name, datatype, &shape, count, flat)?,
        (None, Some(size)) => {
            let rest = binary.as_mut().ok_or_else(|| {
                OipError::bad_request(format!(
                    "input {name:?} has a binary_data_size but the request has no {HEADER_LENGTH_HEADER} header"
                ))
            })?;
            let want = count.checked_mul(datatype.size()).ok_or_else(|| {
                OipError::payload_too_large(format!(
                    "input {name:?} has shape {shape:?}, too many bytes to address"
                ))
            })?;
            if usize::try_from(size).ok() != Some(want) {
                return Err(OipError::bad_request(format!(
                    "input {name:?} has binary_data_size {size} but shape {shape:?} of {datatype} takes {want} bytes"
                )));
            }
            let (mine, after) = (*rest).split_at_checked(want).ok_or_else(|| {
                OipError::bad_request(format!(
                    "input {name:?} has binary_data_size {size} but only {} bytes of binary data remain",
                    rest.len()
                ))
            })?;
            *rest = after;
            binary_data(datatype, mine)?
        }
    };
    Ok(InputTensor { name, shape, data })
}

/// The product of the dimensions, `None` on overflow. A zero dimension makes the product zero
/// whatever the others are, so it is checked first (the product does not overflow then).
fn element_count(shape: &[usize]) -> Option<usize> {
    if shape.contains(&0) {
        return Some(0);
    }
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

fn json_data(
    name: &str,
    datatype: DataType,
    shape: &[usize],
    count: usize,
    flat: FlatData,
) -> Result<TensorData, OipError> {
    if let Some((i, kind)) = flat.first_non_number {
        return Err(OipError::bad_request(format!(
            "element {i} of input {name:?} is {kind}, not a number"
        )));
    }
    if flat.count != count {
        return Err(OipError::bad_request(format!(
            "input {name:?} has {} elements in \"data\" but shape {shape:?} has {count}",
            flat.count
        )));
    }
    // `count <= max_elements` (the storage budget), so every element was kept.
    match datatype {
        DataType::Fp32 => {
            // JSON cannot spell infinity: an infinite value is a finite number beyond f32.
            if let Some(i) = flat.values.iter().position(|v| v.is_infinite()) {
                return Err(OipError::bad_request(format!(
                    "element {i} of input {name:?} is outside the FP32 range"
                )));
            }
            Ok(TensorData::F32(flat.values))
        }
        DataType::Uint8 => {
            if let Some((i, v)) = flat.first_fraction {
                return Err(OipError::bad_request(format!(
                    "element {i} of input {name:?} is {v}; UINT8 elements are integers 0..=255"
                )));
            }
            // Integers up to 2^24 are exact in f32, and larger ones stay larger than 255.
            let mut out = Vec::with_capacity(flat.values.len());
            for (i, &v) in flat.values.iter().enumerate() {
                if !(0.0..=255.0).contains(&v) {
                    return Err(OipError::bad_request(format!(
                        "element {i} of input {name:?} is {v}; UINT8 elements are integers 0..=255"
                    )));
                }
                out.push(v as u8);
            }
            Ok(TensorData::U8(out))
        }
    }
}

fn binary_data(datatype: DataType, bytes: &[u8]) -> Result<TensorData, OipError> {
    match datatype {
        DataType::Uint8 => Ok(TensorData::U8(bytes.to_vec())),
        DataType::Fp32 => bytes
            .chunks_exact(4)
            .map(|c| <[u8; 4]>::try_from(c).map(f32::from_le_bytes))
            .collect::<Result<Vec<f32>, _>>()
            .map(TensorData::F32)
            .map_err(|_| OipError::internal("binary FP32 data is not a whole number of elements")),
    }
}

/// One response output; responses are FP32.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A response body ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub body: Vec<u8>,
    pub content_type: &'static str,
    /// `Some(n)` when there are binary outputs: the `Inference-Header-Content-Length` to send.
    pub header_length: Option<usize>,
}

#[derive(Serialize)]
struct ResponseJson<'a> {
    model_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    parameters: Map<String, Value>,
    outputs: Vec<OutputJson<'a>>,
}

#[derive(Serialize)]
struct OutputJson<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinaryParameters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a [f32]>,
}

#[derive(Serialize)]
struct BinaryParameters {
    binary_data_size: usize,
}

/// Builds the inference response for `request`: the outputs it asked for (all when it named
/// none, in the model's order; otherwise in the order asked), each as JSON or, when the request
/// asked for binary, as little-endian f32 after the JSON header.
pub fn encode_infer_response(
    model_name: &str,
    model_version: Option<&str>,
    request: &InferRequest,
    parameters: Map<String, Value>,
    outputs: &[OutputTensor],
) -> Result<Encoded, OipError> {
    let selected: Vec<(&OutputTensor, bool)> = if request.outputs.is_empty() {
        outputs.iter().map(|o| (o, request.binary_output)).collect()
    } else {
        let missing: Vec<&str> = request
            .outputs
            .iter()
            .filter(|r| !outputs.iter().any(|o| o.name == r.name))
            .map(|r| r.name.as_str())
            .collect();
        if !missing.is_empty() {
            let available: Vec<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
            return Err(OipError::bad_request(format!(
                "requested outputs {missing:?} do not exist; the model's outputs are {available:?}"
            )));
        }
        request
            .outputs
            .iter()
            .filter_map(|r| {
                outputs
                    .iter()
                    .find(|o| o.name == r.name)
                    .map(|o| (o, r.binary || request.binary_output))
            })
            .collect()
    };

    let mut tail: Vec<u8> = Vec::new();
    let mut json_outputs = Vec::with_capacity(selected.len());
    for &(out, binary) in &selected {
        // These are the server's own tensors, so a mismatch is a bug on our side: 500.
        if element_count(&out.shape) != Some(out.data.len()) {
            return Err(OipError::internal(format!(
                "output {:?} has shape {:?} but {} elements",
                out.name,
                out.shape,
                out.data.len()
            )));
        }
        if binary {
            tail.reserve(out.data.len() * 4);
            for v in &out.data {
                tail.extend_from_slice(&v.to_le_bytes());
            }
            json_outputs.push(OutputJson {
                name: &out.name,
                datatype: DataType::Fp32.as_str(),
                shape: &out.shape,
                parameters: Some(BinaryParameters {
                    binary_data_size: out.data.len() * 4,
                }),
                data: None,
            });
        } else {
            // serde_json would write NaN and infinities as `null`, which clients would misread.
            if let Some((i, v)) = out.data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(OipError::internal(format!(
                    "element {i} of output {:?} is {v}, which JSON cannot carry; request binary output",
                    out.name
                )));
            }
            json_outputs.push(OutputJson {
                name: &out.name,
                datatype: DataType::Fp32.as_str(),
                shape: &out.shape,
                parameters: None,
                data: Some(&out.data),
            });
        }
    }
    let any_binary = selected.iter().any(|&(_, b)| b);
    let response = ResponseJson {
        model_name,
        model_version,
        id: request.id.as_deref(),
        parameters,
        outputs: json_outputs,
    };
    let mut body = serde_json::to_vec(&response)
        .map_err(|e| OipError::internal(format!("cannot serialise the response: {e}")))?;
    if any_binary {
        let header_length = body.len();
        body.extend_from_slice(&tail);
        Ok(Encoded {
            body,
            content_type: BINARY_CONTENT_TYPE,
            header_length: Some(header_length),
        })
    } else {
        Ok(Encoded {
            body,
            content_type: JSON_CONTENT_TYPE,
            header_length: None,
        })
    }
}

/// A tensor in model metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetadataTensor {
    pub name: String,
    pub datatype: String,
    /// -1 for a variable dimension.
    pub shape: Vec<i64>,
}

/// `GET /v2/models/{name}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: String,
    pub inputs: Vec<MetadataTensor>,
    pub outputs: Vec<MetadataTensor>,
}

/// `GET /v2` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerMetadata {
    pub name: String,
    pub version: String,
    pub extensions: Vec<String>,
}

impl ServerMetadata {
    /// Server metadata listing the extensions this codec implements ([`EXTENSIONS`]).
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            extensions: EXTENSIONS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// Checks an input against what the model takes: its name, when the model's input name is
/// known, and its shape. The datatype needs no check here: the parser accepts only FP32 and
/// UINT8, and both convert exactly to the f32 the models take ([`TensorData::into_f32`]).
pub fn check_input(
    input: &InputTensor,
    want_name: Option<&str>,
    want_shape: &[usize],
) -> Result<(), OipError> {
    if let Some(want) = want_name {
        if input.name != want {
            return Err(OipError::bad_request(format!(
                "input {:?} is not an input of this model; it takes {want:?}",
                input.name
            )));
        }
    }
    if input.shape != want_shape {
        return Err(OipError::bad_request(format!(
            "input {:?} has shape {:?}; the model takes {want_shape:?}",
            input.name, input.shape
        )));
    }
    Ok(())
}

// --- JSON header deserialisation -------------------------------------------------------------
//
// Hand-written visitors rather than `#[derive(Deserialize)]` so that `data` can be flattened as
// it streams, within a storage budget, without first building a `serde_json::Value` tree (tens of
// bytes per element) or knowing the datatype (which may come after `data` in the object).

#[derive(Default)]
struct RawRequest {
    id: Option<String>,
    parameters: Option<Map<String, Value>>,
    inputs: Option<Vec<RawInput>>,
    outputs: Option<Vec<RawOutput>>,
}

#[derive(Default)]
struct RawInput {
    name: Option<String>,
    shape: Option<Vec<i64>>,
    datatype: Option<String>,
    parameters: Option<Map<String, Value>>,
    data: Option<FlatData>,
}

#[derive(Deserialize)]
struct RawOutput {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

/// `data` flattened: the first `budget` numbers as f32, and what the rest looked like.
struct FlatData {
    budget: usize,
    values: Vec<f32>,
    /// Scalars seen, kept or not.
    count: usize,
    first_non_number: Option<(usize, &'static str)>,
    /// First number written with a fraction or exponent (not a UINT8).
    first_fraction: Option<(usize, f64)>,
}

impl FlatData {
    fn number(&mut self, v: f32) {
        if self.values.len() < self.budget {
            self.values.push(v);
        }
        self.count += 1;
    }

    fn non_number(&mut self, kind: &'static str) {
        if self.first_non_number.is_none() {
            self.first_non_number = Some((self.count, kind));
        }
        self.count += 1;
    }
}

fn set_once<T, E: de::Error>(slot: &mut Option<T>, value: T, field: &'static str) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(field));
    }
    *slot = Some(value);
    Ok(())
}

struct RequestSeed {
    max_elements: usize,
}

impl<'de> DeserializeSeed<'de> for RequestSeed {
    type Value = RawRequest;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<RawRequest, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RequestSeed {
    type Value = RawRequest;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an inference request object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRequest, A::Error> {
        let mut req = RawRequest::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "id" => set_once(&mut req.id, map.next_value()?, "id")?,
                "parameters" => set_once(&mut req.parameters, map.next_value()?, "parameters")?,
                "inputs" => {
                    let inputs = map.next_value_seed(InputsSeed {
                        max_elements: self.max_elements,
                    })?;
                    set_once(&mut req.inputs, inputs, "inputs")?
                }
                "outputs" => set_once(&mut req.outputs, map.next_value()?, "outputs")?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(req)
    }
}

struct InputsSeed {
    max_elements: usize,
}

impl<'de> DeserializeSeed<'de> for InputsSeed {
    type Value = Vec<RawInput>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Vec<RawInput>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for InputsSeed {
    type Value = Vec<RawInput>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of input tensors")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<RawInput>, A::Error> {
        let mut inputs = Vec::new();
        while let Some(input) = seq.next_element_seed(InputSeed {
            max_elements: self.max_elements,
        })? {
            inputs.push(input);
        }
        Ok(inputs)
    }
}

struct InputSeed {
    max_elements: usize,
}

impl<'de> DeserializeSeed<'de> for InputSeed {
    type Value = RawInput;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<RawInput, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for InputSeed {
    type Value = RawInput;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an input tensor object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawInput, A::Error> {
        let mut input = RawInput::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "name" => set_once(&mut input.name, map.next_value()?, "name")?,
                "shape" => set_once(&mut input.shape, map.next_value()?, "shape")?,
                "datatype" => set_once(&mut input.datatype, map.next_value()?, "datatype")?,
                "parameters" => set_once(&mut input.parameters, map.next_value()?, "parameters")?,
                "data" => {
                    let data = map.next_value_seed(DataSeed {
                        budget: self.max_elements,
                    })?;
                    set_once(&mut input.data, data, "data")?
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(input)
    }
}

struct DataSeed {
    budget: usize,
}

impl<'de> DeserializeSeed<'de> for DataSeed {
    type Value = FlatData;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<FlatData, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for DataSeed {
    type Value = FlatData;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of numbers (possibly nested)")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FlatData, A::Error> {
        let mut flat = FlatData {
            budget: self.budget,
            values: Vec::new(),
            count: 0,
            first_non_number: None,
            first_fraction: None,
        };
        while seq
            .next_element_seed(ElementSeed { flat: &mut flat })?
            .is_some()
        {}
        Ok(flat)
    }
}

/// One element of `data`: a number, or a nested array flattened into the same [`FlatData`].
struct ElementSeed<'a> {
    flat: &'a mut FlatData,
}

impl<'de> DeserializeSeed<'de> for ElementSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ElementSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number or an array")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.flat.number(v as f32);
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.flat.number(v as f32);
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        if self.flat.first_fraction.is_none() {
            self.flat.first_fraction = Some((self.flat.count, v));
        }
        self.flat.number(v as f32);
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.flat.non_number("a boolean");
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.flat.non_number("a string");
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.flat.non_number("null");
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        self.flat.non_number("an object");
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let flat = self.flat;
        while seq
            .next_element_seed(ElementSeed { flat: &mut *flat })?
            .is_some()
        {}
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIMITS: Limits = Limits {
        max_body_bytes: 1 << 20,
        max_elements: 1 << 16,
    };

    fn parse(body: &str) -> Result<InferRequest, OipError> {
        parse_infer_request(body.as_bytes(), None, &LIMITS)
    }

    fn err(body: &str) -> OipError {
        match parse(body) {
            Ok(r) => panic!("expected an error, parsed {r:?}"),
            Err(e) => e,
        }
    }

    fn assert_mentions(e: &OipError, status: u16, words: &[&str]) {
        assert_eq!(e.status, status, "{e}");
        for w in words {
            assert!(
                e.message.contains(w),
                "{:?} does not mention {w:?}",
                e.message
            );
        }
    }

    /// A body laid out as tritonclient's `InferenceServerClient.infer` sends it: Python's
    /// `json.dumps` header (", " and ": " separators), then the raw tensor bytes.
    fn triton_body(values: &[f32]) -> (Vec<u8>, usize) {
        let header = format!(
            r#"{{"inputs": [{{"name": "x", "shape": [1, {}], "datatype": "FP32", "parameters": {{"binary_data_size": {}}}}}], "outputs": [{{"name": "y", "parameters": {{"binary_data": true}}}}]}}"#,
            values.len(),
            values.len() * 4
        );
        let mut body = header.clone().into_bytes();
        for v in values {
            body.extend_from_slice(&v.to_le_bytes());
        }
        (body, header.len())
    }

    #[test]
    fn kserve_doc_request_with_uint32_is_refused() {
        let e = err(
            r#"{"id":"42","inputs":[{"name":"input0","shape":[2,2],"datatype":"UINT32","data":[1,2,3,4]},{"name":"input1","shape":[3],"datatype":"BOOL","data":[true]}],"outputs":[{"name":"output0"}]}"#,
        );
        assert_mentions(&e, 400, &["UINT32", "input0", "FP32", "UINT8"]);
    }

    #[test]
    fn other_datatypes_are_refused_by_name() {
        for dt in ["INT64", "FP16", "BYTES", "fp32", ""] {
            let e = err(&format!(
                r#"{{"inputs":[{{"name":"x","shape":[1],"datatype":"{dt}","data":[1]}}]}}"#
            ));
            assert_mentions(&e, 400, &[&format!("{dt:?}"), "FP32 and UINT8"]);
        }
    }

    #[test]
    fn kserve_doc_request_as_fp32_parses() {
        let r = parse(
            r#"{"id":"42","inputs":[{"name":"input0","shape":[2,2],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[{"name":"output0"}]}"#,
        )
        .unwrap();
        assert_eq!(r.id.as_deref(), Some("42"));
        assert_eq!(
            r.inputs,
            vec![InputTensor {
                name: "input0".into(),
                shape: vec![2, 2],
                data: TensorData::F32(vec![1.0, 2.0, 3.0, 4.0]),
            }]
        );
        assert_eq!(
            r.outputs,
            vec![RequestedOutput {
                name: "output0".into(),
                binary: false
            }]
        );
        assert!(!r.binary_output);
        assert!(r.parameters.is_empty());
    }

    #[test]
    fn nested_data_equals_flat() {
        let flat = parse(
            r#"{"inputs":[{"name":"a","shape":[2,2],"datatype":"FP32","data":[1,2.5,3,4]}]}"#,
        )
        .unwrap();
        let nested = parse(
            r#"{"inputs":[{"data":[[1,2.5],[3,4]],"datatype":"FP32","shape":[2,2],"name":"a"}]}"#,
        )
        .unwrap();
        assert_eq!(flat, nested);
        assert_eq!(
            flat.inputs[0].data,
            TensorData::F32(vec![1.0, 2.5, 3.0, 4.0])
        );
    }

    #[test]
    fn uint8_parses_and_converts() {
        let r = parse(
            r#"{"inputs":[{"name":"img","shape":[3],"datatype":"UINT8","data":[0,128,255]}]}"#,
        )
        .unwrap();
        assert_eq!(r.inputs[0].data, TensorData::U8(vec![0, 128, 255]));
        assert_eq!(r.inputs[0].data.clone().into_f32(), vec![0.0, 128.0, 255.0]);
    }

    #[test]
    fn parameters_and_unknown_fields_are_kept_or_tolerated() {
        let r = parse(
            r#"{"model_name":"m","extra":{"a":[1]},"parameters":{"binary_data_output":true,"priority":3},"inputs":[{"name":"a","shape":[],"datatype":"FP32","data":[7],"whatever":null}]}"#,
        )
        .unwrap();
        assert!(r.binary_output);
        assert_eq!(r.parameters.get("priority"), Some(&json!(3)));
        assert_eq!(r.inputs[0].shape, Vec::<usize>::new());
        assert_eq!(r.inputs[0].data, TensorData::F32(vec![7.0]));
    }

    #[test]
    fn kserve_doc_response_round_trips() {
        let request = parse(
            r#"{"id":"42","inputs":[{"name":"input0","shape":[1],"datatype":"FP32","data":[0]}]}"#,
        )
        .unwrap();
        let outputs = [OutputTensor {
            name: "output0".into(),
            shape: vec![3, 2],
            data: vec![1.0, 1.1, 2.0, 2.1, 3.0, 3.1],
        }];
        let enc = encode_infer_response("mymodel", None, &request, Map::new(), &outputs).unwrap();
        assert_eq!(enc.content_type, "application/json");
        assert_eq!(enc.header_length, None);
        let got: Value = serde_json::from_slice(&enc.body).unwrap();
        assert_eq!(
            got,
            json!({"model_name":"mymodel","id":"42","outputs":[{"name":"output0","shape":[3,2],"datatype":"FP32","data":[1.0,1.1,2.0,2.1,3.0,3.1]}]})
        );
    }

    #[test]
    fn response_carries_version_parameters_and_requested_order() {
        let request = parse(
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[0]}],"outputs":[{"name":"b"},{"name":"a"}]}"#,
        )
        .unwrap();
        let outputs = [
            OutputTensor {
                name: "a".into(),
                shape: vec![1],
                data: vec![1.0],
            },
            OutputTensor {
                name: "b".into(),
                shape: vec![1],
                data: vec![2.0],
            },
        ];
        let mut params = Map::new();
        params.insert("tier".into(), json!("edge"));
        let enc = encode_infer_response("m", Some("3"), &request, params, &outputs).unwrap();
        let got: Value = serde_json::from_slice(&enc.body).unwrap();
        assert_eq!(
            got,
            json!({"model_name":"m","model_version":"3","parameters":{"tier":"edge"},"outputs":[
                {"name":"b","datatype":"FP32","shape":[1],"data":[2.0]},
                {"name":"a","datatype":"FP32","shape":[1],"data":[1.0]}]})
        );
    }

    #[test]
    fn binary_request_like_tritonclient() {
        let values = [1.5f32, -2.25, 0.0, f32::MAX];
        let (body, header_len) = triton_body(&values);
        let r = parse_infer_request(&body, Some(header_len), &LIMITS).unwrap();
        assert_eq!(r.inputs.len(), 1);
        assert_eq!(r.inputs[0].name, "x");
        assert_eq!(r.inputs[0].shape, vec![1, 4]);
        assert_eq!(r.inputs[0].data, TensorData::F32(values.to_vec()));
        assert_eq!(
            r.outputs,
            vec![RequestedOutput {
                name: "y".into(),
                binary: true
            }]
        );
    }

    #[test]
    fn binary_uint8_and_json_inputs_mix_in_order() {
        let header = r#"{"inputs":[{"name":"a","shape":[2],"datatype":"UINT8","parameters":{"binary_data_size":2}},{"name":"b","shape":[1],"datatype":"FP32","data":[5]},{"name":"c","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}]}"#;
        let mut body = header.as_bytes().to_vec();
        body.extend_from_slice(&[9, 250]);
        body.extend_from_slice(&0.5f32.to_le_bytes());
        let r = parse_infer_request(&body, Some(header.len()), &LIMITS).unwrap();
        assert_eq!(r.inputs[0].data, TensorData::U8(vec![9, 250]));
        assert_eq!(r.inputs[1].data, TensorData::F32(vec![5.0]));
        assert_eq!(r.inputs[2].data, TensorData::F32(vec![0.5]));
    }

    #[test]
    fn binary_response_output() {
        let (body, header_len) = triton_body(&[1.0, 2.0, 3.0, 4.0]);
        let request = parse_infer_request(&body, Some(header_len), &LIMITS).unwrap();
        let out = [
            OutputTensor {
                name: "y".into(),
                shape: vec![1, 2],
                data: vec![0.25, -8.0],
            },
            OutputTensor {
                name: "z".into(),
                shape: vec![1],
                data: vec![1.0],
            },
        ];
        let enc = encode_infer_response("m", None, &request, Map::new(), &out).unwrap();
        assert_eq!(enc.content_type, "application/octet-stream");
        let n = enc.header_length.unwrap();
        let header: Value = serde_json::from_slice(&enc.body[..n]).unwrap();
        assert_eq!(
            header,
            json!({"model_name":"m","outputs":[{"name":"y","datatype":"FP32","shape":[1,2],"parameters":{"binary_data_size":8}}]})
        );
        let mut tail = 0.25f32.to_le_bytes().to_vec();
        tail.extend_from_slice(&(-8.0f32).to_le_bytes());
        assert_eq!(&enc.body[n..], &tail[..]);
    }

    #[test]
    fn binary_data_output_makes_every_output_binary() {
        let request = parse(
            r#"{"parameters":{"binary_data_output":true},"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[0]}]}"#,
        )
        .unwrap();
        let out = [
            OutputTensor {
                name: "a".into(),
                shape: vec![1],
                data: vec![f32::NAN],
            },
            OutputTensor {
                name: "b".into(),
                shape: vec![2],
                data: vec![1.0, 2.0],
            },
        ];
        let enc = encode_infer_response("m", None, &request, Map::new(), &out).unwrap();
        let n = enc.header_length.unwrap();
        assert_eq!(enc.body.len(), n + 12);
        let header: Value = serde_json::from_slice(&enc.body[..n]).unwrap();
        assert_eq!(
            header["outputs"][1]["parameters"]["binary_data_size"],
            json!(8)
        );
        assert!(header["outputs"][0].get("data").is_none());
        assert!(f32::from_le_bytes(enc.body[n..n + 4].try_into().unwrap()).is_nan());
    }

    #[test]
    fn unknown_requested_output_names_both_sides() {
        let request = parse(
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[0]}],"outputs":[{"name":"nope"}]}"#,
        )
        .unwrap();
        let out = [OutputTensor {
            name: "y".into(),
            shape: vec![1],
            data: vec![1.0],
        }];
        let e = encode_infer_response("m", None, &request, Map::new(), &out).unwrap_err();
        assert_mentions(&e, 400, &["\"nope\"", "\"y\""]);
    }

    #[test]
    fn non_finite_json_output_is_an_error() {
        let request =
            parse(r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[0]}]}"#).unwrap();
        let out = [OutputTensor {
            name: "y".into(),
            shape: vec![2],
            data: vec![1.0, f32::INFINITY],
        }];
        let e = encode_infer_response("m", None, &request, Map::new(), &out).unwrap_err();
        assert_mentions(&e, 500, &["element 1", "\"y\"", "binary"]);
        let bad_shape = [OutputTensor {
            name: "y".into(),
            shape: vec![3],
            data: vec![1.0],
        }];
        let e = encode_infer_response("m", None, &request, Map::new(), &bad_shape).unwrap_err();
        assert_eq!(e.status, 500);
    }

    #[test]
    fn malformed_json_is_400_with_serde_message() {
        let e = err(r#"{"inputs": [}"#);
        assert_mentions(&e, 400, &["malformed", "line 1 column"]);
        let e = err(r#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","data":[1]}]} x"#);
        assert_mentions(&e, 400, &["trailing"]);
        let e = err(r#"[1,2]"#);
        assert_mentions(&e, 400, &["inference request object"]);
    }

    #[test]
    fn missing_or_empty_inputs() {
        assert_mentions(&err(r#"{"id":"1"}"#), 400, &["no \"inputs\""]);
        assert_mentions(&err(r#"{"inputs":[]}"#), 400, &["empty"]);
        assert_mentions(
            &err(r#"{"inputs":[{"shape":[1],"datatype":"FP32","data":[1]}]}"#),
            400,
            &["input 0", "name"],
        );
        assert_mentions(
            &err(r#"{"inputs":[{"name":"a","datatype":"FP32","data":[1]}]}"#),
            400,
            &["\"a\"", "shape"],
        );
        assert_mentions(
            &err(r#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP32"}]}"#),
            400,
            &["\"a\"", "neither"],
        );
    }

    #[test]
    fn wrong_element_count() {
        let e =
            err(r#"{"inputs":[{"name":"a","shape":[2,3],"datatype":"FP32","data":[1,2,3,4,5]}]}"#);
        assert_mentions(&e, 400, &["\"a\"", "5", "6", "[2, 3]"]);
    }

    #[test]
    fn uint8_value_out_of_range_or_fractional() {
        let e = err(r#"{"inputs":[{"name":"img","shape":[2],"datatype":"UINT8","data":[1,300]}]}"#);
        assert_mentions(&e, 400, &["element 1", "\"img\"", "300", "0..=255"]);
        let e = err(r#"{"inputs":[{"name":"img","shape":[2],"datatype":"UINT8","data":[-1,3]}]}"#);
        assert_mentions(&e, 400, &["element 0", "-1"]);
        let e = err(r#"{"inputs":[{"name":"img","shape":[2],"datatype":"UINT8","data":[1,2.5]}]}"#);
        assert_mentions(&e, 400, &["element 1", "2.5"]);
    }

    #[test]
    fn non_number_elements_name_input_and_index() {
        let e = err(r#"{"inputs":[{"name":"a","shape":[3],"datatype":"FP32","data":[1,"2",3]}]}"#);
        assert_mentions(&e, 400, &["element 1", "\"a\"", "string"]);
        let e = err(
            r#"{"inputs":[{"name":"a","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,null]]}]}"#,
        );
        assert_mentions(&e, 400, &["element 3", "null"]);
        let e = err(r#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","data":[{"x":1}]}]}"#);
        assert_mentions(&e, 400, &["element 0", "object"]);
    }

    #[test]
    fn fp32_out_of_range_is_refused() {
        let e = err(r#"{"inputs":[{"name":"a","shape":[2],"datatype":"FP32","data":[1,1e39]}]}"#);
        assert_mentions(&e, 400, &["element 1", "FP32 range"]);
    }

    #[test]
    fn negative_dimension_is_refused() {
        let e = err(r#"{"inputs":[{"name":"a","shape":[-1,2],"datatype":"FP32","data":[1,2]}]}"#);
        assert_mentions(&e, 400, &["\"a\"", "non-negative"]);
    }

    #[test]
    fn header_length_beyond_body() {
        let (body, _) = triton_body(&[1.0; 4]);
        let e = parse_infer_request(&body, Some(body.len() + 1), &LIMITS).unwrap_err();
        assert_mentions(&e, 400, &[HEADER_LENGTH_HEADER, &body.len().to_string()]);
    }

    #[test]
    fn header_length_values() {
        assert_eq!(parse_header_length("123").unwrap(), 123);
        assert_eq!(parse_header_length(" 7 ").unwrap(), 7);
        for bad in ["", "abc", "-1", "+5", "1.5", "99999999999999999999999999"] {
            let e = parse_header_length(bad).unwrap_err();
            assert_mentions(&e, 400, &[HEADER_LENGTH_HEADER]);
        }
    }

    #[test]
    fn binary_size_mismatch() {
        // Declares 12 bytes for a [1, 4] FP32 input (16 bytes).
        let header = r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":12}}]}"#;
        let mut body = header.as_bytes().to_vec();
        body.extend_from_slice(&[0; 12]);
        let e = parse_infer_request(&body, Some(header.len()), &LIMITS).unwrap_err();
        assert_mentions(&e, 400, &["\"x\"", "12", "16"]);

        // Right size declared, but the body is short or has extra bytes.
        let (body, n) = triton_body(&[1.0; 4]);
        let e = parse_infer_request(&body[..body.len() - 1], Some(n), &LIMITS).unwrap_err();
        assert_mentions(&e, 400, &["\"x\"", "15 bytes"]);
        let mut long = body.clone();
        long.push(0);
        let e = parse_infer_request(&long, Some(n), &LIMITS).unwrap_err();
        assert_mentions(&e, 400, &["1 bytes after the JSON header"]);

        // binary_data_size without the header, and together with data.
        let e = parse_infer_request(&body[..n], None, &LIMITS).unwrap_err();
        assert_mentions(&e, 400, &[HEADER_LENGTH_HEADER]);
        let both = r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1],"parameters":{"binary_data_size":4}}]}"#;
        let e = parse_infer_request(both.as_bytes(), Some(both.len()), &LIMITS).unwrap_err();
        assert_mentions(&e, 400, &["both"]);
    }

    #[test]
    fn shape_product_overflow() {
        let e = err(
            r#"{"inputs":[{"name":"a","shape":[1099511627776,1099511627776],"datatype":"FP32","data":[1]}]}"#,
        );
        assert_mentions(&e, 413, &["\"a\"", "overflows"]);
        // A zero dimension makes the product zero, not an overflow.
        let r = parse(r#"{"inputs":[{"name":"a","shape":[1099511627776,1099511627776,0],"datatype":"FP32","data":[]}]}"#)
            .unwrap();
        assert!(r.inputs[0].data.is_empty());
    }

    #[test]
    fn elements_over_limit() {
        let limits = Limits {
            max_body_bytes: 1 << 20,
            max_elements: 4,
        };
        let body = br#"{"inputs":[{"name":"a","shape":[5],"datatype":"FP32","data":[1,2,3,4,5]}]}"#;
        let e = parse_infer_request(body, None, &limits).unwrap_err();
        assert_mentions(&e, 413, &["\"a\"", "5 elements", "limit is 4"]);
        // Data longer than the budget is counted, not stored, and still reported exactly.
        let body =
            br#"{"inputs":[{"name":"a","shape":[2],"datatype":"FP32","data":[1,2,3,4,5,6,7]}]}"#;
        let e = parse_infer_request(body, None, &limits).unwrap_err();
        assert_mentions(&e, 400, &["7 elements"]);
    }

    #[test]
    fn body_over_limit() {
        let limits = Limits {
            max_body_bytes: 10,
            max_elements: 4,
        };
        let e = parse_infer_request(&[b' '; 11], None, &limits).unwrap_err();
        assert_mentions(&e, 413, &["11 bytes", "limit is 10"]);
    }

    #[test]
    fn duplicate_names_and_bad_parameters() {
        let e = err(
            r#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","data":[1]},{"name":"a","shape":[1],"datatype":"FP32","data":[1]}]}"#,
        );
        assert_mentions(&e, 400, &["\"a\"", "more than once"]);
        let e = err(
            r#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","data":[1]}],"outputs":[{"name":"y"},{"name":"y"}]}"#,
        );
        assert_mentions(&e, 400, &["\"y\"", "more than once"]);
        let e = err(
            r#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","data":[1]}],"outputs":[{"name":"y","parameters":{"binary_data":"yes"}}]}"#,
        );
        assert_mentions(&e, 400, &["binary_data", "boolean"]);
        let e = err(
            r#"{"parameters":{"binary_data_output":1},"inputs":[{"name":"a","shape":[1],"datatype":"FP32","data":[1]}]}"#,
        );
        assert_mentions(&e, 400, &["binary_data_output", "boolean"]);
        let e =
            err(r#"{"inputs":[{"name":"a","name":"b","shape":[1],"datatype":"FP32","data":[1]}]}"#);
        assert_mentions(&e, 400, &["duplicate field `name`"]);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let depth = 100_000;
        let body = format!(
            r#"{{"inputs":[{{"name":"a","shape":[1],"datatype":"FP32","data":{}1{}}}]}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let e = err(&body);
        assert_mentions(&e, 400, &["recursion limit"]);
    }

    #[test]
    fn error_body_is_the_protocol_error_object() {
        let e = err(
            r#"{"inputs":[{"name":"a \"quoted\"\n","shape":[2],"datatype":"FP32","data":[1]}]}"#,
        );
        let v: Value = serde_json::from_str(&e.body()).unwrap();
        assert_eq!(v, json!({ "error": e.message }));
        assert_eq!(e.to_string(), e.message);
        assert_eq!(OipError::not_found("no model").status, 404);
    }

    #[test]
    fn check_input_name_and_shape() {
        let input = InputTensor {
            name: "x".into(),
            shape: vec![1, 3, 32, 32],
            data: TensorData::F32(vec![0.0; 3 * 32 * 32]),
        };
        let e = check_input(&input, Some("input"), &[1, 3, 32, 32]).unwrap_err();
        assert_mentions(&e, 400, &["\"x\"", "\"input\""]);
        let e = check_input(&input, Some("x"), &[1, 3, 224, 224]).unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(
            e.message,
            r#"input "x" has shape [1, 3, 32, 32]; the model takes [1, 3, 224, 224]"#
        );
        assert!(check_input(&input, Some("x"), &[1, 3, 32, 32]).is_ok());
        assert!(check_input(&input, None, &[1, 3, 32, 32]).is_ok());
    }

    #[test]
    fn metadata_serialises_as_the_protocol_objects() {
        let server = serde_json::to_value(ServerMetadata::new("cnnpc", "0.1.0")).unwrap();
        assert_eq!(
            server,
            json!({"name":"cnnpc","version":"0.1.0","extensions":["binary_tensor_data"]})
        );
        let model = ModelMetadata {
            name: "m".into(),
            versions: vec!["1".into()],
            platform: "onnx".into(),
            inputs: vec![MetadataTensor {
                name: "x".into(),
                datatype: "FP32".into(),
                shape: vec![-1, 3, 224, 224],
            }],
            outputs: vec![],
        };
        assert_eq!(
            serde_json::to_value(model).unwrap(),
            json!({"name":"m","versions":["1"],"platform":"onnx","inputs":[{"name":"x","datatype":"FP32","shape":[-1,3,224,224]}],"outputs":[]})
        );
    }

    /// Knuth's MMIX LCG; the high bits are the well-mixed ones.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// Every outcome must be an accepted request that keeps the invariants, or a 400/413.
    fn check_outcome(r: Result<InferRequest, OipError>) -> bool {
        match r {
            Ok(req) => {
                assert!(!req.inputs.is_empty());
                for i in &req.inputs {
                    assert_eq!(element_count(&i.shape), Some(i.data.len()));
                }
                true
            }
            Err(e) => {
                assert!(e.status == 400 || e.status == 413, "{e:?}");
                false
            }
        }
    }

    #[test]
    fn random_and_truncated_bodies_never_panic() {
        let mut rng = Lcg(0x5eed);
        let limits = Limits {
            max_body_bytes: 4096,
            max_elements: 64,
        };
        let tokens: &[&[u8]] = &[
            b"{",
            b"}",
            b"[",
            b"]",
            b",",
            b":",
            b"\"inputs\"",
            b"\"outputs\"",
            b"\"name\"",
            b"\"x\"",
            b"\"shape\"",
            b"\"datatype\"",
            b"\"FP32\"",
            b"\"UINT8\"",
            b"\"data\"",
            b"\"parameters\"",
            b"\"binary_data_size\"",
            b"\"binary_data\"",
            b"true",
            b"null",
            b"0",
            b"1",
            b"4",
            b"-1",
            b"255",
            b"1e400",
            b"2.5",
            b"18446744073709551616",
        ];
        for round in 0..2000 {
            let body: Vec<u8> = if round % 2 == 0 {
                (0..rng.below(200)).map(|_| rng.next() as u8).collect()
            } else {
                (0..rng.below(60))
                    .flat_map(|_| tokens[rng.below(tokens.len())].iter().copied())
                    .collect()
            };
            let header = match rng.below(3) {
                0 => None,
                _ => Some(rng.below(body.len() + 8)),
            };
            let ok = check_outcome(parse_infer_request(&body, header, &limits));
            if round % 2 == 0 {
                // Random bytes are never a valid request (this seed; checks the check runs).
                assert!(!ok);
            }
        }

        let (body, n) = triton_body(&[1.0, 2.0, 3.0, 4.0]);
        assert!(check_outcome(parse_infer_request(&body, Some(n), &limits)));
        for _ in 0..2000 {
            let cut = rng.below(body.len());
            let header = if rng.below(2) == 0 { None } else { Some(n) };
            // Any proper prefix is incomplete JSON, a short tail, or a tail without its header.
            assert!(!check_outcome(parse_infer_request(
                &body[..cut],
                header,
                &limits
            )));
            // Flipped bytes may still make a valid request; it must keep the invariants.
            let mut mutated = body.clone();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(mutated.len());
                mutated[at] = rng.next() as u8;
            }
            check_outcome(parse_infer_request(&mutated, Some(n), &limits));
        }
    }
}
