//! Rust window functions the SQL catalog calls where SQL alone would be slow or awkward:
//!
//! - `rolling_median(value, t, window_s)`: median of `value` over the rows whose `t` lies
//!   in `[t - window_s, t)` of the same partition — a trailing, time-based baseline that
//!   excludes the current row. One pass with a sorted window: O(n·w).
//! - `debounce(label, t, min_s, min_samples)`: gaps-and-islands smoothing in time. A run
//!   of the same label is stable when it lasts at least `min_s` seconds (each sample
//!   stands for the interval since the previous one) and has at least `min_samples`
//!   rows; shorter runs take the label of the last stable run, so one noisy sample cannot
//!   produce two transitions at any scrape interval. NULLs (failed scrapes) pass through
//!   and end the stable label: nothing is carried across an outage. O(n).
//! - `rearm(flag, t, quiet_s)`: true where `flag` holds after rows that did not hold it
//!   covering at least `quiet_s` seconds since it last held (an event fires once, then
//!   re-arms after `quiet_s` quiet seconds seen, whatever the interval).
//!   O(n).
//! - `rearm_held(flag, held, t, quiet_s)`: the same, where rows on which `held` holds
//!   while the event goes on are not quiet either: a flag read from a gauge that aliases
//!   at coarse intervals re-arms only once the state the gauge samples (`held`, from
//!   counters) has ended. `held` never fires an event itself. O(n).
//! - `sustained(flag, t, min_s, min_samples)`: `flag` kept only on runs of true rows that
//!   last at least `min_s` seconds (each row standing for the interval since the previous
//!   one) and `min_samples` rows; other rows false, NULL stays NULL. O(n).
//! - `rolling_sum(value, t, window_s)`: sum of `value` over the rows whose `t` lies in
//!   `(t - window_s, t]` (a trailing count over a time window, whatever the interval). O(n).
//! - `hold_while(value, keep)`: `value`, or where it is NULL and `keep` holds, the value
//!   held on the row before (the last observation carried over rows that observed
//!   nothing); NULL where both are missing or `keep` does not hold. O(n).
//!
//! - `previous_value(label)`: the last non-NULL label before the row (LAG skipping
//!   NULLs), for phase transitions. O(n).
//! - `unchanged(value)`: `value = LAG(value)`, the partition at once: DataFusion streams
//!   a `LAG` whose window needs no other function row by row (~80 ns a row, a quarter
//!   of the whole units query on a fleet); this is one vectorizable pass. O(n).
//! - `seconds_since_previous(ts_us)`: `(ts_us - LAG(ts_us)) / 1e6` as a float, the
//!   partition at once (the samples view's `interval_s` for sessions recorded without
//!   it: a streamed `LAG` took ~58 ns a row on a busy fleet). O(n).
//! - `next_time_where(flag, t)`: `t` of the nearest row at or after this one where `flag`
//!   holds (a reverse scan instead of a `MIN` over an unbounded following frame). O(n).
//! - `condition_change(active)`: `'start'` where `active` becomes true, `'end'` where it
//!   becomes false, against the previous non-NULL value (a condition is off before the
//!   first sample). O(n).
//! - `episode_id(active, t, merge_gap_s, min_s)`: episodes of a condition. Islands are
//!   maximal runs of true rows; an island ends at the next row's `t` (the first sample
//!   where the condition is no longer on). Islands less than `merge_gap_s` apart merge;
//!   an episode is kept when it lasts at least `min_s`. Rows of kept episodes get the
//!   episode's number, other rows NULL. O(n).
//!
//! All expect `ORDER BY` on the time column in their `OVER` clause.

use std::borrow::Cow;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBufferBuilder, Float64Array, Float64Builder,
    Int64Array, StringArray, StringBuilder, UInt32Array,
};
use datafusion::arrow::buffer::{BooleanBuffer, NullBuffer};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type, Int64Type, Schema};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err};
use datafusion::logical_expr::function::{
    ExpressionArgs, PartitionEvaluatorArgs, WindowUDFFieldArgs,
};
use datafusion::logical_expr::{
    ColumnarValue, PartitionEvaluator, Signature, Volatility, WindowUDF, WindowUDFImpl,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::utils::collect_columns;

/// The window functions to register.
pub fn all() -> Vec<WindowUDF> {
    vec![
        WindowUDF::new_from_impl(SimpleWindow::rolling_median()),
        WindowUDF::new_from_impl(Debounce::new()),
        WindowUDF::new_from_impl(SimpleWindow::rearm()),
        WindowUDF::new_from_impl(SimpleWindow::rearm_held()),
        WindowUDF::new_from_impl(SimpleWindow::condition_change()),
        WindowUDF::new_from_impl(SimpleWindow::previous_value()),
        WindowUDF::new_from_impl(SimpleWindow::unchanged()),
        WindowUDF::new_from_impl(SimpleWindow::seconds_since_previous()),
        WindowUDF::new_from_impl(SimpleWindow::next_time_where()),
        WindowUDF::new_from_impl(SimpleWindow::episode_id()),
        WindowUDF::new_from_impl(SimpleWindow::sustained()),
        WindowUDF::new_from_impl(SimpleWindow::rolling_sum()),
        WindowUDF::new_from_impl(SimpleWindow::hold_while()),
    ]
}

/// A window function defined by a name, argument types, a result type and a kernel
/// over the whole (ordered) partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SimpleWindow {
    name: &'static str,
    signature: Signature,
    output: DataType,
    /// Leading arguments that are columns; the rest are constants (windows, durations).
    columns: usize,
}

impl SimpleWindow {
    fn new(name: &'static str, args: Vec<DataType>, output: DataType) -> Self {
        Self {
            name,
            // Each takes a value or flag and its time (previous_value and
            // condition_change: the value alone), then constants.
            columns: args.len().min(2),
            signature: Signature::exact(args, Volatility::Immutable),
            output,
        }
    }
    fn rolling_median() -> Self {
        let args = vec![DataType::Float64, DataType::Float64, DataType::Float64];
        Self::new("rolling_median", args, DataType::Float64)
    }
    fn rearm() -> Self {
        let args = vec![DataType::Boolean, DataType::Float64, DataType::Float64];
        Self::new("rearm", args, DataType::Boolean)
    }
    fn rearm_held() -> Self {
        let args = vec![
            DataType::Boolean,
            DataType::Boolean,
            DataType::Float64,
            DataType::Float64,
        ];
        // (flag, held, t): three columns, then the constant.
        Self {
            columns: 3,
            ..Self::new("rearm_held", args, DataType::Boolean)
        }
    }
    fn sustained() -> Self {
        let args = vec![
            DataType::Boolean,
            DataType::Float64,
            DataType::Float64,
            DataType::Float64,
        ];
        Self::new("sustained", args, DataType::Boolean)
    }
    fn rolling_sum() -> Self {
        let args = vec![DataType::Float64, DataType::Float64, DataType::Float64];
        Self::new("rolling_sum", args, DataType::Float64)
    }
    fn hold_while() -> Self {
        let args = vec![DataType::Float64, DataType::Boolean];
        Self::new("hold_while", args, DataType::Float64)
    }
    fn previous_value() -> Self {
        Self::new("previous_value", vec![DataType::Utf8], DataType::Utf8)
    }
    fn unchanged() -> Self {
        // Gauges are integers (running, waiting) or floats (KV usage): both compared as
        // floats, exactly (an integer gauge is far below 2^53).
        Self {
            signature: Signature::uniform(1, vec![DataType::Float64], Volatility::Immutable),
            ..Self::new("unchanged", vec![DataType::Float64], DataType::Boolean)
        }
    }
    fn seconds_since_previous() -> Self {
        Self::new(
            "seconds_since_previous",
            vec![DataType::Int64],
            DataType::Float64,
        )
    }
    fn next_time_where() -> Self {
        let args = vec![DataType::Boolean, DataType::Float64];
        Self::new("next_time_where", args, DataType::Float64)
    }
    fn condition_change() -> Self {
        Self::new("condition_change", vec![DataType::Boolean], DataType::Utf8)
    }
    fn episode_id() -> Self {
        let args = vec![
            DataType::Boolean,
            DataType::Float64,
            DataType::Float64,
            DataType::Float64,
        ];
        Self::new("episode_id", args, DataType::Int64)
    }
}

