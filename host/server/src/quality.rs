//! Model quality from ground truth: logged predictions are remembered by request id; labels
//! posted later (`POST /v2/models/{m}/feedback`) are joined to them and counted, per version,
//! over a sliding window: accuracy and per-class precision/recall for classifiers, MAE and
//! RMSE for regressors.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use edgeinfer_oip::{Datatype, Tensor};
use serde::Serialize;
use serde_json::Value;

use edgeinfer_monitor::predictions::Role;
use edgeinfer_runtime::features::tensor_numbers;
use serde::Deserialize;

/// What a model predicts, for quality tracking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Classes: accuracy, precision and recall (a float output of several columns is read as
    /// scores and its arg-max taken).
    Classification,
    /// Numbers: mean absolute error and root mean squared error.
    Regression,
}

/// One row's prediction or label.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelValue {
    /// A class, as text (`3`, `cat`).
    Class(String),
    /// A number.
    Number(f64),
}

impl LabelValue {
    /// A label from feedback JSON, read as `task` says.
    fn from_json(value: &Value, task: Task) -> Option<LabelValue> {
        match (task, value) {
            (Task::Regression, v) => v.as_f64().map(LabelValue::Number),
            (Task::Classification, Value::String(s)) => Some(LabelValue::Class(s.clone())),
            (Task::Classification, Value::Bool(b)) => Some(LabelValue::Class(u8::from(*b).to_string())),
            (Task::Classification, Value::Number(n)) => match n.as_i64() {
                Some(i) => Some(LabelValue::Class(i.to_string())),
                None => n.as_f64().filter(|f| f.fract() == 0.0).map(|f| LabelValue::Class((f as i64).to_string())),
            },
            _ => None,
        }
    }
}

/// Which output is the prediction and how to read it.
#[derive(Debug, Clone)]
pub struct PredictionSpec {
    /// Output name (None: `label`, else the first output).
    pub output: Option<String>,
    /// Classification or regression (None: from the output's datatype).
    pub task: Option<Task>,
}

impl PredictionSpec {
    /// The task for an output of `datatype`.
    fn task_for(&self, datatype: Datatype) -> Task {
        self.task.unwrap_or(match datatype {
            Datatype::Fp16 | Datatype::Fp32 | Datatype::Fp64 => Task::Regression,
            _ => Task::Classification,
        })
    }

    /// The output that holds the prediction: the configured one, else `label`, else the first.
    pub fn chosen<'t>(&self, outputs: &'t [Tensor]) -> Option<&'t Tensor> {
        match &self.output {
            Some(name) => outputs.iter().find(|t| t.name == *name),
            None => outputs.iter().find(|t| t.name == "label").or_else(|| outputs.first()),
        }
    }

    /// The prediction per row in `outputs`, and the task.
    pub fn extract(&self, outputs: &[Tensor]) -> Option<(Task, Vec<LabelValue>)> {
        let tensor = self.chosen(outputs)?;
        // Feedback joins a label (or a few scores) per row; an image-sized output (a
        // segmentation map, an embedding batch) is not something a label is compared with,
        // and turning its million values into answers cost 100+ ms and as much memory per
        // remembered request.
        let elements = tensor.shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d))?;
        if elements > MAX_ANSWER_ELEMENTS {
            return None;
        }
        let task = self.task_for(tensor.datatype);
        let values = tensor_values(tensor)?;
        let rows = usize::try_from(*tensor.shape.first().unwrap_or(&1)).ok()?.max(1);
        let answers = match task {
            Task::Regression => values.into_iter().map(|v| LabelValue::Number(v.as_f64())).collect(),
            Task::Classification if values.len() > rows && values.len() % rows == 0 => {
                // Scores per class: the arg-max is the class.
                let width = values.len() / rows;
                values
                    .chunks(width)
                    .map(|row| {
                        let best = (0..row.len()).max_by(|&a, &b| row[a].as_f64().total_cmp(&row[b].as_f64()));
                        LabelValue::Class(best.unwrap_or(0).to_string())
                    })
                    .collect()
            }
            Task::Classification => values.into_iter().map(|v| LabelValue::Class(v.as_class())).collect(),
        };
        Some((task, answers))
    }
}

