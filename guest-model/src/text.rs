//! Raw text in, labels out: a Hugging Face tokenizer in front of an encoder.
//!
//! `edgeinfer compile --tokenizer tokenizer.json` calls `text-setup.attach-tokenizer`; from
//! then on the component serves one BYTES input, [`TEXT_INPUT`], instead of the network's
//! token inputs. Each string is tokenized as the file says (normalizer, pre-tokenizer, model,
//! post-processor, truncation, padding), exactly as the Python `tokenizers` library does, and
//! the network gets `input_ids`, `attention_mask` and `token_type_ids` (whichever it takes).
//! With labels, an extra BYTES output, [`LABEL_OUTPUT`], names each row's best class.

use tokenizers::{PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::convert;
use crate::edgeinfer::inference::types::{Datatype, Error, InvalidInput, ModelMetadata, Tensor, TensorSpec};

/// The served input: a batch of strings, shape `[N]` (or `[N, 1]`, as Triton clients send).
pub const TEXT_INPUT: &str = "text";
/// The served extra output with `--labels`: the best class's name per row.
pub const LABEL_OUTPUT: &str = "label";

/// What the network reads from one of its inputs.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    Ids,
    AttentionMask,
    TypeIds,
}

impl Role {
    /// The role of a network input, by the names exporters (transformers, optimum) use.
    fn of(name: &str) -> Option<Role> {
        let name = name.to_ascii_lowercase();
        if name.contains("mask") {
            Some(Role::AttentionMask)
        } else if name.contains("type") || name.contains("segment") {
            Some(Role::TypeIds)
        } else if name.contains("ids") || name == "input" || name.contains("token") {
            Some(Role::Ids)
        } else {
            None
        }
    }
}

/// One network input the tokenizer fills.
#[derive(Debug, Clone)]
struct Slot {
    name: String,
    datatype: Datatype,
    role: Role,
}

/// The tokenizer, the network inputs it fills and the optional class names.
pub struct TextFrontend {
    tokenizer: Tokenizer,
    slots: Vec<Slot>,
    labels: Vec<String>,
    /// The output whose rows `labels` name (the first float output with that many columns).
    scores: Option<String>,
}

