//! Weights from an ONNX file: its initializers as candle tensors, under the PyTorch names they were
//! exported from.
//!
//! Only the few protobuf messages that hold weights are declared (with prost's derive, so no protoc
//! is needed to build). Most initializers keep their PyTorch names; exporters store some anonymously
//! (`onnx::Conv_123`, or under the name of a graph input), and then the node that reads the tensor
//! names the module: the `Conv` node `/flow/flows.6/enc/in_layers.0/Conv` reads
//! `flow.flows.6.enc.in_layers.0.weight` as its second input.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use prost::Message;
use std::collections::HashMap;
use std::path::Path;

#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
}

#[derive(Clone, PartialEq, Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<TensorProto>,
}

#[derive(Clone, PartialEq, Message)]
struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    output: Vec<String>,
    #[prost(string, tag = "3")]
    name: String,
    #[prost(string, tag = "4")]
    op_type: String,
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<AttributeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct AttributeProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int64, tag = "3")]
    i: i64,
    #[prost(int64, repeated, tag = "8")]
    ints: Vec<i64>,
    /// AttributeProto.AttributeType: INT = 2, INTS = 7.
    #[prost(int32, tag = "20")]
    kind: i32,
}

#[derive(Clone, PartialEq, Message)]
struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    data_type: i32,
    #[prost(float, repeated, tag = "4")]
    float_data: Vec<f32>,
    #[prost(int32, repeated, tag = "5")]
    int32_data: Vec<i32>,
    #[prost(int64, repeated, tag = "7")]
    int64_data: Vec<i64>,
    #[prost(string, tag = "8")]
    name: String,
    #[prost(bytes = "vec", tag = "9")]
    raw_data: Vec<u8>,
    #[prost(double, repeated, tag = "10")]
    double_data: Vec<f64>,
}

// TensorProto.DataType values.
const FLOAT: i32 = 1;
const INT32: i32 = 6;
const INT64: i32 = 7;
const FLOAT16: i32 = 10;
const DOUBLE: i32 = 11;

/// One node of the graph, as far as naming weights needs it.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub op_type: String,
    pub inputs: Vec<String>,
    /// Integer attributes (`strides`, `dilations`, ...); a single integer is a list of one.
    pub ints: HashMap<String, Vec<i64>>,
}

/// An ONNX file's initializers, as f32 tensors, and its nodes.
pub struct OnnxWeights {
    pub tensors: HashMap<String, Tensor>,
    pub nodes: Vec<Node>,
}

impl OnnxWeights {
    pub fn read(path: &Path, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
        Self::parse(&bytes, device).with_context(|| format!("{}", path.display()))
    }

    pub fn parse(bytes: &[u8], device: &Device) -> Result<Self> {
        let model = ModelProto::decode(bytes).context("not an ONNX model")?;
        let graph = model.graph.context("the ONNX model has no graph")?;
        let mut tensors = HashMap::new();
        for t in &graph.initializer {
            tensors.insert(t.name.clone(), to_tensor(t, device).with_context(|| format!("initializer `{}`", t.name))?);
        }
        let nodes = graph
            .node
            .into_iter()
            .map(|n| {
                let ints = n
                    .attribute
                    .into_iter()
                    .filter_map(|a| match a.kind {
                        2 => Some((a.name, vec![a.i])),
                        7 => Some((a.name, a.ints)),
                        _ => None,
                    })
                    .collect();
                Node { name: n.name, op_type: n.op_type, inputs: n.input, ints }
            })
            .collect();
        Ok(Self { tensors, nodes })
    }

    /// The PyTorch name of every initializer that is stored under another name, found from the node
    /// that reads it: `/a/b.0/c/Conv` reading it as weight gives `a.b.0.c.weight`.
    pub fn names_from_nodes(&self) -> HashMap<String, String> {
        let mut names = HashMap::new();
        for node in &self.nodes {
            let Some(module) = module_path(&node.name) else { continue };
            for (slot, input) in node.inputs.iter().enumerate() {
                if !self.tensors.contains_key(input) || looks_like_parameter(input) {
                    continue;
                }
                let param = match (node.op_type.as_str(), slot) {
                    ("Conv" | "ConvTranspose", 1) | ("Gather", 0) => "weight",
                    ("Conv" | "ConvTranspose", 2) => "bias",
                    _ => continue,
                };
                names.entry(input.clone()).or_insert_with(|| format!("{module}.{param}"));
            }
        }
        names
    }

