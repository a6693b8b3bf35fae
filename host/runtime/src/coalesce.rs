//! Dynamic batching, the model side: which requests may share one call, how their rows are
//! concatenated and the outputs handed back, and how limits stay per request.
//!
//! Requests batch together when their inputs have the same names, datatypes and every
//! dimension but the first (the batch dimension), and they ask for the same outputs. Their
//! inputs are concatenated along the first dimension, the model runs once, and each member
//! gets exactly its own rows of every output, in order.
//!
//! Limits stay per request. The call's fuel budget is the sum of its members' budgets, its
//! memory cap the sum of theirs (up to the runtime's maximum) and its deadline the longest of
//! theirs. The fuel the call used is apportioned by rows: a member of `r` rows in a call of
//! `R` rows that used `F` fuel is charged `F x r / R` (rounded down; the last member takes the
//! remainder, so the shares add up to `F`). If the call fails for any reason (a trap, a limit,
//! an error, outputs that are not batch-major), or a member's share exceeds its own budget,
//! the members concerned run again one by one under their own limits, so one hostile
//! request fails alone and its neighbours get the answers they would have had unbatched.

use std::time::{Duration, Instant};

use edgeinfer_oip::{Datatype, Tensor};

use crate::limits::{LimitOverrides, Limits};
use crate::model::{InferOutcome, LoadedModel};
use crate::{Error, Result};

/// What requests must share to run in one call: per input (sorted by name) its name,
/// datatype and dimensions after the first; and the outputs asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BatchKey {
    inputs: Vec<(String, Datatype, Vec<u64>)>,
    outputs: Vec<String>,
}

impl BatchKey {
    /// The key and the number of rows of a request, or `None` when it cannot be batched (no
    /// inputs, a scalar input, or inputs whose first dimensions differ).
    pub fn of(inputs: &[Tensor], outputs: &[String]) -> Option<(BatchKey, u64)> {
        let rows = inputs.first()?.shape.first().copied()?;
        let mut described = Vec::with_capacity(inputs.len());
        for tensor in inputs {
            let (&first, rest) = tensor.shape.split_first()?;
            if first != rows {
                return None;
            }
            described.push((tensor.name.clone(), tensor.datatype, rest.to_vec()));
        }
        described.sort_by(|a, b| a.0.cmp(&b.0));
        Some((BatchKey { inputs: described, outputs: outputs.to_vec() }, rows))
    }
}

/// One request in a batch.
#[derive(Debug)]
pub struct Member {
    /// Its inputs (all with `rows` as their first dimension).
    pub inputs: Vec<Tensor>,
    /// Its rows.
    pub rows: u64,
    /// Its limits, as for an unbatched call.
    pub limits: LimitOverrides,
}

/// How a batch ran.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchReport {
    /// Model calls made: 1 for a batch that succeeded, more when members were rerun.
    pub executions: u64,
    /// Members rerun one by one.
    pub reruns: u64,
    /// Time from the first call's start to the last one's end.
    pub infer_time: Duration,
}

/// Runs `members` (the same key; outputs asked for: `outputs`) in one call when possible;
/// one result per member, in order.
pub fn run_batch(
    model: &LoadedModel,
    members: Vec<Member>,
    outputs: &[String],
) -> (Vec<Result<InferOutcome>>, BatchReport) {
    let started = Instant::now();
    let mut report = BatchReport::default();
    let mut results: Vec<Option<Result<InferOutcome>>> = (0..members.len()).map(|_| None).collect();
    let batched = members.len() > 1;
    if batched {
        report.executions += 1;
        if let Ok(shares) = run_together(model, &members, outputs) {
            for (slot, (member, share)) in results.iter_mut().zip(members.iter().zip(shares)) {
                if share.fuel_used <= model.manifest().limits.with(member.limits).fuel {
                    *slot = Some(Ok(share));
                }
            }
        }
    }
    for (slot, member) in results.iter_mut().zip(members) {
        match slot {
            // The batch call read a concatenated copy: each member's own inputs go back.
            Some(Ok(share)) => share.inputs = member.inputs,
            _ => {
                report.executions += 1;
                report.reruns += u64::from(batched);
                *slot = Some(model.infer(member.inputs, outputs, member.limits));
            }
        }
    }
    report.infer_time = started.elapsed();
    (results.into_iter().map(|r| r.expect("every member has a result")).collect(), report)
}