impl WindowUDFImpl for SimpleWindow {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn expressions(&self, args: ExpressionArgs) -> Vec<Arc<dyn PhysicalExpr>> {
        column_arguments(&args, self.columns)
    }
    fn partition_evaluator(
        &self,
        args: PartitionEvaluatorArgs,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        Ok(Box::new(SimpleEval {
            name: self.name,
            constants: constants(self.name, &args, self.columns)?,
        }))
    }
    fn field(&self, args: WindowUDFFieldArgs) -> Result<FieldRef> {
        Ok(Arc::new(Field::new(args.name(), self.output.clone(), true)))
    }
}

/// The column arguments of a call: what DataFusion evaluates for each partition. The
/// constants after them are read once by [`constants`]; passed on, each would be
/// expanded into a column of the partition's length for every call.
fn column_arguments(args: &ExpressionArgs, columns: usize) -> Vec<Arc<dyn PhysicalExpr>> {
    let exprs = args.input_exprs();
    exprs.get(..columns).unwrap_or(exprs).to_vec()
}

/// The constant arguments of a call (those after its `columns` column arguments) as
/// floats, read when the plan is made; an argument that reads a column is an error.
fn constants(name: &str, args: &PartitionEvaluatorArgs, columns: usize) -> Result<Vec<f64>> {
    let one_row = RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        vec![],
        &RecordBatchOptions::new().with_row_count(Some(1)),
    )?;
    let mut out = Vec::new();
    for (k, expr) in args.input_exprs().iter().enumerate().skip(columns) {
        let value = if collect_columns(expr).is_empty() {
            match expr.evaluate(&one_row)? {
                ColumnarValue::Scalar(s) => s.cast_to(&DataType::Float64)?,
                ColumnarValue::Array(a) => ScalarValue::try_from_array(&a, 0)?,
            }
        } else {
            ScalarValue::Null
        };
        match value {
            ScalarValue::Float64(Some(v)) => out.push(v),
            _ => return exec_err!("{name}: argument {} must be a constant number", k + 1),
        }
    }
    Ok(out)
}

#[derive(Debug)]
struct SimpleEval {
    name: &'static str,
    /// The call's constant arguments, in order.
    constants: Vec<f64>,
}

impl SimpleEval {
    fn constant(&self, k: usize) -> Result<f64> {
        match self.constants.get(k) {
            Some(v) => Ok(*v),
            None => exec_err!("{}: missing constant argument", self.name),
        }
    }
}

impl PartitionEvaluator for SimpleEval {
    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> Result<ArrayRef> {
        if matches!(self.name, "rolling_median" | "rolling_sum") {
            // (value, t, window_s): a trailing time window over a float series.
            let (Some(v), Some(t)) = (
                values
                    .first()
                    .and_then(|a| a.as_primitive_opt::<Float64Type>()),
                values
                    .get(1)
                    .and_then(|a| a.as_primitive_opt::<Float64Type>()),
            ) else {
                return exec_err!(
                    "{}(value, t, window_s) expects Float64 arguments",
                    self.name
                );
            };
            let window = self.constant(0)?;
            if self.name == "rolling_median" {
                return Ok(Arc::new(rolling_median(v, t, window, num_rows)));
            }
            let t = times(t);
            return Ok(Arc::new(rolling_sum(&known_or_zero(v), &t, window)));
        }
        if self.name == "hold_while" {
            let (Some(v), Some(keep)) = (
                values
                    .first()
                    .and_then(|a| a.as_primitive_opt::<Float64Type>()),
                values.get(1).and_then(|a| a.as_boolean_opt()),
            ) else {
                return exec_err!("hold_while(value, keep) expects Float64 and Boolean");
            };
            return Ok(Arc::new(hold_while(v, keep, num_rows)));
        }
        if self.name == "unchanged" {
            let Some(v) = values
                .first()
                .and_then(|a| a.as_primitive_opt::<Float64Type>())
            else {
                return exec_err!("unchanged expects a Float64 argument");
            };
            return Ok(Arc::new(unchanged(v, num_rows)));
        }
        if self.name == "seconds_since_previous" {
            let Some(ts) = values
                .first()
                .and_then(|a| a.as_primitive_opt::<Int64Type>())
            else {
                return exec_err!("seconds_since_previous expects an Int64 argument");
            };
            return Ok(Arc::new(seconds_since_previous(ts, num_rows)));
        }
        if self.name == "previous_value" {
            let Some(v) = values.first().and_then(|a| a.as_string_opt::<i32>()) else {
                return exec_err!("previous_value expects a Utf8 argument");
            };
            // The rows to copy from, gathered in one `take` (no string built per row).
            let mut last: Option<u32> = None;
            let rows = u32::try_from(num_rows.min(v.len()))
                .map_err(|_| DataFusionError::Execution("partition over 4 G rows".into()))?;
            let from: UInt32Array = (0..rows)
                .map(|i| {
                    let prev = last;
                    if v.is_valid(i as usize) {
                        last = Some(i);
                    }
                    prev
                })
                .collect();
            return Ok(take(v, &from, None)?);
        }
        let Some(flags) = values.first().and_then(|a| a.as_boolean_opt()) else {
            return exec_err!("{}: the first argument must be a boolean", self.name);
        };
        let flag = |i: usize| flags.is_valid(i).then(|| flags.value(i));
        match self.name {
            "rearm" | "rearm_held" => {
                // rearm(flag, t, quiet_s); rearm_held(flag, held, t, quiet_s)
                let held = match self.name {
                    "rearm_held" => match values.get(1).and_then(|a| a.as_boolean_opt()) {
                        Some(h) => Some(h),
                        None => return exec_err!("rearm_held: held must be a boolean"),
                    },
                    _ => None,
                };
                let Some(t) = values
                    .get(1 + usize::from(held.is_some()))
                    .and_then(|a| a.as_primitive_opt::<Float64Type>())
                else {
                    return exec_err!("{}: t must be a float", self.name);
                };
                let quiet = self.constant(0)?;
                let t = times(t);
                let held = |i: usize| held.is_some_and(|h| h.is_valid(i) && h.value(i));
                let rows = (0..num_rows).map(|i| (flag(i), held(i)));
                Ok(Arc::new(rearm(rows, &t, quiet)))
            }
            "sustained" => {
                let Some(t) = values
                    .get(1)
                    .and_then(|a| a.as_primitive_opt::<Float64Type>())
                else {
                    return exec_err!("sustained: t must be a float");
                };
                let min_s = self.constant(0)?;
                let min_rows = self.constant(1)?.max(1.0) as usize;
                let active: Vec<Option<bool>> = (0..num_rows).map(flag).collect();
                let t = times(t);
                Ok(Arc::new(BooleanArray::from(sustained(
                    &active, &t, min_s, min_rows,
                ))))
            }
            "condition_change" => Ok(Arc::new(condition_change((0..num_rows).map(flag)))),
            "next_time_where" => {
                let Some(t) = values
                    .get(1)
                    .and_then(|a| a.as_primitive_opt::<Float64Type>())
                else {
                    return exec_err!("next_time_where: t must be a float");
                };
                // Backwards: the nearest row at or after i where the flag holds (NaN
                // while there is none, turned into NULL below).
                let mut out = vec![f64::NAN; num_rows];
                let mut next = f64::NAN;
                for (i, slot) in out.iter_mut().enumerate().rev() {
                    if flag(i) == Some(true) && t.is_valid(i) {
                        next = t.value(i);
                    }
                    *slot = next;
                }
                Ok(Arc::new(nan_as_null(out)))
            }
            "episode_id" => {
                let Some(t) = values
                    .get(1)
                    .and_then(|a| a.as_primitive_opt::<Float64Type>())
                else {
                    return exec_err!("episode_id: t must be a float");
                };
                let gap = self.constant(0)?;
                let min = self.constant(1)?;
                let active: Vec<Option<bool>> = (0..num_rows).map(flag).collect();
                let t = times(t);
                Ok(Arc::new(episode_id(&active, &t, gap, min)))
            }
            other => exec_err!("unknown window function {other}"),
        }
    }
}

