//! A small ONNX graph builder over the prost messages of [`super::onnx`]: float32 initializers
//! named like the checkpoint's variables, the handful of operators DMNet needs (Conv with
//! stride/padding/dilation, BatchNormalization in inference form, Relu, MaxPool, Add, Concat,
//! bilinear Resize to an explicit size, GlobalAveragePool, Softmax, averaging, ArgMax → uint8)
//! and a dynamic batch dimension; ConvTranspose too, so every op of the network description
//! has an ONNX form (only the discriminator, which is not exported, uses it). Shapes are
//! tracked on the Rust side ([`T`]) so every upsampling target is a constant, as in the tch
//! model (contract "DMNet architecture v1").
//!
//! Resize reproduces tch `upsample_bilinear2d(size, align_corners = false)`: ONNX Resize with
//! `mode = linear`, `coordinate_transformation_mode = half_pixel` and explicit `sizes`
//! (ONNX operator spec, Resize-13/18/19); the op-level parity test proves it.
use super::onnx::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto::dimension,
    tensor_shape_proto::Dimension, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};
use crate::{Error, Result};

/// Lowest and highest opset the builder writes (ONNX Runtime 1.2x+ runs all of them).
pub(crate) const OPSET_RANGE: (i64, i64) = (13, 21);
/// The default opset.
pub(crate) const DEFAULT_OPSET: i64 = 17;

/// A value in the graph: its name and its (channels, height, width); the batch is dynamic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct T {
    /// Value name in the graph.
    pub name: String,
    /// Channels.
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
}

/// One dimension of a graph input/output.
#[derive(Debug, Clone)]
pub enum Dim {
    /// A fixed extent.
    Fixed(usize),
    /// A named dynamic extent (e.g. `N`).
    Param(String),
}

/// Convolution hyper-parameters (square kernels; PyTorch semantics: symmetric padding).
#[derive(Debug, Clone, Copy)]
pub struct ConvOpts {
    /// Stride.
    pub stride: usize,
    /// Zero padding on each side.
    pub pad: usize,
    /// Dilation.
    pub dilation: usize,
}

impl ConvOpts {
    /// Stride `stride`, padding `pad`, no dilation.
    pub fn new(stride: usize, pad: usize) -> Self {
        ConvOpts {
            stride,
            pad,
            dilation: 1,
        }
    }
}

fn attr(name: &str, ty: AttributeType) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(ty as i32),
        ..Default::default()
    }
}
fn attr_i(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        i: Some(v),
        ..attr(name, AttributeType::Int)
    }
}
fn attr_f(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        f: Some(v),
        ..attr(name, AttributeType::Float)
    }
}
fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        ints: v.to_vec(),
        ..attr(name, AttributeType::Ints)
    }
}
fn attr_s(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        s: Some(v.as_bytes().to_vec()),
        ..attr(name, AttributeType::String)
    }
}

/// A float32 tensor proto (little-endian raw data).
pub(crate) fn tensor_f32(name: &str, dims: &[usize], data: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    }
}

/// An int64 tensor proto.
pub(crate) fn tensor_i64(name: &str, dims: &[usize], data: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(DataType::Int64 as i32),
        raw_data: Some(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    }
}