/// Outputs with more elements than this give no answers to join feedback to.
const MAX_ANSWER_ELEMENTS: u64 = 1 << 16;

/// One element of an output tensor.
#[derive(Debug, Clone)]
enum Element {
    Number(f64),
    Text(String),
}

impl Element {
    fn as_f64(&self) -> f64 {
        match self {
            Element::Number(n) => *n,
            Element::Text(t) => t.parse().unwrap_or(f64::NAN),
        }
    }

    fn as_class(&self) -> String {
        match self {
            Element::Number(n) if n.fract() == 0.0 => (*n as i64).to_string(),
            Element::Number(n) => n.to_string(),
            Element::Text(t) => t.clone(),
        }
    }
}

fn tensor_values(tensor: &Tensor) -> Option<Vec<Element>> {
    if tensor.datatype == Datatype::Bytes {
        return Some(edgeinfer_oip::bytes_items(&tensor.data)?.into_iter().map(Element::Text).collect());
    }
    Some(tensor_numbers(tensor)?.into_iter().map(Element::Number).collect())
}

/// A prediction remembered for a later label.
#[derive(Debug, Clone)]
struct Logged {
    version: u64,
    role: Role,
    task: Task,
    answers: Vec<LabelValue>,
}

/// Logged predictions by (model, request id), oldest forgotten first beyond a capacity.
pub struct FeedbackIndex {
    capacity: usize,
    inner: Mutex<IndexInner>,
}

#[derive(Default)]
struct IndexInner {
    entries: HashMap<(String, String), Vec<Logged>>,
    order: VecDeque<(String, String)>,
}

/// A labelled prediction to count: the version, its answers and the labels.
pub struct Joined {
    /// The version that made the prediction.
    pub version: u64,
    /// Live or shadow.
    pub role: Role,
    /// Predicted and actual, per row.
    pub pairs: Vec<(LabelValue, LabelValue)>,
}

/// Why one feedback item was not counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unjoined {
    /// No logged prediction has this id (never logged, sampled out, or forgotten).
    UnknownId,
    /// The label does not fit the prediction (type, or count of rows).
    BadLabel(String),
}

impl FeedbackIndex {
    /// An index remembering at most `capacity` predictions.
    pub fn new(capacity: usize) -> FeedbackIndex {
        FeedbackIndex { capacity: capacity.max(1), inner: Mutex::new(IndexInner::default()) }
    }

    /// Remembers the prediction `version` made for request `id`.
    pub fn remember(&self, model: &str, id: &str, version: u64, role: Role, task: Task, answers: Vec<LabelValue>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let key = (model.to_string(), id.to_string());
        let logged = Logged { version, role, task, answers };
        match inner.entries.get_mut(&key) {
            Some(list) => list.push(logged),
            None => {
                inner.entries.insert(key.clone(), vec![logged]);
                inner.order.push_back(key);
                while inner.order.len() > self.capacity {
                    if let Some(old) = inner.order.pop_front() {
                        inner.entries.remove(&old);
                    }
                }
            }
        }
    }

    /// Forgets the predictions of these request ids (every model): they were erased.
    pub fn forget(&self, ids: &[String]) {
        let ids: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.entries.retain(|(_, logged), _| !ids.contains(logged.as_str()));
        inner.order.retain(|(_, logged)| !ids.contains(logged.as_str()));
    }

