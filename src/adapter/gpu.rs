//! GPU telemetry in NVIDIA's DCGM names (dcgm-exporter, or any exposition that uses its
//! field names): one [`GpuStat`] per GPU, and the columns an engine's row gets from them.
//!
//! Units are made KVScope's here, once: DCGM's profiling fields (`DCGM_FI_PROF_*`) are
//! 0–1 ratios and become percent; `DCGM_FI_DEV_GPU_UTIL` is already percent; the
//! framebuffer is in MiB.

use std::collections::BTreeMap;

use crate::source::prom::Exposition;

/// One GPU's readings from one page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuStat {
    /// The `gpu` label (device index), else the UUID, else "0".
    pub gpu: String,
    pub util_pct: Option<f64>,
    pub sm_active_pct: Option<f64>,
    pub sm_occupancy_pct: Option<f64>,
    pub tensor_active_pct: Option<f64>,
    pub fb_used_mib: Option<f64>,
    pub fb_free_mib: Option<f64>,
    pub sm_clock_mhz: Option<f64>,
    pub power_w: Option<f64>,
    pub temp_c: Option<f64>,
    /// Clock-event reasons (bitmask).
    pub throttle: Option<i64>,
    /// Last XID error (0: none).
    pub xid: Option<i64>,
}

impl GpuStat {
    pub fn mem_used_pct(&self) -> Option<f64> {
        let (u, f) = (self.fb_used_mib?, self.fb_free_mib?);
        (u + f > 0.0).then(|| u / (u + f) * 100.0)
    }
}

/// Reads every DCGM family of a page; GPUs ordered by their `gpu` index.
pub fn read(exp: &Exposition) -> Vec<GpuStat> {
    let mut gpus: BTreeMap<(u64, String), GpuStat> = BTreeMap::new();
    for fam in &exp.families {
        let Some(field) = fam.name.strip_prefix("DCGM_FI_") else {
            continue;
        };
        for s in &fam.samples {
            let v = s.value;
            if !v.is_finite() {
                continue;
            }
            let id = s
                .label("gpu")
                .or_else(|| s.label("UUID"))
                .unwrap_or("0")
                .to_string();
            let key = (id.parse::<u64>().unwrap_or(u64::MAX), id.clone());
            let g = gpus.entry(key).or_insert_with(|| GpuStat {
                gpu: id,
                ..Default::default()
            });
            match field {
                "DEV_GPU_UTIL" => g.util_pct = Some(v),
                "PROF_SM_ACTIVE" => g.sm_active_pct = Some(v * 100.0),
                "PROF_SM_OCCUPANCY" => g.sm_occupancy_pct = Some(v * 100.0),
                "PROF_PIPE_TENSOR_ACTIVE" => g.tensor_active_pct = Some(v * 100.0),
                "DEV_FB_USED" => g.fb_used_mib = Some(v),
                "DEV_FB_FREE" => g.fb_free_mib = Some(v),
                "DEV_SM_CLOCK" => g.sm_clock_mhz = Some(v),
                "DEV_POWER_USAGE" => g.power_w = Some(v),
                "DEV_GPU_TEMP" => g.temp_c = Some(v),
                // Renamed in DCGM 3.3 (clock "events"); the bits are the same.
                "DEV_CLOCK_THROTTLE_REASONS" | "DEV_CLOCKS_EVENT_REASONS" => {
                    g.throttle = Some(v as i64)
                }
                "DEV_XID_ERRORS" => g.xid = Some(v as i64),
                _ => {}
            }
        }
    }
    gpus.into_values().collect()
}

/// The GPU columns of one engine's row.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GpuColumns {
    pub util_pct: Option<f64>,
    pub mem_used_pct: Option<f64>,
    pub sm_active_pct: Option<f64>,
    pub sm_occupancy_pct: Option<f64>,
    pub tensor_active_pct: Option<f64>,
    pub sm_clock_mhz: Option<f64>,
    pub power_w: Option<f64>,
    pub temp_c: Option<f64>,
    pub throttle: Option<i64>,
    pub xid: Option<i64>,
}

