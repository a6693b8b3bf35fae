//! Class labels of a classifier's probability outputs, read from the ONNX file at compile
//! time. scikit-learn classifiers end in an ONNX-ML `ZipMap` (a sequence of {label:
//! probability} maps, which tensors cannot represent); the runtime serves ZipMap's input, the
//! [N, classes] probability tensor, and these labels say which class each column is.

use std::collections::HashMap;

/// Labels by graph output name, for each `ZipMap` whose output is a graph output.
pub fn zipmap_labels(onnx: &[u8]) -> HashMap<String, Vec<String>> {
    let Ok(model) = <ModelProto as prost::Message>::decode(onnx) else { return HashMap::new() };
    let Some(graph) = model.graph else { return HashMap::new() };
    let mut labels = HashMap::new();
    for node in graph.node.iter().filter(|n| n.op_type == "ZipMap" && n.domain == "ai.onnx.ml") {
        let Some(output) = node.output.first() else { continue };
        let attribute = |name: &str| node.attribute.iter().find(|a| a.name == name);
        let names: Vec<String> = match (attribute("classlabels_int64s"), attribute("classlabels_strings")) {
            (Some(ints), _) if !ints.ints.is_empty() => ints.ints.iter().map(i64::to_string).collect(),
            (_, Some(strings)) => strings.strings.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect(),
            _ => continue,
        };
        labels.insert(output.clone(), names);
    }
    labels
}

// The few fields of onnx.proto this reads (tags as in onnx/onnx.proto3); prost skips the rest.

#[derive(Clone, PartialEq, prost::Message)]
struct ModelProto {
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NodeProto {
    #[prost(string, repeated, tag = "2")]
    output: Vec<String>,
    #[prost(string, tag = "4")]
    op_type: String,
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<AttributeProto>,
    #[prost(string, tag = "7")]
    domain: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct AttributeProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int64, repeated, tag = "8")]
    ints: Vec<i64>,
    #[prost(bytes = "vec", repeated, tag = "9")]
    strings: Vec<Vec<u8>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn zipmap(output: &str, attribute: AttributeProto) -> NodeProto {
        NodeProto {
            output: vec![output.into()],
            op_type: "ZipMap".into(),
            attribute: vec![attribute],
            domain: "ai.onnx.ml".into(),
        }
    }

    #[test]
    fn reads_int_and_string_labels_of_zipmap_outputs() {
        let ints = AttributeProto { name: "classlabels_int64s".into(), ints: vec![3, 1, 2], strings: vec![] };
        let strings = AttributeProto {
            name: "classlabels_strings".into(),
            ints: vec![],
            strings: vec![b"no".to_vec(), b"yes".to_vec()],
        };
        let mut other = zipmap("ignored", ints.clone());
        other.op_type = "Identity".into();
        let model = ModelProto {
            graph: Some(GraphProto { node: vec![zipmap("probs", ints), zipmap("answers", strings), other] }),
        };
        let labels = zipmap_labels(&model.encode_to_vec());
        assert_eq!(labels.len(), 2, "{labels:?}");
        assert_eq!(labels["probs"], ["3", "1", "2"]);
        assert_eq!(labels["answers"], ["no", "yes"]);
    }

    #[test]
    fn garbage_gives_no_labels() {
        assert!(zipmap_labels(b"\xff\xff not onnx").is_empty());
    }
}