fn value_info(name: &str, elem: DataType, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(n) => dimension::Value::DimValue(*n as i64),
                Dim::Param(p) => dimension::Value::DimParam(p.clone()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The IR version that goes with an opset (onnx.helper.VERSION_TABLE).
pub(crate) fn ir_version(opset: i64) -> i64 {
    match opset {
        ..=14 => 7,
        15..=18 => 8,
        19..=20 => 9,
        _ => 10,
    }
}

/// Builds one graph; node outputs are named `<prefix>/<op>_<n>`.
pub struct GraphBuilder {
    graph: GraphProto,
    opset: i64,
    next: usize,
}

impl GraphBuilder {
    /// An empty graph for `opset` (checked against [`OPSET_RANGE`]).
    pub fn new(name: &str, opset: i64) -> Result<Self> {
        if !(OPSET_RANGE.0..=OPSET_RANGE.1).contains(&opset) {
            return Err(Error::Usage(format!(
                "--opset {opset} is not supported; use {}..={}",
                OPSET_RANGE.0, OPSET_RANGE.1
            )));
        }
        Ok(GraphBuilder {
            graph: GraphProto {
                name: Some(name.into()),
                ..Default::default()
            },
            opset,
            next: 0,
        })
    }

    /// The opset this graph is written for.
    pub fn opset(&self) -> i64 {
        self.opset
    }

    /// Declares a float32 NCHW input with a dynamic batch `N`.
    pub fn input_nchw(&mut self, name: &str, c: usize, h: usize, w: usize) -> T {
        let dims = [
            Dim::Param("N".into()),
            Dim::Fixed(c),
            Dim::Fixed(h),
            Dim::Fixed(w),
        ];
        self.graph
            .input
            .push(value_info(name, DataType::Float, &dims));
        T {
            name: name.into(),
            c,
            h,
            w,
        }
    }

    /// Declares a graph output of element type `elem` with the given dims.
    pub fn output(&mut self, value: &str, elem: DataType, dims: &[Dim]) {
        self.graph.output.push(value_info(value, elem, dims));
    }

    /// Adds a float32 initializer (e.g. a checkpoint variable under its own name).
    pub fn initializer(&mut self, name: &str, dims: &[usize], data: &[f32]) {
        self.graph.initializer.push(tensor_f32(name, dims, data));
    }

    fn fresh(&mut self, op: &str) -> String {
        self.next += 1;
        format!("{}_{}", op.to_lowercase(), self.next)
    }

    /// Adds a node with one output, named after the op unless `out` is given; returns the output.
    pub fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        out: Option<&str>,
    ) -> String {
        let out = out.map(str::to_string).unwrap_or_else(|| self.fresh(op));
        self.graph.node.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name: Some(format!("{op}:{out}")),
            op_type: Some(op.into()),
            attribute: attrs,
            ..Default::default()
        });
        out
    }

    fn constant(&mut self, t: TensorProto) -> String {
        let name = self.fresh("const");
        let t = TensorProto {
            name: Some(name.clone()),
            ..t
        };
        let a = AttributeProto {
            t: Some(t),
            ..attr("value", AttributeType::Tensor)
        };
        self.node("Constant", &[], vec![a], Some(&name))
    }

    /// A `Conv` or `ConvTranspose` node with a square kernel `k` and the options `o`; returns
    /// its output name.
    fn conv_node(
        &mut self,
        op: &str,
        x: &T,
        (w, b): (&str, Option<&str>),
        k: usize,
        o: ConvOpts,
    ) -> String {
        let mut inputs = vec![x.name.as_str(), w];
        inputs.extend(b);
        let (p, s, d) = (o.pad as i64, o.stride as i64, o.dilation as i64);
        let attrs = vec![
            attr_ints("kernel_shape", &[k as i64, k as i64]),
            attr_ints("strides", &[s, s]),
            attr_ints("pads", &[p, p, p, p]),
            attr_ints("dilations", &[d, d]),
            attr_i("group", 1),
        ];
        self.node(op, &inputs, attrs, None)
    }

    /// Conv with weight `[cout, cin, k, k]` (an initializer `w`) and optional bias `b`.
    pub fn conv(
        &mut self,
        x: &T,
        w: &str,
        b: Option<&str>,
        cout: usize,
        k: usize,
        o: ConvOpts,
    ) -> T {
        let name = self.conv_node("Conv", x, (w, b), k, o);
        let out = |n: usize| (n + 2 * o.pad - o.dilation * (k - 1) - 1) / o.stride + 1;
        T {
            name,
            c: cout,
            h: out(x.h),
            w: out(x.w),
        }
    }

    /// ConvTranspose with weight `[cin, cout, k, k]` (an initializer `w`) and optional bias
    /// `b`; PyTorch `conv_transpose2d` semantics (no output padding).
    pub(crate) fn conv_transpose(
        &mut self,
        x: &T,
        w: &str,
        b: Option<&str>,
        cout: usize,
        k: usize,
        o: ConvOpts,
    ) -> T {
        let name = self.conv_node("ConvTranspose", x, (w, b), k, o);
        let out = |n: usize| (n - 1) * o.stride + o.dilation * (k - 1) + 1 - 2 * o.pad;
        T {
            name,
            c: cout,
            h: out(x.h),
            w: out(x.w),
        }
    }

    /// BatchNormalization (inference form) with initializers `<p>.weight`, `.bias`,
    /// `.running_mean`, `.running_var`.
    pub fn batch_norm(&mut self, x: &T, p: &str, eps: f32) -> T {
        let names = ["weight", "bias", "running_mean", "running_var"].map(|l| format!("{p}.{l}"));
        let inputs: Vec<&str> = std::iter::once(x.name.as_str())
            .chain(names.iter().map(String::as_str))
            .collect();
        let name = self.node(
            "BatchNormalization",
            &inputs,
            vec![attr_f("epsilon", eps)],
            None,
        );
        T { name, ..x.clone() }
    }

    /// Elementwise ReLU.
    pub fn relu(&mut self, x: &T) -> T {
        let name = self.node("Relu", &[&x.name], vec![], None);
        T { name, ..x.clone() }
    }

    /// Max pooling, square kernel, symmetric padding (PyTorch `max_pool2d`, ceil_mode false).
    pub fn max_pool(&mut self, x: &T, k: usize, stride: usize, pad: usize) -> T {
        let p = pad as i64;
        let attrs = vec![
            attr_ints("kernel_shape", &[k as i64, k as i64]),
            attr_ints("strides", &[stride as i64, stride as i64]),
            attr_ints("pads", &[p, p, p, p]),
        ];
        let name = self.node("MaxPool", &[&x.name], attrs, None);
        let out = |n: usize| (n + 2 * pad - k) / stride + 1;
        T {
            name,
            c: x.c,
            h: out(x.h),
            w: out(x.w),
        }
    }

    /// Elementwise sum of two values of equal shape.
    pub fn add(&mut self, a: &T, b: &T) -> T {
        let name = self.node("Add", &[&a.name, &b.name], vec![], None);
        T { name, ..a.clone() }
    }

    /// Concatenation along channels.
    pub fn concat(&mut self, xs: &[&T]) -> T {
        let inputs: Vec<&str> = xs.iter().map(|t| t.name.as_str()).collect();
        let name = self.node("Concat", &inputs, vec![attr_i("axis", 1)], None);
        T {
            name,
            c: xs.iter().map(|t| t.c).sum(),
            h: xs[0].h,
            w: xs[0].w,
        }
    }

    /// Bilinear resize to `h × w` exactly like tch `upsample_bilinear2d(align_corners=false)`.
    /// Opset ≥ 18: `sizes` over `axes = [2, 3]`; older opsets: `sizes` = shape[0:2] ++ [h, w].
    pub fn resize_to(&mut self, x: &T, h: usize, w: usize) -> T {
        let attrs = vec![
            attr_s("mode", "linear"),
            attr_s("coordinate_transformation_mode", "half_pixel"),
        ];
        let hw = [h as i64, w as i64];
        let name = if self.opset >= 18 {
            let sizes = self.constant(tensor_i64("", &[2], &hw));
            let mut attrs = attrs;
            attrs.push(attr_ints("axes", &[2, 3]));
            self.node("Resize", &[&x.name, "", "", &sizes], attrs, None)
        } else {
            let shape = self.node("Shape", &[&x.name], vec![], None);
            let start = self.constant(tensor_i64("", &[1], &[0]));
            let end = self.constant(tensor_i64("", &[1], &[2]));
            let nc = self.node("Slice", &[&shape, &start, &end], vec![], None);
            let hw = self.constant(tensor_i64("", &[2], &hw));
            let sizes = self.node("Concat", &[&nc, &hw], vec![attr_i("axis", 0)], None);
            self.node("Resize", &[&x.name, "", "", &sizes], attrs, None)
        };
        T { name, c: x.c, h, w }
    }

    /// Global average pooling to 1×1.
    pub fn global_avg_pool(&mut self, x: &T) -> T {
        let name = self.node("GlobalAveragePool", &[&x.name], vec![], None);
        T {
            name,
            c: x.c,
            h: 1,
            w: 1,
        }
    }

    /// Softmax over channels.
    pub fn softmax(&mut self, x: &T) -> T {
        let name = self.node("Softmax", &[&x.name], vec![attr_i("axis", 1)], None);
        T { name, ..x.clone() }
    }

    /// Softmax over channels, named `out`.
    pub fn softmax_named(&mut self, x: &T, out: &str) -> T {
        let name = self.node("Softmax", &[&x.name], vec![attr_i("axis", 1)], Some(out));
        T { name, ..x.clone() }
    }

    /// (a + b) / 2, named `out`.
    pub fn average(&mut self, a: &T, b: &T, out: &str) -> T {
        let sum = self.add(a, b);
        let two = self.constant(tensor_f32("", &[], &[2.0]));
        let name = self.node("Div", &[&sum.name, &two], vec![], Some(out));
        T { name, ..a.clone() }
    }

    /// argmax over channels as uint8 `[N, H, W]`, named `out`.
    pub(crate) fn argmax_u8(&mut self, x: &T, out: &str) -> String {
        let am = self.node(
            "ArgMax",
            &[&x.name],
            vec![attr_i("axis", 1), attr_i("keepdims", 0)],
            None,
        );
        self.node(
            "Cast",
            &[&am],
            vec![attr_i("to", DataType::Uint8 as i64)],
            Some(out),
        )
    }

    /// The finished model: IR version for the opset, producer `dmnet`, `metadata_props`.
    pub fn finish(self, metadata: &[(String, String)], doc: &str) -> ModelProto {
        ModelProto {
            ir_version: Some(ir_version(self.opset)),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(self.opset),
            }],
            producer_name: Some("dmnet".into()),
            producer_version: Some(crate::VERSION.into()),
            doc_string: Some(doc.into()),
            graph: Some(self.graph),
            metadata_props: metadata
                .iter()
                .map(|(k, v)| StringStringEntryProto {
                    key: Some(k.clone()),
                    value: Some(v.clone()),
                })
                .collect(),
            ..Default::default()
        }
    }
}

