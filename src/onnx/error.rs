//! The one error type of the ONNX part.

/// Everything that can go wrong in ONNX surgery. Bad input (corrupt bytes, a bad cut) is an
/// error value, never a panic.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The bytes are not a decodable ONNX `ModelProto` (truncated, corrupt, not ONNX).
    #[error("cannot decode ONNX model: {0}")]
    Decode(String),
    /// The model decodes but is structurally unusable (no graph, a cycle, duplicate producers...).
    #[error("invalid ONNX model: {0}")]
    Invalid(String),
    /// A cut names a tensor that no node produces and that is not a graph input.
    #[error("unknown tensor `{0}` in cut {1}")]
    UnknownTensor(String, usize),
    /// A cut names a weight/constant; cuts carry activations only.
    #[error("tensor `{0}` in cut {1} is a weight or constant, not an activation")]
    NotActivation(String, usize),
    /// A cut is empty.
    #[error("cut {0} is empty")]
    EmptyCut(usize),
    /// The model's input shape is symbolic where it must be concrete, or the shape given does
    /// not fit the model (the message names the input, its dimensions and the flag).
    #[error("{0}")]
    InputShape(String),
    /// The cut does not separate the graph: the part after it still needs `missing`, which is
    /// computed before the cut and not part of it.
    #[error("cut {cut} does not separate the graph: the part after it still needs `{missing}`")]
    NotSeparating { cut: usize, missing: String },
    /// Cut `later` does not lie strictly after cut `earlier` (it is upstream of, or overlaps, it).
    #[error("cuts out of order: cut {later} is not after cut {earlier}")]
    OutOfOrder { earlier: usize, later: usize },
    /// No element type/shape is known for a tensor that must become a shard input/output.
    #[error("no type/shape known for tensor `{0}`")]
    MissingShape(String),
    /// tract could not load, type or run a model.
    #[error("tract: {0}")]
    Tract(String),
    /// An input does not fit: verification inputs, cut indices, calibration data, options.
    #[error("{0}")]
    BadInput(String),
}

impl OnnxError {
    /// A short stable label (for metrics and logs), one per variant.
    pub fn metric_label(&self) -> &'static str {
        match self {
            OnnxError::Decode(_) => "decode",
            OnnxError::Invalid(_) => "invalid",
            OnnxError::UnknownTensor(..) => "unknown_tensor",
            OnnxError::NotActivation(..) => "not_activation",
            OnnxError::EmptyCut(_) => "empty_cut",
            OnnxError::NotSeparating { .. } => "not_separating",
            OnnxError::OutOfOrder { .. } => "out_of_order",
            OnnxError::MissingShape(_) => "missing_shape",
            OnnxError::Tract(_) => "tract",
            OnnxError::BadInput(_) => "bad_input",
            OnnxError::InputShape(_) => "input_shape",
        }
    }
}

/// tract errors are `anyhow` chains: keep the whole chain, it names the failing node.
pub(crate) fn tract_err(e: impl std::fmt::Debug) -> OnnxError {
    OnnxError::Tract(format!("{e:?}"))
}