    /// An integer attribute of the node called `node`.
    pub fn node_ints(&self, node: &str, attribute: &str) -> Option<Vec<i64>> {
        node_ints(&self.nodes, node, attribute)
    }

    /// Every initializer under its PyTorch name.
    pub fn into_named(self) -> HashMap<String, Tensor> {
        let renames = self.names_from_nodes();
        self.tensors.into_iter().map(|(name, t)| (renames.get(&name).cloned().unwrap_or(name), t)).collect()
    }
}

/// An integer attribute of the node called `node`.
pub fn node_ints(nodes: &[Node], node: &str, attribute: &str) -> Option<Vec<i64>> {
    nodes.iter().find(|n| n.name == node)?.ints.get(attribute).cloned()
}

/// `/flow/flows.6/enc/in_layers.0/Conv` -> `flow.flows.6.enc.in_layers.0`.
fn module_path(node_name: &str) -> Option<String> {
    let inner = node_name.strip_prefix('/')?;
    let (module, _op) = inner.rsplit_once('/')?;
    Some(module.replace('/', "."))
}

/// PyTorch parameter names end in `.weight`, `.bias` or another dotted attribute.
fn looks_like_parameter(name: &str) -> bool {
    name.contains('.') && !name.starts_with("onnx::")
}

fn to_tensor(t: &TensorProto, device: &Device) -> Result<Tensor> {
    let shape: Vec<usize> =
        t.dims.iter().map(|&d| usize::try_from(d).context("negative dimension")).collect::<Result<_>>()?;
    let count: usize = shape.iter().product();
    let raw = &t.raw_data;
    let values: Vec<f32> = match t.data_type {
        FLOAT if !raw.is_empty() => raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        FLOAT => t.float_data.clone(),
        FLOAT16 if !raw.is_empty() => {
            raw.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
        }
        DOUBLE if !raw.is_empty() => {
            raw.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect()
        }
        DOUBLE => t.double_data.iter().map(|&v| v as f32).collect(),
        INT64 if !raw.is_empty() => {
            raw.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect()
        }
        INT64 => t.int64_data.iter().map(|&v| v as f32).collect(),
        INT32 if !raw.is_empty() => {
            raw.chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32).collect()
        }
        INT32 => t.int32_data.iter().map(|&v| v as f32).collect(),
        other => bail!("data type {other} is not supported"),
    };
    if values.len() != count {
        bail!("holds {} values for shape {shape:?}", values.len());
    }
    Ok(Tensor::from_vec(values, shape, device)?.to_dtype(DType::F32)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
        TensorProto {
            dims: dims.to_vec(),
            data_type: FLOAT,
            name: name.into(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn anonymous_initializers_are_named_by_their_nodes() {
        let graph = GraphProto {
            initializer: vec![
                tensor("onnx::Conv_7", &[2, 1, 1], &[1.0, 2.0]),
                tensor("flow.flows.0.post.bias", &[2], &[0.5, 0.25]),
                tensor("sid", &[3, 2], &[0.0; 6]),
            ],
            node: vec![
                NodeProto {
                    input: vec!["x".into(), "onnx::Conv_7".into(), "flow.flows.0.post.bias".into()],
                    output: vec!["y".into()],
                    name: "/flow/flows.0/post/Conv".into(),
                    op_type: "Conv".into(),
                    attribute: vec![AttributeProto {
                        name: "dilations".into(),
                        ints: vec![3],
                        kind: 7,
                        ..Default::default()
                    }],
                },
                NodeProto {
                    input: vec!["sid".into(), "input".into()],
                    output: vec!["e".into()],
                    name: "/enc_p/emb/Gather".into(),
                    op_type: "Gather".into(),
                    attribute: vec![],
                },
            ],
        };
        let bytes = ModelProto { graph: Some(graph) }.encode_to_vec();
        let onnx = OnnxWeights::parse(&bytes, &Device::Cpu).unwrap();
        assert_eq!(onnx.node_ints("/flow/flows.0/post/Conv", "dilations"), Some(vec![3]));
        let named = onnx.into_named();
        let mut names: Vec<&str> = named.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(names, ["enc_p.emb.weight", "flow.flows.0.post.bias", "flow.flows.0.post.weight"]);
        assert_eq!(named["flow.flows.0.post.weight"].dims(), [2, 1, 1]);
        assert_eq!(named["flow.flows.0.post.bias"].to_vec1::<f32>().unwrap(), [0.5, 0.25]);
    }
}
