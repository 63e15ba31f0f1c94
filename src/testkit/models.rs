//! Small CNNs built in code, so tests never depend on downloaded files.
//!
//! Weights are deterministic pseudo-random numbers (an LCG): the same bytes on every run.
//! Neither model carries `value_info`, so shapes of inner tensors must come from inference.

use prost::Message;
use tract_onnx::pb;

use crate::onnx::pb_helpers::{attr_int, attr_ints, attr_tensor, node, tensor, value_info};
pub use crate::onnx::random::Lcg;

/// Spatial size of the generated models' input: `[N, 3, SIZE, SIZE]`.
pub const SIZE: i64 = 16;
/// Classes of the generated models' output: `[N, CLASSES]`.
pub const CLASSES: i64 = 10;

/// Accumulates nodes and initializers with seeded weights.
struct Builder {
    rng: Lcg,
    nodes: Vec<pb::NodeProto>,
    inits: Vec<pb::TensorProto>,
}

impl Builder {
    fn new(seed: u64) -> Self {
        Builder {
            rng: Lcg(seed),
            nodes: vec![],
            inits: vec![],
        }
    }

    fn init(&mut self, name: &str, dims: &[i64], scale: f32) -> String {
        let n: i64 = dims.iter().product();
        let data = self.rng.vec(n as usize, scale);
        self.inits.push(tensor(name, dims, data));
        name.to_string()
    }

    /// 3x3 conv, padding 1, with bias (He-like scale so activations stay O(1)).
    fn conv(&mut self, name: &str, x: &str, cin: i64, cout: i64, stride: i64) -> String {
        let scale = (6.0 / (cin as f32 * 9.0)).sqrt();
        let w = self.init(&format!("{name}.w"), &[cout, cin, 3, 3], scale);
        let b = self.init(&format!("{name}.b"), &[cout], 0.1);
        let mut n = node("Conv", name, &[x, &w, &b], &[name]);
        n.attribute = vec![
            attr_ints("kernel_shape", &[3, 3]),
            attr_ints("pads", &[1, 1, 1, 1]),
            attr_ints("strides", &[stride, stride]),
        ];
        self.nodes.push(n);
        name.to_string()
    }

    fn unary(&mut self, op: &str, name: &str, x: &str) -> String {
        self.nodes.push(node(op, name, &[x], &[name]));
        name.to_string()
    }

    fn batchnorm(&mut self, name: &str, x: &str, c: i64) -> String {
        let gamma = self
            .rng
            .vec(c as usize, 0.5)
            .iter()
            .map(|v| 1.0 + v)
            .collect();
        let var = self
            .rng
            .vec(c as usize, 0.5)
            .iter()
            .map(|v| 1.0 + v)
            .collect();
        self.inits
            .push(tensor(&format!("{name}.scale"), &[c], gamma));
        let beta = self.init(&format!("{name}.bias"), &[c], 0.2);
        let mean = self.init(&format!("{name}.mean"), &[c], 0.2);
        self.inits.push(tensor(&format!("{name}.var"), &[c], var));
        let (s, v) = (format!("{name}.scale"), format!("{name}.var"));
        self.nodes.push(node(
            "BatchNormalization",
            name,
            &[x, &s, &beta, &mean, &v],
            &[name],
        ));
        name.to_string()
    }

    /// GlobalAveragePool → Flatten → Gemm to `CLASSES` logits named `logits`. The Gemm bias is a
    /// Constant node, so splits must carry Constant nodes along.
    fn head(&mut self, x: &str, c: i64) {
        self.unary("GlobalAveragePool", "gap", x);
        let mut flat = node("Flatten", "flat", &["gap"], &["flat"]);
        flat.attribute = vec![attr_int("axis", 1)];
        self.nodes.push(flat);
        let w = self.init("fc.w", &[CLASSES, c], (1.0 / c as f32).sqrt());
        let bias = tensor(
            "fc.b.value",
            &[CLASSES],
            self.rng.vec(CLASSES as usize, 0.1),
        );
        let mut cst = node("Constant", "fc.b.const", &[], &["fc.b"]);
        cst.attribute = vec![attr_tensor("value", bias)];
        self.nodes.push(cst);
        let mut gemm = node("Gemm", "fc", &["flat", &w, "fc.b"], &["logits"]);
        gemm.attribute = vec![attr_int("transB", 1)];
        self.nodes.push(gemm);
    }

    fn finish(self, name: &str) -> pb::ModelProto {
        pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            producer_name: "cnnpc-testmodels".into(),
            graph: Some(pb::GraphProto {
                name: name.into(),
                node: self.nodes,
                initializer: self.inits,
                input: vec![value_info("input", &[3, SIZE, SIZE])],
                output: vec![value_info("logits", &[CLASSES])],
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// A plain chain: conv → bn → relu → conv(stride 2) → relu → globalavgpool → flatten → gemm.
/// Expected cuts: `relu1` `[N, 8, 16, 16]`, `relu2` `[N, 16, 8, 8]`, `gap` `[N, 16, 1, 1]`.
pub fn chain_model() -> pb::ModelProto {
    let mut b = Builder::new(7);
    b.conv("conv1", "input", 3, 8, 1);
    b.batchnorm("bn1", "conv1", 8);
    b.unary("Relu", "relu1", "bn1");
    b.conv("conv2", "relu1", 8, 16, 2);
    b.unary("Relu", "relu2", "conv2");
    b.head("relu2", 16);
    b.finish("chain")
}

/// A residual block: conv → relu (`a0`), then conv → relu → conv, Add with `a0`, relu, head.
/// Expected cuts: `a0`; `{a0, a1}` and `{a0, b2}` inside the block; `out` and `gap` after it.
pub fn skip_model() -> pb::ModelProto {
    let mut b = Builder::new(11);
    b.conv("conv0", "input", 3, 8, 1);
    b.unary("Relu", "a0", "conv0");
    b.conv("conv1", "a0", 8, 8, 1);
    b.unary("Relu", "a1", "conv1");
    b.conv("b2", "a1", 8, 8, 1);
    b.nodes.push(node("Add", "add", &["b2", "a0"], &["sum"]));
    b.unary("Relu", "out", "sum");
    b.head("out", 8);
    b.finish("skip")
}

pub fn chain_model_bytes() -> Vec<u8> {
    chain_model().encode_to_vec()
}

pub fn skip_model_bytes() -> Vec<u8> {
    skip_model().encode_to_vec()
}

/// A deterministic input `[batch, 3, SIZE, SIZE]` for the generated models.
pub fn input(seed: u64, batch: usize) -> tract_onnx::prelude::tract_ndarray::ArrayD<f32> {
    let n = batch * 3 * (SIZE * SIZE) as usize;
    let data = Lcg(seed).vec(n, 1.0);
    tract_onnx::prelude::tract_ndarray::ArrayD::from_shape_vec(
        vec![batch, 3, SIZE as usize, SIZE as usize],
        data,
    )
    .unwrap_or_else(|_| unreachable!("the data length is computed from the shape"))
}