/// Serialises a model to protobuf bytes.
pub fn encode(model: &ModelProto) -> Vec<u8> {
    prost::Message::encode_to_vec(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opsets_outside_the_range_are_refused_and_ir_follows_the_onnx_table() {
        assert!(GraphBuilder::new("g", 12).is_err());
        assert!(GraphBuilder::new("g", 22).is_err());
        assert_eq!([13, 17, 18, 19, 21].map(ir_version), [7, 8, 8, 9, 10]);
    }

    #[test]
    fn conv_and_pool_output_sizes_follow_pytorch() {
        let mut g = GraphBuilder::new("g", 17).unwrap();
        let x = g.input_nchw("x", 1, 240, 240);
        let c = g.conv(&x, "w", None, 8, 7, ConvOpts::new(2, 3));
        assert_eq!((c.h, c.w), (120, 120));
        let p = g.max_pool(&c, 3, 2, 1);
        assert_eq!(p.h, 60);
        let d = g.conv(
            &p,
            "w",
            None,
            8,
            3,
            ConvOpts {
                stride: 1,
                pad: 12,
                dilation: 12,
            },
        );
        assert_eq!(d.h, 60);
        let s = g.conv(&x, "w", None, 8, 1, ConvOpts::new(2, 0));
        assert_eq!(s.h, 120);
    }
}