/// The kernel behind `seconds_since_previous`: `(ts[i] - ts[i - 1]) / 1e6`, exactly as
/// `CAST(ts - LAG(ts) AS DOUBLE) / 1e6` reads it; NULL on the first row and where either
/// is NULL.
pub fn seconds_since_previous(ts: &Int64Array, n: usize) -> Float64Array {
    let n = n.min(ts.len());
    let x = ts.values();
    let values: Vec<f64> = (0..n)
        .map(|i| match i {
            0 => 0.0,
            _ => x[i].wrapping_sub(x[i - 1]) as f64 / 1e6,
        })
        .collect();
    let valid = BooleanBuffer::collect_bool(n, |i| i > 0 && ts.is_valid(i) && ts.is_valid(i - 1));
    Float64Array::new(values.into(), Some(NullBuffer::new(valid)))
}

/// The kernel behind `unchanged`: `v[i] == v[i - 1]`, NULL where either is NULL (the
/// first row has none before it).
pub fn unchanged(v: &Float64Array, n: usize) -> BooleanArray {
    let n = n.min(v.len());
    let x = v.values();
    let same = BooleanBuffer::collect_bool(n, |i| i > 0 && x[i] == x[i - 1]);
    let valid = BooleanBuffer::collect_bool(n, |i| i > 0 && v.is_valid(i) && v.is_valid(i - 1));
    BooleanArray::new(same, Some(NullBuffer::new(valid)))
}

/// The kernel behind `hold_while`, public for tests: `v`, or where it is NULL (or NaN)
/// and `keep` is true, the value held on the row before.
pub fn hold_while(v: &Float64Array, keep: &BooleanArray, n: usize) -> Float64Array {
    let mut held: Option<f64> = None;
    (0..n.min(v.len()).min(keep.len()))
        .map(|i| {
            let value = (v.is_valid(i) && !v.value(i).is_nan()).then(|| v.value(i));
            held = match value {
                Some(x) => Some(x),
                None if keep.is_valid(i) && keep.value(i) => held,
                None => None,
            };
            held
        })
        .collect()
}

/// The times of a `t` column as the kernels read them: NaN where unknown (NULL or not
/// finite). The column itself when every time is known, as it nearly always is.
fn times(t: &Float64Array) -> Cow<'_, [f64]> {
    if t.null_count() == 0 && t.values().iter().all(|x| x.is_finite()) {
        return Cow::Borrowed(t.values());
    }
    Cow::Owned(
        t.iter()
            .map(|x| x.filter(|x| x.is_finite()).unwrap_or(f64::NAN))
            .collect(),
    )
}

/// Row `k`'s time, if known.
fn at(t: &[f64], k: usize) -> Option<f64> {
    t.get(k).copied().filter(|x| !x.is_nan())
}

/// The values of a column with NULL and non-finite values as 0 (what a sum counts).
fn known_or_zero(v: &Float64Array) -> Cow<'_, [f64]> {
    if v.null_count() == 0 && v.values().iter().all(|x| x.is_finite()) {
        return Cow::Borrowed(v.values());
    }
    Cow::Owned(
        v.iter()
            .map(|x| x.filter(|x| x.is_finite()).unwrap_or(0.0))
            .collect(),
    )
}

/// A float column with NaN as NULL.
fn nan_as_null(v: Vec<f64>) -> Float64Array {
    let valid = NullBuffer::from_iter(v.iter().map(|x| !x.is_nan()));
    Float64Array::new(v.into(), Some(valid).filter(|n| n.null_count() > 0))
}

/// The kernel behind `rearm` and `rearm_held`, public for tests: over rows of (flag,
/// held), fires where the flag holds and held on no row in the `quiet_s` seconds
/// before, where rows on which `held` holds while the event is still going (less than
/// `quiet_s` quiet since the flag last held) count as the flag's (`rearm`: `held` never
/// holds).
pub fn rearm(
    rows: impl Iterator<Item = (Option<bool>, bool)>,
    t: &[f64],
    quiet_s: f64,
) -> BooleanArray {
    // Times of the last row where the flag (or `held`) held and of the row before this
    // one: the rows between them (each standing for the interval since the one before
    // it) are the quiet seen since. Two flagged rows in a row saw none, however far
    // apart: at 15 s scrapes one burst spans consecutive samples and must fire once, as
    // at 1 s.
    let mut last: Option<f64> = None;
    let mut prev: Option<f64> = None;
    rows.enumerate()
        .map(|(i, (f, held))| {
            let on = f == Some(true);
            let now = at(t, i);
            let quiet = match (last, prev) {
                (None, _) => true,
                (Some(l), Some(p)) => p - l >= quiet_s,
                (Some(_), None) => false,
            };
            // `held` continues an event (a row that is not quiet extends the chain since
            // the flag last held); it never starts one, so the flag still fires where it
            // first holds, whether or not `held` came first.
            if (on || (held && !quiet))
                && let Some(n) = now
            {
                last = Some(n);
            }
            if now.is_some() {
                prev = now;
            }
            on && quiet
        })
        .collect::<BooleanBuffer>()
        .into()
}