    /// Joins a label to the predictions of request `id` (live and shadow) and forgets them.
    pub fn join(&self, model: &str, id: &str, label: &Value) -> Result<Vec<Joined>, Unjoined> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let key = (model.to_string(), id.to_string());
        let logged = inner.entries.get(&key).ok_or(Unjoined::UnknownId)?;
        let mut joined = Vec::new();
        for entry in logged {
            let labels: Vec<&Value> = match label {
                Value::Array(items) => items.iter().collect(),
                single => vec![single],
            };
            if labels.len() != entry.answers.len() {
                return Err(Unjoined::BadLabel(format!(
                    "{} labels for a prediction of {} rows",
                    labels.len(),
                    entry.answers.len()
                )));
            }
            let actual = labels
                .iter()
                .map(|v| {
                    LabelValue::from_json(v, entry.task)
                        .ok_or_else(|| Unjoined::BadLabel(format!("label {v} does not fit a {:?} model", entry.task)))
                })
                .collect::<Result<Vec<_>, _>>()?;
            joined.push(Joined {
                version: entry.version,
                role: entry.role,
                pairs: entry.answers.iter().cloned().zip(actual).collect(),
            });
        }
        inner.entries.remove(&key);
        Ok(joined)
    }
}

/// Labelled predictions of one version, the newest `capacity` within `span_ms`.
#[derive(Debug)]
pub struct QualityWindow {
    capacity: usize,
    span_ms: u64,
    pairs: VecDeque<(u64, LabelValue, LabelValue)>,
    role: Option<Role>,
}

/// What a window says about a version.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QualityView {
    /// Labelled predictions (rows) counted.
    pub labelled: usize,
    /// Whether the version is live or shadow (as its latest labelled prediction was).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Share of correct classes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Precision, recall and support per class.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub classes: BTreeMap<String, ClassQuality>,
    /// Mean absolute error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
    /// Root mean squared error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
}

/// One class's figures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClassQuality {
    /// Of the rows predicted as this class, the share that were.
    pub precision: Option<f64>,
    /// Of the rows of this class, the share predicted as it.
    pub recall: Option<f64>,
    /// Rows of this class.
    pub support: usize,
}

impl QualityWindow {
    /// An empty window.
    pub fn new(capacity: usize, span_s: u64) -> QualityWindow {
        QualityWindow { capacity: capacity.max(1), span_ms: span_s * 1000, pairs: VecDeque::new(), role: None }
    }

    /// Adds labelled rows at `now_ms`.
    pub fn add(&mut self, now_ms: u64, role: Role, pairs: Vec<(LabelValue, LabelValue)>) {
        self.role = Some(role);
        for (predicted, actual) in pairs {
            self.pairs.push_back((now_ms, predicted, actual));
        }
        while self.pairs.len() > self.capacity {
            self.pairs.pop_front();
        }
    }