impl TextFrontend {
    /// Reads a `tokenizer.json` and matches it to the network's signature.
    pub fn new(tokenizer_json: &[u8], labels: Vec<String>, network: &ModelMetadata) -> Result<Self, String> {
        let mut tokenizer =
            Tokenizer::from_bytes(tokenizer_json).map_err(|e| format!("cannot read the tokenizer: {e}"))?;
        let mut slots = Vec::new();
        let mut fixed_length = None;
        for input in &network.inputs {
            let role = Role::of(&input.name).ok_or_else(|| {
                format!(
                    "the model's input {} is not token ids, an attention mask or token type ids; \
                     a tokenizer can only feed those",
                    input.name
                )
            })?;
            if !matches!(input.datatype, Datatype::Int64 | Datatype::Int32) || input.shape.len() != 2 {
                return Err(format!(
                    "the model's input {} is {} {:?}; a tokenizer feeds INT64 or INT32 [batch, sequence]",
                    input.name,
                    convert::datatype_name(input.datatype),
                    input.shape
                ));
            }
            if input.shape[1] > 0 {
                fixed_length = Some(input.shape[1] as usize);
            }
            slots.push(Slot { name: input.name.clone(), datatype: input.datatype, role });
        }
        if !slots.iter().any(|slot| slot.role == Role::Ids) {
            return Err("the model has no token ids input (such as input_ids)".into());
        }
        // Padding: as the file says; without a padding section, to the longest string of the
        // batch with id 0. A model with a fixed sequence length gets exactly that length.
        let mut padding = tokenizer.get_padding().cloned().unwrap_or_else(|| PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id: 0,
            pad_type_id: 0,
            pad_token: tokenizer.id_to_token(0).unwrap_or_default(),
        });
        if let Some(length) = fixed_length {
            padding.strategy = PaddingStrategy::Fixed(length);
            if tokenizer.get_truncation().is_none_or(|t| t.max_length > length) {
                let truncation =
                    TruncationParams { max_length: length, ..tokenizer.get_truncation().cloned().unwrap_or_default() };
                tokenizer.with_truncation(Some(truncation)).map_err(|e| format!("truncation: {e}"))?;
            }
        }
        tokenizer.with_padding(Some(padding));
        let scores = match labels.is_empty() {
            true => None,
            false => Some(scores_output(network, labels.len())?),
        };
        // A component instance has one thread: encode the batch in it.
        tokenizers::utils::parallelism::set_parallelism(false);
        Ok(TextFrontend { tokenizer, slots, labels, scores })
    }

    /// The signature clients see: `text` in; the network's outputs and `label` out.
    pub fn served(&self, network: &ModelMetadata) -> ModelMetadata {
        let mut outputs = network.outputs.clone();
        if self.scores.is_some() {
            outputs.push(TensorSpec { name: LABEL_OUTPUT.into(), datatype: Datatype::Bytes, shape: vec![-1] });
        }
        ModelMetadata {
            inputs: vec![TensorSpec { name: TEXT_INPUT.into(), datatype: Datatype::Bytes, shape: vec![-1] }],
            outputs,
            ..network.clone()
        }
    }

    /// Tokenizes the request's strings into the network's input tensors.
    pub fn encode(&self, request: &[Tensor]) -> Result<Vec<Tensor>, Error> {
        if let Some(other) = request.iter().find(|t| t.name != TEXT_INPUT) {
            return Err(invalid(&other.name, format!("unknown input; this model takes {TEXT_INPUT} (BYTES)")));
        }
        let text = request.iter().find(|t| t.name == TEXT_INPUT).ok_or_else(|| invalid(TEXT_INPUT, "missing input"))?;
        if text.datatype != Datatype::Bytes {
            return Err(invalid(
                TEXT_INPUT,
                format!("datatype {} does not match the model's BYTES", convert::datatype_name(text.datatype)),
            ));
        }
        let rows = match text.shape.as_slice() {
            [n] | [n, 1] => usize::try_from(*n).map_err(|_| invalid(TEXT_INPUT, "too many strings"))?,
            other => return Err(invalid(TEXT_INPUT, format!("shape {other:?} is not [N] or [N, 1] strings"))),
        };
        if rows == 0 {
            return Err(invalid(TEXT_INPUT, "no strings to classify (shape [0])"));
        }
        let strings = convert::bytes_items(&text.data, rows).map_err(|e| invalid(TEXT_INPUT, e))?;
        let encodings = self
            .tokenizer
            .encode_batch(strings, true)
            .map_err(|e| invalid(TEXT_INPUT, format!("cannot tokenize: {e}")))?;
        let length = encodings.first().map_or(0, |e| e.len());
        let shape = vec![rows as u64, length as u64];
        let tensors = self
            .slots
            .iter()
            .map(|slot| {
                let values = encodings.iter().flat_map(|e| match slot.role {
                    Role::Ids => e.get_ids(),
                    Role::AttentionMask => e.get_attention_mask(),
                    Role::TypeIds => e.get_type_ids(),
                });
                let data: Vec<u8> = match slot.datatype {
                    Datatype::Int32 => values.flat_map(|&v| (v as i32).to_le_bytes()).collect(),
                    _ => values.flat_map(|&v| i64::from(v).to_le_bytes()).collect(),
                };
                Tensor { name: slot.name.clone(), datatype: slot.datatype, shape: shape.clone(), data }
            })
            .collect();
        Ok(tensors)
    }

    /// The `label` output for the network's outputs, when labels were given.
    pub fn label(&self, outputs: &[Tensor]) -> Result<Option<Tensor>, Error> {
        let Some(scores) = &self.scores else { return Ok(None) };
        let tensor = outputs
            .iter()
            .find(|t| &t.name == scores)
            .ok_or_else(|| Error::Model(format!("the model did not return {scores}")))?;
        let values: Vec<f64> = match tensor.datatype {
            Datatype::Fp32 => {
                tensor.data.chunks_exact(4).map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))).collect()
            }
            Datatype::Fp64 => tensor
                .data
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                .collect(),
            other => {
                return Err(Error::Model(format!("{scores} is {}, not scores", convert::datatype_name(other))));
            }
        };
        let mut data = Vec::new();
        let mut rows = 0u64;
        for row in values.chunks(self.labels.len()) {
            let best = row.iter().enumerate().fold(0, |best, (i, v)| if *v > row[best] { i } else { best });
            let name = self.labels[best].as_bytes();
            data.extend_from_slice(&(name.len() as u32).to_le_bytes());
            data.extend_from_slice(name);
            rows += 1;
        }
        Ok(Some(Tensor { name: LABEL_OUTPUT.into(), datatype: Datatype::Bytes, shape: vec![rows], data }))
    }
}

/// The first float output whose last axis has `classes` columns (or a dynamic last axis).
fn scores_output(network: &ModelMetadata, classes: usize) -> Result<String, String> {
    network
        .outputs
        .iter()
        .find(|o| {
            matches!(o.datatype, Datatype::Fp32 | Datatype::Fp64)
                && o.shape.len() == 2
                && (o.shape[1] == classes as i64 || o.shape[1] < 0)
        })
        .map(|o| o.name.clone())
        .ok_or_else(|| {
            let outputs: Vec<String> = network.outputs.iter().map(|o| format!("{} {:?}", o.name, o.shape)).collect();
            format!(
                "{classes} labels, but no [batch, {classes}] float output to name (outputs: {})",
                outputs.join(", ")
            )
        })
}

fn invalid(input: &str, message: impl Into<String>) -> Error {
    Error::InvalidInput(InvalidInput { input: input.to_string(), message: message.into() })
}
