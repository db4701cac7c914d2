//! Rust window functions the SQL catalog calls where SQL alone would be slow or awkward:
//!
//! - `rolling_median(value, t, window_s)`: median of `value` over the rows whose `t` lies
//!   in `[t - window_s, t)` of the same partition — a trailing, time-based baseline that
//!   excludes the current row. One pass with a sorted window: O(n·w).
//! - `debounce(label, min_samples)`: gaps-and-islands smoothing. Runs of the same label
//!   shorter than `min_samples` rows take the label of the last run that was long enough,
//!   so one noisy sample cannot produce two transitions. Nulls pass through. O(n).
//!
//! Both expect `ORDER BY` on the time column in their `OVER` clause.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{
    PartitionEvaluator, Signature, Volatility, WindowUDF, WindowUDFImpl,
};

/// The window functions to register.
pub fn all() -> Vec<WindowUDF> {
    vec![
        WindowUDF::new_from_impl(RollingMedian::new()),
        WindowUDF::new_from_impl(Debounce::new()),
    ]
}

fn constant_f64(arr: Option<&ArrayRef>) -> Result<f64> {
    let Some(a) = arr else {
        return exec_err!("missing constant argument");
    };
    let a = a.as_primitive_opt::<Float64Type>();
    match a.and_then(|a| (!a.is_empty() && a.is_valid(0)).then(|| a.value(0))) {
        Some(v) => Ok(v),
        None => exec_err!("constant argument must be a non-null float"),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RollingMedian {
    signature: Signature,
}

impl RollingMedian {
    fn new() -> Self {
        Self {
            signature: Signature::exact(
                vec![DataType::Float64, DataType::Float64, DataType::Float64],
                Volatility::Immutable,
            ),
        }
    }
}

impl WindowUDFImpl for RollingMedian {
    fn name(&self) -> &str {
        "rolling_median"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn partition_evaluator(
        &self,
        _args: PartitionEvaluatorArgs,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        Ok(Box::new(RollingMedianEval))
    }
    fn field(&self, args: WindowUDFFieldArgs) -> Result<FieldRef> {
        Ok(Arc::new(Field::new(args.name(), DataType::Float64, true)))
    }
}

#[derive(Debug)]
struct RollingMedianEval;

impl PartitionEvaluator for RollingMedianEval {
    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> Result<ArrayRef> {
        let (Some(v), Some(t)) = (values.first(), values.get(1)) else {
            return exec_err!("rolling_median(value, t, window_s) takes three arguments");
        };
        let window = constant_f64(values.get(2))?;
        let (Some(v), Some(t)) = (
            v.as_primitive_opt::<Float64Type>(),
            t.as_primitive_opt::<Float64Type>(),
        ) else {
            return exec_err!("rolling_median expects Float64 arguments");
        };
        Ok(Arc::new(rolling_median(v, t, window, num_rows)))
    }
}

/// The kernel behind `rolling_median`, public for benches and tests.
pub fn rolling_median(v: &Float64Array, t: &Float64Array, window: f64, n: usize) -> Float64Array {
    let mut sorted: Vec<f64> = Vec::new();
    let mut out = Vec::with_capacity(n);
    // Rows [lo, hi) are in the window of row i.
    let (mut lo, mut hi) = (0usize, 0usize);
    let value = |j: usize| (v.is_valid(j) && !v.value(j).is_nan()).then(|| v.value(j));
    let time = |j: usize| t.is_valid(j).then(|| t.value(j));
    for i in 0..n {
        let Some(ti) = time(i) else {
            out.push(None);
            continue;
        };
        while hi < i {
            if let Some(x) = value(hi) {
                let pos = sorted.partition_point(|y| *y < x);
                sorted.insert(pos, x);
            }
            hi += 1;
        }
        while lo < hi && time(lo).is_none_or(|tl| tl < ti - window) {
            if let Some(x) = value(lo) {
                let pos = sorted.partition_point(|y| *y < x);
                if sorted.get(pos) == Some(&x) {
                    sorted.remove(pos);
                }
            }
            lo += 1;
        }
        let m = sorted.len();
        out.push(match m {
            0 => None,
            _ if m % 2 == 1 => sorted.get(m / 2).copied(),
            _ => match (sorted.get(m / 2 - 1), sorted.get(m / 2)) {
                (Some(a), Some(b)) => Some((a + b) / 2.0),
                _ => None,
            },
        });
    }
    Float64Array::from(out)
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Debounce {
    signature: Signature,
}

impl Debounce {
    fn new() -> Self {
        Self {
            signature: Signature::exact(
                vec![DataType::Utf8, DataType::Float64],
                Volatility::Immutable,
            ),
        }
    }
}

impl WindowUDFImpl for Debounce {
    fn name(&self) -> &str {
        "debounce"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn partition_evaluator(
        &self,
        _args: PartitionEvaluatorArgs,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        Ok(Box::new(DebounceEval))
    }
    fn field(&self, args: WindowUDFFieldArgs) -> Result<FieldRef> {
        Ok(Arc::new(Field::new(args.name(), DataType::Utf8, true)))
    }
}

#[derive(Debug)]
struct DebounceEval;

impl PartitionEvaluator for DebounceEval {
    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> Result<ArrayRef> {
        let Some(labels) = values.first().and_then(|a| a.as_string_opt::<i32>()) else {
            return exec_err!("debounce(label, min_samples) expects a Utf8 label");
        };
        let min = constant_f64(values.get(1))?.max(1.0) as usize;
        let raw: Vec<Option<&str>> = (0..num_rows)
            .map(|i| labels.is_valid(i).then(|| labels.value(i)))
            .collect();
        Ok(Arc::new(StringArray::from(debounce(&raw, min))))
    }
}

/// The kernel behind `debounce`, public for tests.
pub fn debounce<'a>(raw: &[Option<&'a str>], min: usize) -> Vec<Option<&'a str>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut stable: Option<&str> = None;
    let mut i = 0;
    while i < raw.len() {
        let label = raw.get(i).copied().flatten();
        let mut j = i;
        while j < raw.len() && raw.get(j).copied().flatten() == label {
            j += 1;
        }
        let len = j - i;
        let emit = match label {
            None => None,
            Some(l) if len >= min => {
                stable = Some(l);
                Some(l)
            }
            Some(l) => Some(stable.unwrap_or(l)),
        };
        out.extend(std::iter::repeat_n(emit, len));
        i = j;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debounce_absorbs_short_runs() {
        let raw: Vec<Option<&str>> = ["A", "A", "A", "B", "A", "B", "B", "B"]
            .iter()
            .map(|s| Some(*s))
            .collect();
        let out = debounce(&raw, 2);
        assert_eq!(
            out,
            vec![
                Some("A"),
                Some("A"),
                Some("A"),
                Some("A"),
                Some("A"),
                Some("B"),
                Some("B"),
                Some("B")
            ]
        );
        // A short first run stays as it is.
        let raw = vec![Some("B"), Some("A"), Some("A")];
        assert_eq!(debounce(&raw, 2), vec![Some("B"), Some("A"), Some("A")]);
        assert_eq!(debounce(&[None, Some("A")], 2), vec![None, Some("A")]);
    }

    #[test]
    fn rolling_median_excludes_current_and_old_rows() {
        let v = Float64Array::from(vec![1.0, 2.0, 100.0, 3.0, 4.0]);
        let t = Float64Array::from(vec![0.0, 1.0, 2.0, 3.0, 10.0]);
        let m = rolling_median(&v, &t, 2.5, 5);
        assert!(m.is_null(0));
        assert_eq!(m.value(1), 1.0);
        assert_eq!(m.value(2), 1.5);
        assert_eq!(m.value(3), 51.0); // t in [0.5, 3): 2 and 100
        assert!(m.is_null(4));
    }
}