/// Seconds covered by the run of rows `[i, j)`: each row stands for the interval since
/// the row before it. The first run of a partition has no row before; it counts its own
/// mean spacing per row.
fn run_seconds(t: &[f64], i: usize, j: usize) -> f64 {
    let at = |k: usize| at(t, k);
    let Some(last) = j.checked_sub(1).and_then(at) else {
        return 0.0;
    };
    if let Some(before) = i.checked_sub(1).and_then(at) {
        return (last - before).max(0.0);
    }
    match at(i) {
        Some(first) if j - i > 1 => (last - first) * (j - i) as f64 / (j - i - 1) as f64,
        _ => 0.0,
    }
}

/// The kernel behind `sustained`, public for tests.
pub fn sustained(
    active: &[Option<bool>],
    t: &[f64],
    min_s: f64,
    min_rows: usize,
) -> Vec<Option<bool>> {
    let n = active.len();
    let mut out: Vec<Option<bool>> = active.iter().map(|a| a.map(|_| false)).collect();
    let mut i = 0;
    while i < n {
        if active.get(i).copied().flatten() != Some(true) {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < n && active.get(j).copied().flatten() == Some(true) {
            j += 1;
        }
        if j - i >= min_rows && run_seconds(t, i, j) >= min_s {
            for slot in out.iter_mut().take(j).skip(i) {
                *slot = Some(true);
            }
        }
        i = j;
    }
    out
}

/// The kernel behind `rolling_sum`, public for tests: the sum over rows with `t` in
/// `(t_i - window, t_i]` of `v` (unknown values given as 0; a row with unknown `t`, NaN,
/// gets NULL).
pub fn rolling_sum(v: &[f64], t: &[f64], window: f64) -> Float64Array {
    let n = v.len().min(t.len());
    let mut out = Vec::with_capacity(n);
    let (mut lo, mut sum) = (0usize, 0.0f64);
    let val = |k: usize| v.get(k).copied().unwrap_or(0.0);
    for i in 0..n {
        sum += val(i);
        let Some(ti) = at(t, i) else {
            out.push(f64::NAN);
            continue;
        };
        while lo < i && at(t, lo).is_none_or(|tl| tl <= ti - window) {
            sum -= val(lo);
            lo += 1;
        }
        out.push(sum);
    }
    nan_as_null(out)
}

/// The kernel behind `condition_change`, public for tests.
pub fn condition_change(active: impl Iterator<Item = Option<bool>>) -> StringArray {
    // Sized up front: most rows get no label, and growing the buffers was most of the cost.
    let rows = active.size_hint().0;
    let mut out = StringBuilder::with_capacity(rows, rows / 8);
    let mut prev = false;
    for a in active {
        let Some(a) = a else {
            out.append_null();
            continue;
        };
        out.append_option(match (prev, a) {
            (false, true) => Some("start"),
            (true, false) => Some("end"),
            _ => None,
        });
        prev = a;
    }
    out.finish()
}

/// The kernel behind `episode_id`, public for tests and property tests.
pub fn episode_id(active: &[Option<bool>], t: &[f64], gap: f64, min: f64) -> Int64Array {
    // Islands as (first row, last row, start t, end t).
    let mut islands: Vec<(usize, usize, f64, f64)> = Vec::new();
    let mut i = 0;
    let n = active.len().min(t.len());
    while i < n {
        if active.get(i).copied().flatten() != Some(true) {
            i += 1;
            continue;
        }
        let mut j = i;
        while j + 1 < n && active.get(j + 1).copied().flatten() == Some(true) {
            j += 1;
        }
        let tt = |k: usize| at(t, k);
        // The island's times are the min over its rows and the max of each row's next t.
        let start = (i..=j).filter_map(tt).fold(f64::INFINITY, f64::min);
        let end = (i..=j)
            .filter_map(|k| tt(k + 1).filter(|_| k + 1 < n).or_else(|| tt(k)))
            .fold(f64::NEG_INFINITY, f64::max);
        if start.is_finite() && end.is_finite() {
            islands.push((i, j, start, end));
        }
        i = j + 1;
    }
    let mut ids = vec![0i64; n];
    let mut kept = BooleanBufferBuilder::new(n);
    kept.append_n(n, false);
    let mut id = 0i64;
    let mut k = 0;
    while k < islands.len() {
        // Merge the following islands that start within `gap` of the previous one's end.
        let mut m = k;
        while let (Some(prev), Some(next)) = (islands.get(m), islands.get(m + 1)) {
            if next.2 - prev.3 > gap {
                break;
            }
            m += 1;
        }
        let group = islands.get(k..=m).unwrap_or_default();
        let start = group.iter().map(|g| g.2).fold(f64::INFINITY, f64::min);
        let end = group.iter().map(|g| g.3).fold(f64::NEG_INFINITY, f64::max);
        if end - start >= min {
            id += 1;
            for g in group {
                if let Some(rows) = ids.get_mut(g.0..=g.1) {
                    rows.fill(id);
                    for r in g.0..=g.1 {
                        kept.set_bit(r, true);
                    }
                }
            }
        }
        k = m + 1;
    }
    Int64Array::new(ids.into(), Some(NullBuffer::new(kept.finish())))
}

/// The kernel behind `rolling_median`, public for benches and tests.
///
/// The window is a sorted `Vec`. At 1 Hz with a 60 s window one row enters and one
/// leaves per step; such a pair is applied as one move of the elements between the two
/// positions (usually a few, since metrics change slowly) instead of a remove and an
/// insert that each shift the whole tail.
pub fn rolling_median(v: &Float64Array, t: &Float64Array, window: f64, n: usize) -> Float64Array {
    let mut sorted: Vec<f64> = Vec::new();
    let mut out = Float64Builder::with_capacity(n);
    let value = |j: usize| (v.is_valid(j) && !v.value(j).is_nan()).then(|| v.value(j));
    let time = |j: usize| t.is_valid(j).then(|| t.value(j));
    // Rows [lo, i) are in the window of row i; rows [lo, hi) are in `sorted`.
    let (mut lo, mut hi) = (0usize, 0usize);
    let rows = n.min(v.len()).min(t.len());
    for i in 0..rows {
        let Some(ti) = time(i) else {
            out.append_null();
            continue;
        };
        // The window starts at the first row (from the previous start) whose time is
        // known and within `window` of `ti`.
        let mut start = lo;
        while start < i && time(start).is_none_or(|ts| ts < ti - window) {
            start += 1;
        }
        // Rows [lo, min(start, hi)) leave; rows [max(start, hi), i) enter; rows between
        // `hi` and `start` were never in the window.
        let mut leaving = (lo..start.min(hi)).filter_map(value);
        let mut entering = (start.max(hi)..i).filter_map(value);
        loop {
            match (leaving.next(), entering.next()) {
                (Some(old), Some(new)) => sorted_replace(&mut sorted, old, new),
                (Some(old), None) => {
                    sorted_remove(&mut sorted, old);
                    leaving.for_each(|x| sorted_remove(&mut sorted, x));
                    break;
                }
                (None, Some(new)) => {
                    sorted_insert(&mut sorted, new);
                    entering.for_each(|x| sorted_insert(&mut sorted, x));
                    break;
                }
                (None, None) => break,
            }
        }
        (lo, hi) = (start, i);
        out.append_option(median_of_sorted(&sorted));
    }
    out.append_nulls(n - rows);
    out.finish()
}

/// How many elements are below `x`: the insert position in a sorted slice. A counting
/// loop the compiler vectorizes beats a binary search's unpredictable branches on
/// windows of tens to hundreds of values.
fn count_below(sorted: &[f64], x: f64) -> usize {
    sorted.iter().map(|y| usize::from(*y < x)).sum()
}

fn sorted_insert(sorted: &mut Vec<f64>, x: f64) {
    let pos = count_below(sorted, x);
    sorted.insert(pos, x);
}

fn sorted_remove(sorted: &mut Vec<f64>, x: f64) {
    let pos = count_below(sorted, x);
    if sorted.get(pos) == Some(&x) {
        sorted.remove(pos);
    }
}

/// Replaces one `old` by `new`, moving only the elements between their positions.
fn sorted_replace(sorted: &mut [f64], old: f64, new: f64) {
    if old.to_bits() == new.to_bits() {
        // A gauge that held its value (running requests, a bucket-bound quantile):
        // nothing moves (`cargo bench --bench analyze -- kernels`, stepped: −14 %).
        return;
    }
    let p = count_below(sorted, old);
    if sorted.get(p) != Some(&old) {
        return; // not in the window (cannot happen: `old` entered earlier)
    }
    if new >= old {
        // Elements after p that are below `new` move one step left; `new` follows them.
        // Below `new` are the p elements before `old`, `old` itself when smaller, and those.
        let q = count_below(sorted, new) - usize::from(old < new);
        if let Some(span) = sorted.get_mut(p..=q) {
            span.copy_within(1.., 0);
            if let Some(last) = span.last_mut() {
                *last = new;
            }
        }
    } else {
        // Elements before p that are above `new` move one step right; `new` precedes them.
        let q = sorted
            .get(..p)
            .map_or(0, |head| head.iter().map(|y| usize::from(*y <= new)).sum());
        if let Some(span) = sorted.get_mut(q..=p) {
            span.copy_within(..span.len() - 1, 1);
            if let Some(first) = span.first_mut() {
                *first = new;
            }
        }
    }
}

fn median_of_sorted(sorted: &[f64]) -> Option<f64> {
    let m = sorted.len();
    match m {
        0 => None,
        _ if m % 2 == 1 => sorted.get(m / 2).copied(),
        _ => match (sorted.get(m / 2 - 1), sorted.get(m / 2)) {
            (Some(a), Some(b)) => Some((a + b) / 2.0),
            _ => None,
        },
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Debounce {
    signature: Signature,
}

impl Debounce {
    fn new() -> Self {
        Self {
            // Labels (phases) or booleans (conditions: no strings to build and compare);
            // see `coerce_types`.
            signature: Signature::user_defined(Volatility::Immutable),
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
    fn expressions(&self, args: ExpressionArgs) -> Vec<Arc<dyn PhysicalExpr>> {
        column_arguments(&args, 2)
    }
    fn partition_evaluator(
        &self,
        args: PartitionEvaluatorArgs,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        let c = constants("debounce", &args, 2)?;
        let (Some(&seconds), Some(&rows)) = (c.first(), c.get(1)) else {
            return exec_err!("debounce(label, t, min_s, min_samples) takes four arguments");
        };
        Ok(Box::new(DebounceEval {
            min: Stable {
                seconds,
                rows: rows.max(1.0) as usize,
            },
        }))
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let rest = [DataType::Float64, DataType::Float64, DataType::Float64];
        let label = match arg_types.first() {
            Some(DataType::Boolean) if arg_types.len() == 4 => DataType::Boolean,
            Some(_) if arg_types.len() == 4 => DataType::Utf8,
            _ => return exec_err!("debounce(label, t, min_s, min_samples) takes four arguments"),
        };
        Ok(std::iter::once(label).chain(rest).collect())
    }
    fn field(&self, args: WindowUDFFieldArgs) -> Result<FieldRef> {
        let ty = match args.get_input_field(0).map(|f| f.data_type().clone()) {
            Some(DataType::Boolean) => DataType::Boolean,
            _ => DataType::Utf8,
        };
        Ok(Arc::new(Field::new(args.name(), ty, true)))
    }
}

#[derive(Debug)]
struct DebounceEval {
    min: Stable,
}

impl PartitionEvaluator for DebounceEval {
    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> Result<ArrayRef> {
        let Some(t) = values
            .get(1)
            .and_then(|a| a.as_primitive_opt::<Float64Type>())
        else {
            return exec_err!("debounce: t must be a float");
        };
        let t = times(t);
        let min = self.min;
        if let Some(flags) = values.first().and_then(|a| a.as_boolean_opt()) {
            let raw: Vec<Option<bool>> = (0..num_rows)
                .map(|i| flags.is_valid(i).then(|| flags.value(i)))
                .collect();
            return Ok(Arc::new(BooleanArray::from(debounce(&raw, &t, min))));
        }
        let Some(labels) = values.first().and_then(|a| a.as_string_opt::<i32>()) else {
            return exec_err!(
                "debounce(label, t, min_s, min_samples) expects a Utf8 or Boolean label"
            );
        };
        // Each label as the first row holding it (a handful of phases per partition), so
        // the kernel compares numbers and the result is gathered in one `take`.
        let rows = num_rows.min(labels.len());
        let mut first: Vec<u32> = Vec::new();
        let mut raw: Vec<Option<u32>> = Vec::with_capacity(rows);
        for i in 0..rows {
            let code = if labels.is_valid(i) {
                let label = labels.value(i);
                match raw.last().copied().flatten() {
                    Some(c) if labels.value(c as usize) == label => Some(c),
                    _ => Some(
                        match first.iter().find(|&&f| labels.value(f as usize) == label) {
                            Some(&f) => f,
                            None => {
                                let f = u32::try_from(i).map_err(|_| {
                                    DataFusionError::Execution("partition over 4 G rows".into())
                                })?;
                                first.push(f);
                                f
                            }
                        },
                    ),
                }
            } else {
                None
            };
            raw.push(code);
        }
        let from = UInt32Array::from(debounce(&raw, &t, min));
        Ok(take(labels, &from, None)?)
    }
}

/// When a run of one label is stable: at least `seconds` long and `rows` rows.
#[derive(Debug, Clone, Copy)]
pub struct Stable {
    pub seconds: f64,
    pub rows: usize,
}

/// The kernel behind `debounce`, public for tests.
///
/// A run of one label at least `min` long is stable and replaces the previous stable
/// label from its first row. Shorter runs take the previous stable label, except when
/// they flicker among other labels: consecutive short runs that never show the stable
/// label and together last at least `min` prove the stable label no longer holds (a KV
/// cache pinned near `kv_saturated_pct` alternates SATURATED and QUEUE_PRESSURE every
/// second or two while requests come and go; neither holds `min` alone, yet the server
/// is not HEALTHY). Such a stretch takes the label that held longest in it (ties: the
/// first), and that label becomes the stable one. Two labels (conditions) never form a
/// stretch: a short run of the other value is followed by the stable one.
pub fn debounce<T: Copy + PartialEq>(raw: &[Option<T>], t: &[f64], min: Stable) -> Vec<Option<T>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut stable: Option<T> = None;
    // Consecutive short runs whose label is not the stable one, not yet emitted.
    let mut stretch: Vec<(T, usize, usize)> = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        let label = raw.get(i).copied().flatten();
        let mut j = i;
        while j < raw.len() && raw.get(j).copied().flatten() == label {
            j += 1;
        }
        let len = j - i;
        match label {
            Some(l) if len >= min.rows && run_seconds(t, i, j) >= min.seconds => {
                flush_stretch(&mut stretch, &mut out, &mut stable, t, min);
                stable = Some(l);
                out.extend(std::iter::repeat_n(Some(l), len));
            }
            Some(l) => {
                // A short run of the stable label ends the stretch before it, which may
                // make another label the stable one.
                if stable == Some(l) {
                    flush_stretch(&mut stretch, &mut out, &mut stable, t, min);
                }
                if stable == Some(l) {
                    out.extend(std::iter::repeat_n(Some(l), len));
                } else {
                    stretch.push((l, i, j));
                }
            }
            // A gap in the data: nothing known, and nothing carried across it.
            None => {
                flush_stretch(&mut stretch, &mut out, &mut stable, t, min);
                stable = None;
                out.extend(std::iter::repeat_n(None, len));
            }
        }
        i = j;
    }
    flush_stretch(&mut stretch, &mut out, &mut stable, t, min);
    out
}

/// Emits a stretch of short runs (label, rows `[from, to)`) and empties it: as its
/// longest-held label when it lasted `min` (which becomes the stable label), else each
/// run as the stable label (its own before any).
fn flush_stretch<T: Copy + PartialEq>(
    runs: &mut Vec<(T, usize, usize)>,
    out: &mut Vec<Option<T>>,
    stable: &mut Option<T>,
    t: &[f64],
    min: Stable,
) {
    let (Some(&(_, from, _)), Some(&(_, _, to))) = (runs.first(), runs.last()) else {
        return;
    };
    if to - from >= min.rows && run_seconds(t, from, to) >= min.seconds {
        // Each label's seconds, in order of first appearance (a handful of labels).
        let mut seconds: Vec<(T, f64)> = Vec::new();
        for &(l, i, j) in runs.iter() {
            let s = run_seconds(t, i, j);
            match seconds.iter_mut().find(|(x, _)| *x == l) {
                Some((_, total)) => *total += s,
                None => seconds.push((l, s)),
            }
        }
        let longest = seconds
            .iter()
            .fold(None::<(T, f64)>, |best, &(l, s)| match best {
                Some((_, b)) if b >= s => best,
                _ => Some((l, s)),
            });
        if let Some((l, _)) = longest {
            *stable = Some(l);
            out.extend(std::iter::repeat_n(Some(l), to - from));
        }
    } else {
        for &(l, i, j) in runs.iter() {
            out.extend(std::iter::repeat_n(Some(stable.unwrap_or(l)), j - i));
        }
    }
    runs.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_compares_each_row_with_the_one_before() {
        let v = Float64Array::from(vec![
            Some(3.0),
            Some(3.0),
            Some(4.0),
            None,
            Some(4.0),
            Some(4.0),
        ]);
        let got: Vec<Option<bool>> = unchanged(&v, 6).iter().collect();
        assert_eq!(got, [None, Some(true), Some(false), None, None, Some(true)]);
        assert_eq!(unchanged(&v, 0).len(), 0);
    }

    #[test]
    fn seconds_since_previous_is_the_microsecond_difference_in_seconds() {
        let ts = Int64Array::from(vec![
            Some(1_800_000_000_000_000),
            Some(1_800_000_000_500_000),
            Some(1_800_000_015_500_001),
            None,
            Some(1_800_000_020_000_000),
            Some(1_800_000_020_000_000),
        ]);
        let got: Vec<Option<f64>> = seconds_since_previous(&ts, 6).iter().collect();
        assert_eq!(
            got,
            [None, Some(0.5), Some(15.000001), None, None, Some(0.0)]
        );
        assert_eq!(seconds_since_previous(&ts, 0).len(), 0);
    }

    #[test]
    fn hold_while_carries_the_last_value_only_while_keep_holds() {
        let v = Float64Array::from(vec![
            Some(3.0),
            None,
            Some(f64::NAN),
            Some(1.0),
            None,
            None,
            None,
        ]);
        let keep = BooleanArray::from(vec![
            Some(true),
            Some(true),
            Some(true),
            Some(false),
            Some(true),
            None,
            Some(true),
        ]);
        let out: Vec<Option<f64>> = hold_while(&v, &keep, 7).iter().collect();
        // Held over the rows that observed nothing while `keep` holds; a row that
        // observed nothing without `keep` (here NULL) ends the hold.
        assert_eq!(
            out,
            vec![
                Some(3.0),
                Some(3.0),
                Some(3.0),
                Some(1.0),
                Some(1.0),
                None,
                None
            ]
        );
    }

    #[test]
    fn debounce_absorbs_short_runs() {
        let raw: Vec<Option<&str>> = ["A", "A", "A", "B", "A", "B", "B", "B"]
            .iter()
            .map(|s| Some(*s))
            .collect();
        let t: Vec<f64> = (0..8).map(f64::from).collect();
        let two = Stable {
            seconds: 2.0,
            rows: 1,
        };
        let out = debounce(&raw, &t, two);
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
        assert_eq!(
            debounce(&raw, &t, two),
            vec![Some("B"), Some("A"), Some("A")]
        );
        assert_eq!(debounce(&[None, Some("A")], &t, two), vec![None, Some("A")]);
        // Nothing is carried across a gap: the short run after it keeps its own label.
        let raw = vec![Some("A"), Some("A"), Some("A"), None, Some("B")];
        assert_eq!(
            debounce(&raw, &t, two),
            vec![Some("A"), Some("A"), Some("A"), None, Some("B")]
        );
    }

    #[test]
    fn debounce_counts_seconds_not_samples() {
        // The same 2 s blip of B inside A, at 0.5 s and at 2 s intervals, with a 3 s
        // minimum: absorbed at both; a 4 s run of B is kept at both.
        for step in [0.5, 2.0] {
            let n = (20.0 / step) as usize;
            let t: Vec<f64> = (0..n).map(|i| i as f64 * step).collect();
            let label = |lo: f64, hi: f64| -> Vec<Option<&str>> {
                t.iter()
                    .map(|x| Some(if *x >= lo && *x < hi { "B" } else { "A" }))
                    .collect()
            };
            let min = Stable {
                seconds: 3.0,
                rows: 1,
            };
            let blip = debounce(&label(6.0, 8.0), &t, min);
            assert!(
                blip.iter().all(|l| *l == Some("A")),
                "step {step}: {blip:?}"
            );
            let run = debounce(&label(6.0, 10.0), &t, min);
            let b_time = run.iter().filter(|l| **l == Some("B")).count() as f64 * step;
            assert_eq!(b_time, 4.0, "step {step}");
        }
        // The floor in rows: one 5 s sample is not enough when two rows are required.
        let t: Vec<f64> = (0..5).map(|i| f64::from(i) * 5.0).collect();
        let raw = vec![Some("A"), Some("A"), Some("B"), Some("A"), Some("A")];
        let out = debounce(
            &raw,
            &t,
            Stable {
                seconds: 3.0,
                rows: 2,
            },
        );
        assert!(out.iter().all(|l| *l == Some("A")));
    }

    #[test]
    fn debounce_reads_a_flicker_among_other_labels_as_its_longest_label() {
        // H, then 8 s where S and Q alternate in 2 s and 1 s runs (neither holds 3 s
        // alone), then H again: the flicker is S, at 0.5 s and 1 s intervals alike.
        let min = Stable {
            seconds: 3.0,
            rows: 2,
        };
        for step in [0.5, 1.0] {
            let n = (20.0 / step) as usize;
            let t: Vec<f64> = (0..n).map(|i| i as f64 * step).collect();
            let raw: Vec<Option<&str>> = t
                .iter()
                .map(|x| {
                    Some(match *x {
                        x if !(5.0..13.0).contains(&x) => "H",
                        x if (x - 5.0) % 3.0 < 2.0 => "S",
                        _ => "Q",
                    })
                })
                .collect();
            let out = debounce(&raw, &t, min);
            let want: Vec<Option<&str>> = t
                .iter()
                .map(|x| Some(if (5.0..13.0).contains(x) { "S" } else { "H" }))
                .collect();
            assert_eq!(out, want, "step {step}");
        }
        let t: Vec<f64> = (0..12).map(f64::from).collect();
        let at = |s: &str| -> Vec<Option<char>> { s.chars().map(Some).collect() };
        // A flicker shorter than 3 s, or one the stable label keeps interrupting, is
        // absorbed.
        assert_eq!(debounce(&at("HHHHSQHHHHHH"), &t, min), at("HHHHHHHHHHHH"));
        assert_eq!(debounce(&at("HHHHSQHSQHSQ"), &t, min), at("HHHHHHHHHHHH"));
        // A tie goes to the label seen first; after it, the flicker's label is the
        // stable one, so a short run of H that follows is absorbed into it.
        assert_eq!(debounce(&at("HHHHSQQSHQQQ"), &t, min), at("HHHHSSSSSQQQ"));
        // A gap ends a flicker: each side is judged alone (before it S and Q hold 2 s
        // each, S came first; after it Q holds 2 s of 3).
        let mut raw = at("HHHHSQSQSQSQ");
        raw[8] = None;
        let mut want = at("HHHHSSSSSQQQ");
        want[8] = None;
        assert_eq!(debounce(&raw, &t, min), want);
    }

    #[test]
    fn rearm_fires_once_then_after_quiet_rows() {
        let f = |v: &[u8]| v.iter().map(|x| (Some(*x == 1), false)).collect::<Vec<_>>();
        let t: Vec<f64> = (0..10).map(f64::from).collect();
        let out = rearm(f(&[1, 1, 0, 0, 1, 0, 0, 0, 1, 1]).into_iter(), &t, 3.0);
        let got: Vec<bool> = out.iter().map(|b| b == Some(true)).collect();
        // Row 4 is 3 s after row 1's spike: still inside the window; row 8 fires.
        assert_eq!(
            got,
            [
                true, false, false, false, false, false, false, false, true, false
            ]
        );
        assert!(rearm([(None, false), (Some(true), false)].into_iter(), &t, 5.0).value(1));
        // The same quiet time at 5 s intervals: one quiet sample is 5 s.
        let t5: Vec<f64> = (0..4).map(|i| f64::from(i) * 5.0).collect();
        let out = rearm(f(&[1, 0, 1, 0]).into_iter(), &t5, 3.0);
        assert!(out.value(0) && out.value(2));
        // One burst over consecutive 15 s samples fires once: no quiet was seen between
        // them. One quiet sample (15 s) re-arms it.
        let t15: Vec<f64> = (0..4).map(|i| f64::from(i) * 15.0).collect();
        let out = rearm(f(&[1, 1, 0, 1]).into_iter(), &t15, 10.0);
        let got: Vec<bool> = out.iter().map(|b| b == Some(true)).collect();
        assert_eq!(got, [true, false, false, true]);
    }

    #[test]
    fn rearm_held_counts_held_rows_as_not_quiet() {
        // A KV gauge read every 5 s lands in its sawtooth's troughs at rows 1-3 while
        // preemptions (held) show the cache stayed exhausted: one event. Rows 5-7 are
        // quiet on both (15 s): row 8 fires again.
        let flag = [1, 0, 0, 0, 1, 0, 0, 0, 1].map(|x| Some(x == 1));
        let held = [1, 1, 1, 1, 1, 0, 0, 0, 1].map(|x| x == 1);
        let t: Vec<f64> = (0..9).map(|i| f64::from(i) * 5.0).collect();
        let out = rearm(flag.into_iter().zip(held), &t, 10.0);
        let got: Vec<bool> = out.iter().map(|b| b == Some(true)).collect();
        assert_eq!(
            got,
            [true, false, false, false, false, false, false, false, true]
        );
        // Held alone never fires, and held before the flag does not keep it from firing
        // (preemptions seen before the gauge first reads saturated).
        let flag = [0, 0, 1, 0, 1].map(|x| Some(x == 1));
        let held = [1, 1, 1, 1, 1].map(|x| x == 1);
        let out = rearm(flag.into_iter().zip(held), &t, 10.0);
        let got: Vec<bool> = out.iter().map(|b| b == Some(true)).collect();
        assert_eq!(got, [false, false, true, false, false]);
    }

    #[test]
    fn sustained_keeps_runs_long_enough_in_time() {
        let on = |v: &[u8]| v.iter().map(|x| Some(*x == 1)).collect::<Vec<_>>();
        let t: Vec<f64> = (0..8).map(f64::from).collect();
        // Run [1,3) covers (0, 2]: 2 s; run [4,8) covers (3, 7]: 4 s.
        let got = sustained(&on(&[0, 1, 1, 0, 1, 1, 1, 1]), &t, 3.0, 1);
        let want: Vec<Option<bool>> = on(&[0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(got, want);
        // One 5 s sample is 5 s of trouble.
        let t5: Vec<f64> = (0..3).map(|i| f64::from(i) * 5.0).collect();
        assert_eq!(sustained(&on(&[0, 1, 0]), &t5, 5.0, 1), on(&[0, 1, 0]));
        assert_eq!(
            sustained(&[None, Some(true)], &t5, 0.0, 1),
            vec![None, Some(true)]
        );
    }

    #[test]
    fn rolling_sum_counts_a_trailing_time_window() {
        let t = [0.0, 1.0, 2.0, 10.0, 10.5, f64::NAN, 11.0];
        let v = [1.0, 0.0, 2.0, 4.0, 1.0, 5.0, 0.0];
        // (t-10, t]: at t=10 the row at 0 has left; a row of unknown time gets NULL but
        // its value still counts for the rows after it while they reach back to it.
        let got = rolling_sum(&v, &t, 10.0);
        assert_eq!(
            got.iter().collect::<Vec<_>>(),
            vec![
                Some(1.0),
                Some(1.0),
                Some(3.0),
                Some(6.0),
                Some(7.0),
                None,
                Some(12.0)
            ]
        );
    }

    #[test]
    fn condition_changes_against_the_previous_known_value() {
        let out = condition_change(
            [
                Some(false),
                Some(true),
                None,
                Some(true),
                Some(false),
                None,
                Some(false),
            ]
            .into_iter(),
        );
        let got: Vec<Option<&str>> = out.iter().collect();
        assert_eq!(
            got,
            [None, Some("start"), None, None, Some("end"), None, None]
        );
        assert_eq!(condition_change([Some(true)].into_iter()).value(0), "start");
    }

    #[test]
    fn episodes_merge_gaps_and_drop_short_ones() {
        let on = |v: &[u8]| v.iter().map(|x| Some(*x == 1)).collect::<Vec<_>>();
        let t: Vec<f64> = (0..14).map(|i| i as f64).collect();
        // Islands [1,3) and [4,6) are 1 s apart (merged, lasting 5 s); [10,11) starts 4 s
        // after and lasts 1 s (dropped).
        let ids = episode_id(
            &on(&[0, 1, 1, 0, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0]),
            &t,
            3.0,
            5.0,
        );
        let got: Vec<Option<i64>> = ids.iter().collect();
        let mut want = vec![None; 14];
        for i in [1, 2, 4, 5] {
            want[i] = Some(1);
        }
        assert_eq!(got, want);
        // An island running to the end of the partition ends at its last sample.
        let ids = episode_id(&on(&[0, 1, 1, 1, 1, 1, 1]), &t[..7], 3.0, 5.0);
        assert_eq!(ids.iter().flatten().count(), 6);
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

#[cfg(test)]
mod sql {
    //! The functions as SQL calls them: constants read once from the plan, labels
    //! gathered from their rows, NULLs where nothing is known.
    use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    async fn run(sql: &str) -> datafusion::common::Result<Vec<RecordBatch>> {
        let ctx = crate::analysis::context();
        let schema = Arc::new(Schema::new(vec![
            Field::new("t", DataType::Float64, true),
            Field::new("label", DataType::Utf8, true),
            Field::new("on", DataType::Boolean, true),
        ]));
        let t = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
        let label = [
            Some("IDLE"),
            Some("IDLE"),
            Some("IDLE"),
            Some("QUEUE_PRESSURE"),
            Some("IDLE"),
            None,
            Some("SATURATED"),
            Some("SATURATED"),
        ];
        let on = [false, true, true, false, true, true, false, false];
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(datafusion::arrow::array::Float64Array::from(t.to_vec())),
                Arc::new(StringArray::from(label.to_vec())),
                Arc::new(datafusion::arrow::array::BooleanArray::from(on.to_vec())),
            ],
        )?;
        ctx.register_batch("s", batch)?;
        ctx.sql(sql).await?.collect().await
    }

    fn strings(batches: &[RecordBatch], col: usize) -> Vec<Option<String>> {
        batches
            .iter()
            .flat_map(|b| {
                let a = b
                    .column(col)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap();
                a.iter().map(|v| v.map(str::to_owned)).collect::<Vec<_>>()
            })
            .collect()
    }

    #[tokio::test]
    async fn labels_and_constants_through_sql() {
        let out = run(
            "SELECT debounce(label, t, 2, 1) OVER w, previous_value(label) OVER w, \
                       next_time_where(\"on\", t) OVER w, episode_id(\"on\", t, 0.5, 2.0) OVER w \
                       FROM s WINDOW w AS (ORDER BY t)",
        )
        .await
        .unwrap();
        let s = |v: &[Option<&str>]| v.iter().map(|x| x.map(str::to_owned)).collect::<Vec<_>>();
        // The 1 s QUEUE_PRESSURE blip takes IDLE's label; the NULL passes through and
        // ends the stable label, so the short SATURATED run after it keeps its own.
        assert_eq!(
            strings(&out, 0),
            s(&[
                Some("IDLE"),
                Some("IDLE"),
                Some("IDLE"),
                Some("IDLE"),
                Some("IDLE"),
                None,
                Some("SATURATED"),
                Some("SATURATED")
            ])
        );
        assert_eq!(
            strings(&out, 1),
            s(&[
                None,
                Some("IDLE"),
                Some("IDLE"),
                Some("IDLE"),
                Some("QUEUE_PRESSURE"),
                Some("IDLE"),
                Some("IDLE"),
                Some("SATURATED")
            ])
        );
        let next = out[0]
            .column(2)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Float64Array>()
            .unwrap();
        assert_eq!(
            next.iter().collect::<Vec<_>>(),
            vec![
                Some(1.0),
                Some(1.0),
                Some(2.0),
                Some(4.0),
                Some(4.0),
                Some(5.0),
                None,
                None
            ]
        );
        // Islands [1, 3) and [4, 6) stay apart (the 1 s gap is over 0.5 s) and each
        // lasts 2 s, so both are kept.
        let ids = out[0]
            .column(3)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(
            ids.iter().collect::<Vec<_>>(),
            vec![None, Some(1), Some(1), None, Some(2), Some(2), None, None]
        );
    }

    #[tokio::test]
    async fn a_column_where_a_constant_belongs_is_an_error() {
        let err = run("SELECT rolling_median(t, t, t) OVER (ORDER BY t) FROM s")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("rolling_median: argument 3 must be a constant number"),
            "{err}"
        );
    }
}

#[cfg(test)]
mod rolling_median_props {
    use super::*;
    use proptest::prelude::*;

    /// The straightforward kernel (remove and insert per row), kept as the reference.
    fn reference(v: &Float64Array, t: &Float64Array, window: f64, n: usize) -> Float64Array {
        let mut sorted: Vec<f64> = Vec::new();
        let mut out = Vec::with_capacity(n);
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
                    sorted_insert(&mut sorted, x);
                }
                hi += 1;
            }
            while lo < hi && time(lo).is_none_or(|tl| tl < ti - window) {
                if let Some(x) = value(lo) {
                    sorted_remove(&mut sorted, x);
                }
                lo += 1;
            }
            out.push(median_of_sorted(&sorted));
        }
        Float64Array::from(out)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Same medians as the reference for any values (repeats, NULLs, NaN), any time
        /// steps (gaps longer than the window, repeated times, NULL times) and windows.
        #[test]
        fn paired_kernel_equals_reference(
            rows in proptest::collection::vec(
                (prop_oneof![Just(None), Just(Some(f64::NAN)), (0u8..6).prop_map(|x| Some(f64::from(x))), any::<f64>().prop_map(Some)],
                 prop_oneof![8 => (0u8..4).prop_map(|d| Some(f64::from(d))), 1 => Just(None), 1 => Just(Some(50.0))]),
                0..120),
            window in prop_oneof![Just(0.0), Just(2.5), Just(10.0), Just(60.0)],
        ) {
            let v = Float64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>());
            let mut now = 0.0;
            let t = Float64Array::from(rows.iter().map(|r| r.1.map(|d| { now += d; now })).collect::<Vec<_>>());
            let n = rows.len();
            let got = rolling_median(&v, &t, window, n);
            let want = reference(&v, &t, window, n);
            prop_assert_eq!(got.len(), n);
            for i in 0..n {
                let (g, w) = (got.is_valid(i).then(|| got.value(i)), want.is_valid(i).then(|| want.value(i)));
                prop_assert!(g == w || g.zip(w).is_some_and(|(a, b)| a.is_nan() && b.is_nan()), "row {}: {:?} != {:?}", i, g, w);
            }
        }
    }
}
