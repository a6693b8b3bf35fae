//! The prediction log: every logged prediction (request id, caller, time, model, version,
//! component sha256, inputs and outputs) appended to rotating binary files under
//! `<repo>/.edgeinfer/predictions/`, bounded in total size and age (oldest files removed).
//!
//! A record is `u32 LE` payload length, then the payload: `u32 LE` header length, the JSON
//! header (`RecordHeader`), and the raw tensor data of the inputs then the outputs, in header
//! order. A file is either plain (the magic line `EIPL1\n`, then records) or sealed (`EIPL2\n`,
//! then segments, each a batch of records encrypted with AES-256-GCM under a data key whose id
//! the segment names: see [`files`]). Readers skip a torn last record or segment and report
//! every segment they cannot open (unknown key, failed authentication, cut short) while
//! reading the rest.
//!
//! Writing happens on one thread ([`PredictionLog`]) off the request path; records are
//! redacted per model ([`crate::redaction`]) before anything is written. Tensors over
//! [`LogBounds::max_full_tensor_bytes`] are logged as shape + sha256 only; such a record says
//! so ([`PredictionRecord::digests`]). Records of one request id or one caller can be erased
//! ([`erase`]), rewriting the files that hold them.

mod erase;
pub mod files;
mod writer;

use std::collections::BTreeMap;

use edgeinfer_oip::{Datatype, Tensor};
use serde::{Deserialize, Serialize};

use crate::redaction::Rule;
use crate::{Error, Result};

pub use erase::{Erasure, ErasureReport, erase};
pub use files::{LogRead, ProblemKind, ReadProblem, for_each_record, read_log};
pub use writer::{LogProtection, PredictionLog};

/// Which version produced a logged prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The version that answered the client.
    Live,
    /// A shadow version that received a copy.
    Shadow,
}

/// One logged prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionRecord {
    /// The request id (the client's, or one the server generated and returned).
    pub id: String,
    /// The caller's token name, when authentication is on.
    pub caller: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: u64,
    /// SHA-256 of the component that computed the outputs.
    pub sha256: String,
    /// Live or shadow.
    pub role: Role,
    /// The outputs the request asked for (empty: all).
    pub requested: Vec<String>,
    /// The request's inputs.
    pub inputs: Vec<Tensor>,
    /// The outputs computed.
    pub outputs: Vec<Tensor>,
    /// Tensors logged as a digest only (over [`LogBounds::max_full_tensor_bytes`]): name ->
    /// lowercase hex sha256 of their data. Their `data` reads back empty; replay cannot
    /// re-run a record with a digested input, and compares digested outputs by digest.
    pub digests: BTreeMap<String, String>,
    /// Tensors redacted before they were written (dropped: data empty; hashed: a BYTES
    /// tensor of keyed hashes), by name.
    pub redacted: BTreeMap<String, Rule>,
}

/// What the JSON header of a record holds.
#[derive(Debug, Serialize, Deserialize)]
struct RecordHeader {
    id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    caller: Option<String>,
    time_ms: u64,
    model: String,
    version: u64,
    sha256: String,
    role: Role,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    requested: Vec<String>,
    inputs: Vec<TensorHeader>,
    outputs: Vec<TensorHeader>,
}

#[derive(Debug, Serialize, Deserialize)]
struct TensorHeader {
    name: String,
    datatype: Datatype,
    shape: Vec<u64>,
    /// Bytes of data that follow in the record (0 for a digest-only or dropped tensor).
    bytes: u64,
    /// Set for a tensor logged as its digest only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    /// Set for a redacted tensor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    redacted: Option<Rule>,
}

impl PredictionRecord {
    /// The header of `tensor`: in full unless it is over `max_full` bytes (0: no limit) or was
    /// read back as a digest already.
    fn tensor_header(&self, tensor: &Tensor, max_full: u64) -> TensorHeader {
        let known = self.digests.get(&tensor.name).cloned();
        let full = known.is_none() && logged_in_full(tensor, max_full);
        TensorHeader {
            name: tensor.name.clone(),
            datatype: tensor.datatype,
            shape: tensor.shape.clone(),
            bytes: if full { tensor.data.len() as u64 } else { 0 },
            sha256: known.or_else(|| (!full).then(|| edgeinfer_runtime::digest::sha256_hex(&tensor.data))),
            redacted: self.redacted.get(&tensor.name).copied(),
        }
    }