fn mean(gpus: &[&GpuStat], f: impl Fn(&GpuStat) -> Option<f64>) -> Option<f64> {
    let v: Vec<f64> = gpus.iter().filter_map(|g| f(g)).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// The columns of the row of `engine` (its label) on a server with `engines` engines.
///
/// A data-parallel server runs one engine per GPU (or per group of GPUs): when the page
/// shows as many GPUs as the server has engines, engine `i` gets GPU `i`. Otherwise (tensor
/// parallelism: one engine over every GPU; or a layout that cannot be told) every engine
/// gets the mean over the GPUs, throttle reasons OR-ed and the worst XID.
pub fn columns(gpus: &[GpuStat], engine: &str, engines: usize) -> GpuColumns {
    if gpus.is_empty() {
        return GpuColumns::default();
    }
    let own: Vec<&GpuStat> = match gpus.iter().find(|g| g.gpu == engine) {
        Some(g) if engines > 1 && gpus.len() == engines => vec![g],
        _ => gpus.iter().collect(),
    };
    GpuColumns {
        util_pct: mean(&own, |g| g.util_pct),
        mem_used_pct: mean(&own, GpuStat::mem_used_pct),
        sm_active_pct: mean(&own, |g| g.sm_active_pct),
        sm_occupancy_pct: mean(&own, |g| g.sm_occupancy_pct),
        tensor_active_pct: mean(&own, |g| g.tensor_active_pct),
        sm_clock_mhz: mean(&own, |g| g.sm_clock_mhz),
        power_w: mean(&own, |g| g.power_w),
        temp_c: mean(&own, |g| g.temp_c),
        throttle: own.iter().filter_map(|g| g.throttle).reduce(|a, b| a | b),
        xid: own.iter().filter_map(|g| g.xid).max(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "\
# TYPE DCGM_FI_DEV_GPU_UTIL gauge
DCGM_FI_DEV_GPU_UTIL{gpu=\"0\",UUID=\"GPU-a\",Hostname=\"h\"} 97
DCGM_FI_DEV_GPU_UTIL{gpu=\"1\",UUID=\"GPU-b\",Hostname=\"h\"} 41
# TYPE DCGM_FI_PROF_SM_ACTIVE gauge
DCGM_FI_PROF_SM_ACTIVE{gpu=\"0\",UUID=\"GPU-a\"} 0.625
DCGM_FI_PROF_SM_ACTIVE{gpu=\"1\",UUID=\"GPU-b\"} 0.125
# TYPE DCGM_FI_DEV_FB_USED gauge
DCGM_FI_DEV_FB_USED{gpu=\"0\"} 72000
DCGM_FI_DEV_FB_USED{gpu=\"1\"} 8000
# TYPE DCGM_FI_DEV_FB_FREE gauge
DCGM_FI_DEV_FB_FREE{gpu=\"0\"} 8000
DCGM_FI_DEV_FB_FREE{gpu=\"1\"} 72000
# TYPE DCGM_FI_DEV_CLOCKS_EVENT_REASONS gauge
DCGM_FI_DEV_CLOCKS_EVENT_REASONS{gpu=\"0\"} 1
DCGM_FI_DEV_CLOCKS_EVENT_REASONS{gpu=\"1\"} 64
";

    #[test]
    fn dcgm_fields_in_kvscope_units_and_engine_mapping() {
        let gpus = read(&crate::source::prom::parse(PAGE));
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].sm_active_pct, Some(62.5));
        assert_eq!(gpus[0].mem_used_pct(), Some(90.0));
        // Two engines, two GPUs: each engine its own GPU.
        let e1 = columns(&gpus, "1", 2);
        assert_eq!(e1.util_pct, Some(41.0));
        assert_eq!(e1.sm_active_pct, Some(12.5));
        assert_eq!(e1.mem_used_pct, Some(10.0));
        assert_eq!(e1.throttle, Some(64));
        // One engine over both GPUs (tensor parallel): the mean, reasons OR-ed.
        let tp = columns(&gpus, "0", 1);
        assert_eq!(tp.util_pct, Some(69.0));
        assert_eq!(tp.sm_active_pct, Some(37.5));
        assert_eq!(tp.mem_used_pct, Some(50.0));
        assert_eq!(tp.throttle, Some(65));
        assert_eq!(columns(&[], "0", 1), GpuColumns::default());
    }
}