/// One call for every member; each member's outputs and fuel share, or why not.
fn run_together(model: &LoadedModel, members: &[Member], outputs: &[String]) -> Result<Vec<InferOutcome>> {
    let max_memory_mb = model.runtime().config().max_memory_mb;
    let budgets: Vec<Limits> = members.iter().map(|m| model.manifest().limits.with(m.limits)).collect();
    let limits = LimitOverrides {
        fuel: Some(budgets.iter().map(|l| l.fuel).fold(0u64, u64::saturating_add)),
        timeout_ms: budgets.iter().map(|l| l.timeout_ms).max(),
        memory_mb: Some(budgets.iter().map(|l| l.memory_mb).fold(0u64, u64::saturating_add).min(max_memory_mb)),
    };
    let rows: Vec<u64> = members.iter().map(|m| m.rows).collect();
    let inputs = concatenate(members)?;
    let outcome = model.infer(inputs, outputs, limits)?;
    let parts = split(outcome.outputs, &rows)
        .ok_or_else(|| Error::Model("the model's outputs are not batch-major; ran the requests one by one".into()))?;
    let shares = fuel_shares(outcome.fuel_used, &rows);
    Ok(parts
        .into_iter()
        .zip(shares)
        .map(|(outputs, fuel_used)| InferOutcome {
            outputs,
            fuel_used,
            instantiate_time: outcome.instantiate_time,
            inputs: Vec::new(),
            memory_bytes: outcome.memory_bytes,
        })
        .collect())
}

/// The members' inputs concatenated along the first dimension, input by input.
fn concatenate(members: &[Member]) -> Result<Vec<Tensor>> {
    let first = members.first().ok_or_else(|| Error::Model("an empty batch".into()))?;
    let total: u64 = members.iter().map(|m| m.rows).sum();
    first
        .inputs
        .iter()
        .map(|template| {
            let parts = members
                .iter()
                .map(|member| {
                    let tensor = member.inputs.iter().find(|t| t.name == template.name);
                    tensor
                        .map(|t| &t.data[..])
                        .ok_or_else(|| Error::Model(format!("batch member lacks input {}", template.name)))
                })
                .collect::<Result<Vec<&[u8]>>>()?;
            let data = parts.concat();
            let mut shape = template.shape.clone();
            shape[0] = total;
            Ok(Tensor { name: template.name.clone(), datatype: template.datatype, shape, data: data.into() })
        })
        .collect()
}

/// Splits every output into the members' rows, or `None` when an output's first dimension
/// is not the batch's row count (or its data does not divide into rows).
fn split(outputs: Vec<Tensor>, rows: &[u64]) -> Option<Vec<Vec<Tensor>>> {
    let total: u64 = rows.iter().sum();
    let mut parts: Vec<Vec<Tensor>> = rows.iter().map(|_| Vec::with_capacity(outputs.len())).collect();
    for output in outputs {
        if output.shape.first() != Some(&total) {
            return None;
        }
        let per_row: u64 = output.shape[1..].iter().product();
        let offsets = row_offsets(&output, total, per_row)?;
        let mut row = 0usize;
        for (part, &count) in parts.iter_mut().zip(rows) {
            let end = row + count as usize;
            let mut shape = output.shape.clone();
            shape[0] = count;
            let data = output.data.slice(offsets[row]..offsets[end]);
            part.push(Tensor { name: output.name.clone(), datatype: output.datatype, shape, data });
            row = end;
        }
    }
    Some(parts)
}