    /// Appends the record (payload length, header length, header, data) to `out`, tensors
    /// over `max_full` bytes as digests; returns the bytes written.
    fn write_to(&self, out: &mut Vec<u8>, max_full: u64) -> Result<u64> {
        let header = RecordHeader {
            id: self.id.clone(),
            caller: self.caller.clone(),
            time_ms: self.time_ms,
            model: self.model.clone(),
            version: self.version,
            sha256: self.sha256.clone(),
            role: self.role,
            requested: self.requested.clone(),
            inputs: self.inputs.iter().map(|t| self.tensor_header(t, max_full)).collect(),
            outputs: self.outputs.iter().map(|t| self.tensor_header(t, max_full)).collect(),
        };
        let full: Vec<&Tensor> = self
            .inputs
            .iter()
            .chain(&self.outputs)
            .zip(header.inputs.iter().chain(&header.outputs))
            .filter(|(_, meta)| meta.sha256.is_none())
            .map(|(tensor, _)| tensor)
            .collect();
        let header = serde_json::to_vec(&header).map_err(Error::runtime)?;
        let data: usize = full.iter().map(|t| t.data.len()).sum();
        let payload = 4 + header.len() + data;
        let length = u32::try_from(payload).map_err(|_| Error::Runtime("prediction record over 4 GiB".into()))?;
        out.reserve(4 + payload);
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        for tensor in full {
            out.extend_from_slice(&tensor.data);
        }
        Ok(4 + payload as u64)
    }

    /// The bytes this record takes in the log (digested tensors count nothing).
    fn logged_bytes(&self, max_full: u64) -> u64 {
        let data: u64 = self
            .inputs
            .iter()
            .chain(&self.outputs)
            .filter(|t| logged_in_full(t, max_full))
            .map(|t| t.data.len() as u64)
            .sum();
        data + RECORD_OVERHEAD
    }

    /// The bytes of tensor data this record holds in memory while queued.
    fn held_bytes(&self) -> u64 {
        self.inputs.iter().chain(&self.outputs).map(|t| t.data.len() as u64).sum::<u64>() + RECORD_OVERHEAD
    }

    /// A record from its payload.
    fn decode(payload: &[u8]) -> std::result::Result<PredictionRecord, String> {
        let header_length = payload.get(..4).ok_or("record shorter than its header length")?;
        let header_length = u32::from_le_bytes(header_length.try_into().map_err(|_| "bad length")?) as usize;
        let header = payload.get(4..4 + header_length).ok_or("record shorter than its header")?;
        let header: RecordHeader = serde_json::from_slice(header).map_err(|e| format!("bad record header: {e}"))?;
        let mut data = &payload[4 + header_length..];
        let tensors = || header.inputs.iter().chain(&header.outputs);
        let digests = tensors().filter_map(|t| Some((t.name.clone(), t.sha256.clone()?))).collect();
        let redacted = tensors().filter_map(|t| Some((t.name.clone(), t.redacted?))).collect();
        let mut take = |meta: &TensorHeader| -> std::result::Result<Tensor, String> {
            let length = usize::try_from(meta.bytes).map_err(|_| "tensor too large")?;
            if data.len() < length {
                return Err(format!("record shorter than tensor '{}'", meta.name));
            }
            let (bytes, rest) = data.split_at(length);
            data = rest;
            Ok(Tensor {
                name: meta.name.clone(),
                datatype: meta.datatype,
                shape: meta.shape.clone(),
                data: edgeinfer_oip::Bytes::copy_from_slice(bytes),
            })
        };
        let inputs = header.inputs.iter().map(&mut take).collect::<std::result::Result<Vec<_>, _>>()?;
        let outputs = header.outputs.iter().map(&mut take).collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(PredictionRecord {
            id: header.id,
            caller: header.caller,
            time_ms: header.time_ms,
            model: header.model,
            version: header.version,
            sha256: header.sha256,
            role: header.role,
            requested: header.requested,
            inputs,
            outputs,
            digests,
            redacted,
        })
    }
}

/// What a record's header and framing take besides its tensors, for the byte accounting.
const RECORD_OVERHEAD: u64 = 512;

/// Whether `tensor` is logged with its data (else as its digest).
fn logged_in_full(tensor: &Tensor, max_full: u64) -> bool {
    max_full == 0 || tensor.data.len() as u64 <= max_full
}

/// Size, age and rate bounds of a prediction log.
#[derive(Debug, Clone, Copy)]
pub struct LogBounds {
    /// A file is closed and a new one started once it reaches this size.
    pub max_file_bytes: u64,
    /// Oldest files are removed while all files together exceed this.
    pub max_total_bytes: u64,
    /// Files last written more than this many ms ago are removed (0: kept until the size
    /// bound removes them).
    pub max_age_ms: u64,
    /// Tensor bytes that may wait for the writer; a record beyond is dropped and counted.
    pub max_queued_bytes: u64,
    /// Tensors over this many bytes are logged as shape + sha256 only (0: all in full).
    pub max_full_tensor_bytes: u64,
    /// Bytes per second the log may write (0: no budget); records beyond are dropped and
    /// counted, so a slow or small disk never slows requests.
    pub bytes_per_second: u64,
}

impl Default for LogBounds {
    fn default() -> Self {
        LogBounds {
            max_file_bytes: 64 << 20,
            max_total_bytes: 1 << 30,
            max_age_ms: 0,
            max_queued_bytes: 64 << 20,
            max_full_tensor_bytes: 1 << 20,
            bytes_per_second: 0,
        }
    }
}

#[cfg(test)]
mod tests;