    /// The figures over the window at `now_ms`.
    pub fn view(&mut self, now_ms: u64) -> QualityView {
        if self.span_ms > 0 {
            while self.pairs.front().is_some_and(|(t, _, _)| now_ms.saturating_sub(*t) > self.span_ms) {
                self.pairs.pop_front();
            }
        }
        let mut view = QualityView {
            labelled: self.pairs.len(),
            role: self.role,
            accuracy: None,
            classes: BTreeMap::new(),
            mae: None,
            rmse: None,
        };
        let (mut correct, mut classified, mut absolute, mut squared, mut measured) = (0, 0, 0.0, 0.0, 0);
        let mut per_class: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new(); // tp, predicted, actual
        for (_, predicted, actual) in &self.pairs {
            match (predicted, actual) {
                (LabelValue::Class(p), LabelValue::Class(a)) => {
                    classified += 1;
                    per_class.entry(p.clone()).or_default().1 += 1;
                    per_class.entry(a.clone()).or_default().2 += 1;
                    if p == a {
                        correct += 1;
                        per_class.entry(p.clone()).or_default().0 += 1;
                    }
                }
                (LabelValue::Number(p), LabelValue::Number(a)) => {
                    measured += 1;
                    absolute += (p - a).abs();
                    squared += (p - a) * (p - a);
                }
                _ => {}
            }
        }
        let share = |part: usize, whole: usize| (whole > 0).then(|| part as f64 / whole as f64);
        if classified > 0 {
            view.accuracy = share(correct, classified);
            view.classes = per_class
                .into_iter()
                .map(|(class, (tp, predicted, actual))| {
                    (
                        class,
                        ClassQuality { precision: share(tp, predicted), recall: share(tp, actual), support: actual },
                    )
                })
                .collect();
        }
        if measured > 0 {
            view.mae = Some(absolute / measured as f64);
            view.rmse = Some((squared / measured as f64).sqrt());
        }
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(c: &str) -> LabelValue {
        LabelValue::Class(c.into())
    }

    #[test]
    fn accuracy_precision_recall_and_window() {
        let mut window = QualityWindow::new(4, 0);
        let pairs = vec![(class("1"), class("1")), (class("1"), class("2")), (class("2"), class("2"))];
        window.add(0, Role::Live, pairs);
        let view = window.view(0);
        assert_eq!(view.accuracy, Some(2.0 / 3.0));
        assert_eq!(view.classes["1"].precision, Some(0.5));
        assert_eq!(view.classes["2"].recall, Some(0.5));
        assert_eq!(view.classes["2"].precision, Some(1.0));
        window.add(1, Role::Live, vec![(class("3"), class("3")), (class("3"), class("3"))]);
        let view = window.view(1);
        assert_eq!(view.labelled, 4, "the oldest left the window");
        assert_eq!(view.accuracy, Some(0.75));
    }

    #[test]
    fn regression_errors_and_time_span() {
        let mut window = QualityWindow::new(100, 10);
        window.add(0, Role::Live, vec![(LabelValue::Number(1.0), LabelValue::Number(2.0))]);
        window.add(20_000, Role::Live, vec![(LabelValue::Number(1.0), LabelValue::Number(4.0))]);
        let view = window.view(20_000);
        assert_eq!((view.labelled, view.mae, view.rmse), (1, Some(3.0), Some(3.0)));
    }

    #[test]
    fn feedback_joins_once_and_checks_rows() {
        let index = FeedbackIndex::new(2);
        index.remember("m", "a", 1, Role::Live, Task::Classification, vec![class("3"), class("4")]);
        assert!(matches!(index.join("m", "a", &serde_json::json!(3)), Err(Unjoined::BadLabel(_))));
        let joined = index.join("m", "a", &serde_json::json!([3, "5"])).expect("joined");
        assert_eq!(joined[0].pairs, vec![(class("3"), class("3")), (class("4"), class("5"))]);
        assert_eq!(index.join("m", "a", &serde_json::json!([3, 4])).err(), Some(Unjoined::UnknownId));
        for id in ["b", "c", "d"] {
            index.remember("m", id, 1, Role::Live, Task::Classification, vec![class("1")]);
        }
        assert_eq!(index.join("m", "b", &serde_json::json!(1)).err(), Some(Unjoined::UnknownId), "forgotten");
    }

    #[test]
    fn scores_are_read_as_their_arg_max() {
        let data: Vec<u8> = [0.1f32, 0.7, 0.2, 0.5, 0.3, 0.2].iter().flat_map(|v| v.to_le_bytes()).collect();
        let scores =
            Tensor { name: "probabilities".into(), datatype: Datatype::Fp32, shape: vec![2, 3], data: data.into() };
        let spec = PredictionSpec { output: None, task: Some(Task::Classification) };
        let (_, answers) = spec.extract(&[scores]).expect("answers");
        assert_eq!(answers, vec![class("1"), class("0")]);
    }

    #[test]
    fn image_sized_outputs_give_no_answers_to_join() {
        let spec = PredictionSpec { output: None, task: None };
        let map = |elements: u64| Tensor {
            name: "mask".into(),
            datatype: Datatype::Fp32,
            shape: vec![1, elements],
            data: vec![0; elements as usize * 4].into(),
        };
        assert!(spec.extract(&[map(MAX_ANSWER_ELEMENTS)]).is_some(), "at the limit: answers");
        assert!(spec.extract(&[map(MAX_ANSWER_ELEMENTS + 1)]).is_none(), "over it: none");
    }
}