/// Byte offset of the start of every row, plus the end: `total + 1` entries.
fn row_offsets(output: &Tensor, total: u64, per_row: u64) -> Option<Vec<usize>> {
    let total = usize::try_from(total).ok()?;
    match output.datatype.element_size() {
        Some(size) => {
            let row_bytes = usize::try_from(per_row).ok()?.checked_mul(size)?;
            (row_bytes.checked_mul(total)? == output.data.len()).then(|| (0..=total).map(|r| r * row_bytes).collect())
        }
        None => {
            // BYTES: each element is a 4-byte little-endian length and that many bytes.
            let mut offsets = Vec::with_capacity(total + 1);
            let mut at = 0usize;
            offsets.push(0);
            for _ in 0..total {
                for _ in 0..per_row {
                    let len = u32::from_le_bytes(output.data.get(at..at + 4)?.try_into().ok()?) as usize;
                    at = at.checked_add(4 + len)?;
                }
                offsets.push(at);
            }
            (at == output.data.len()).then_some(offsets)
        }
    }
}

/// `fuel` apportioned by rows; the shares add up to `fuel`.
fn fuel_shares(fuel: u64, rows: &[u64]) -> Vec<u64> {
    let total: u128 = rows.iter().map(|&r| u128::from(r)).sum::<u128>().max(1);
    let mut shares: Vec<u64> =
        rows.iter().map(|&r| u64::try_from(u128::from(fuel) * u128::from(r) / total).unwrap_or(u64::MAX)).collect();
    let given: u64 = shares.iter().sum();
    if let Some(last) = shares.last_mut() {
        *last += fuel - given;
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, shape: &[u64], values: &[f32]) -> Tensor {
        Tensor {
            name: name.into(),
            datatype: Datatype::Fp32,
            shape: shape.to_vec(),
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    #[test]
    fn keys_ignore_rows_and_input_order_but_not_trailing_shape_or_outputs() {
        let a = [tensor("X", &[2, 3], &[0.0; 6]), tensor("Y", &[2, 1], &[0.0; 2])];
        let b = [tensor("Y", &[5, 1], &[0.0; 5]), tensor("X", &[5, 3], &[0.0; 15])];
        let (key_a, rows_a) = BatchKey::of(&a, &[]).unwrap();
        let (key_b, rows_b) = BatchKey::of(&b, &[]).unwrap();
        assert_eq!((rows_a, rows_b), (2, 5));
        assert_eq!(key_a, key_b);
        assert_ne!(key_a, BatchKey::of(&a, &["label".into()]).unwrap().0);
        assert_ne!(key_a, BatchKey::of(&[tensor("X", &[2, 4], &[0.0; 8]), a[1].clone()], &[]).unwrap().0);
        assert!(BatchKey::of(&[tensor("X", &[2, 3], &[0.0; 6]), tensor("Y", &[3, 1], &[0.0; 3])], &[]).is_none());
        assert!(BatchKey::of(&[tensor("X", &[], &[0.0])], &[]).is_none());
    }

    #[test]
    fn outputs_split_back_into_each_members_rows() {
        let output = tensor("Y", &[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let parts = split(vec![output], &[1, 2]).unwrap();
        assert_eq!(parts[0][0], tensor("Y", &[1, 2], &[1.0, 2.0]));
        assert_eq!(parts[1][0], tensor("Y", &[2, 2], &[3.0, 4.0, 5.0, 6.0]));
        assert!(split(vec![tensor("Y", &[1, 6], &[0.0; 6])], &[1, 2]).is_none(), "not batch-major");
    }

    #[test]
    fn bytes_outputs_split_by_items() {
        let items = ["a", "bcd", ""];
        let data: Vec<u8> =
            items.iter().flat_map(|s| (s.len() as u32).to_le_bytes().into_iter().chain(s.bytes())).collect();
        let output = Tensor { name: "label".into(), datatype: Datatype::Bytes, shape: vec![3], data: data.into() };
        let parts = split(vec![output], &[2, 1]).unwrap();
        assert_eq!(edgeinfer_oip::bytes_items(&parts[0][0].data).unwrap(), vec!["a", "bcd"]);
        assert_eq!(edgeinfer_oip::bytes_items(&parts[1][0].data).unwrap(), vec![""]);
    }

    #[test]
    fn fuel_shares_follow_rows_and_add_up() {
        assert_eq!(fuel_shares(100, &[1, 1, 2]), vec![25, 25, 50]);
        let shares = fuel_shares(101, &[1, 1, 1]);
        assert_eq!(shares, vec![33, 33, 35]);
        assert_eq!(shares.iter().sum::<u64>(), 101);
    }
}
