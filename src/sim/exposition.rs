//! Renders simulated engines as vLLM 0.26 (V1) `/metrics` text: the same family names,
//! HELP texts, types, label sets (alphabetical, as prometheus_client writes them),
//! `_created` gauge families, `cache_config_info` and bucket edges as a real server.

use std::fmt::Write;

use std::sync::LazyLock;

use super::model::{Engine, Hist};
use super::residency::Residency;
use super::scenario::Segment;

/// Stands in for an engine without residency tracking (never rendered: all engines of a
/// server share the flag).
static EMPTY: LazyLock<Residency> = LazyLock::new(|| Residency::new(2, 1.0));

/// prometheus_client's `floatToGoString`: Python `repr`, switching to an exponent for
/// positive values with more than six integer digits.
pub fn go_float(d: f64) -> String {
    if d == f64::INFINITY {
        return "+Inf".into();
    }
    if d == f64::NEG_INFINITY {
        return "-Inf".into();
    }
    if d.is_nan() {
        return "NaN".into();
    }
    let s = format!("{d:?}");
    if let Some(dot) = s.find('.')
        && d > 0.0
        && dot > 6
        && !s.contains('e')
    {
        let digits = format!("{}{}", &s[1..dot], &s[dot + 1..]);
        let mantissa = format!("{}.{}", &s[..1], digits);
        let mantissa = mantissa.trim_end_matches(['0', '.']);
        return format!("{mantissa}e+{:02}", dot - 1);
    }
    s
}

struct Out<'a> {
    buf: String,
    model: &'a str,
}

impl Out<'_> {
    fn labels(&self, engine: usize, extra: &[(&str, &str)]) -> String {
        let engine = engine.to_string();
        let mut l: Vec<(&str, &str)> =
            vec![("engine", engine.as_str()), ("model_name", self.model)];
        l.extend_from_slice(extra);
        l.sort_by(|a, b| a.0.cmp(b.0));
        let parts: Vec<String> = l
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        parts.join(",")
    }

    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.buf, "# HELP vllm:{name} {help}");
        let _ = writeln!(self.buf, "# TYPE vllm:{name} {kind}");
    }

    fn gauge(
        &mut self,
        name: &str,
        help: &str,
        engines: &[Engine],
        f: impl Fn(&Engine) -> Vec<(Vec<(&'static str, &'static str)>, f64)>,
    ) {
        self.header(name, help, "gauge");
        for (i, e) in engines.iter().enumerate() {
            for (extra, v) in f(e) {
                let l = self.labels(i, &extra);
                let _ = writeln!(self.buf, "vllm:{name}{{{l}}} {}", go_float(v));
            }
        }
    }

    fn counter(
        &mut self,
        base: &str,
        help: &str,
        engines: &[Engine],
        f: impl Fn(&Engine) -> Vec<(Vec<(&'static str, &'static str)>, f64)>,
    ) {
        self.header(&format!("{base}_total"), help, "counter");
        for (i, e) in engines.iter().enumerate() {
            for (extra, v) in f(e) {
                let l = self.labels(i, &extra);
                let _ = writeln!(self.buf, "vllm:{base}_total{{{l}}} {}", go_float(v));
            }
        }
        self.header(&format!("{base}_created"), help, "gauge");
        for (i, e) in engines.iter().enumerate() {
            for (extra, _) in f(e) {
                let l = self.labels(i, &extra);
                let _ = writeln!(
                    self.buf,
                    "vllm:{base}_created{{{l}}} {}",
                    go_float(e.created_at)
                );
            }
        }
    }

    fn histogram(
        &mut self,
        name: &str,
        help: &str,
        engines: &[Engine],
        f: impl Fn(&Engine) -> &Hist,
    ) {
        self.header(name, help, "histogram");
        for (i, e) in engines.iter().enumerate() {
            let h = f(e);
            for (le, c) in h.cumulative() {
                let le = go_float(le);
                let l = self.labels(i, &[("le", le.as_str())]);
                let _ = writeln!(self.buf, "vllm:{name}_bucket{{{l}}} {}", go_float(c as f64));
            }
            let l = self.labels(i, &[]);
            let _ = writeln!(
                self.buf,
                "vllm:{name}_count{{{l}}} {}",
                go_float(h.count() as f64)
            );
            let _ = writeln!(self.buf, "vllm:{name}_sum{{{l}}} {}", go_float(h.sum));
        }
        self.header(&format!("{name}_created"), help, "gauge");
        for (i, e) in engines.iter().enumerate() {
            let l = self.labels(i, &[]);
            let _ = writeln!(
                self.buf,
                "vllm:{name}_created{{{l}}} {}",
                go_float(e.created_at)
            );
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

type Lv = Vec<(Vec<(&'static str, &'static str)>, f64)>;

fn one(v: f64) -> Lv {
    vec![(vec![], v)]
}

/// Renders the full `/metrics` page for `engines` serving `model`.
pub fn render(engines: &[Engine], model: &str) -> String {
    let mut o = Out {
        buf: String::with_capacity(64 * 1024),
        model,
    };
    let _ = writeln!(
        o.buf,
        "# HELP python_info Python platform information\n# TYPE python_info gauge\npython_info{{implementation=\"CPython\",major=\"3\",minor=\"12\",patchlevel=\"3\",version=\"3.12.3\"}} 1.0"
    );
    if let Some(e) = engines.first() {
        let _ = writeln!(
            o.buf,
            "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {:.2}",
            e.created_at
        );
    }
    o.counter("estimated_flops_per_gpu", "Estimated number of floating point operations per GPU (for Model Flops Utilization calculations).", engines, |_| one(0.0));
    o.counter("estimated_read_bytes_per_gpu", "Estimated number of bytes read from memory per GPU (for Model Flops Utilization calculations).", engines, |_| one(0.0));
    o.counter("estimated_write_bytes_per_gpu", "Estimated number of bytes written to memory per GPU (for Model Flops Utilization calculations).", engines, |_| one(0.0));
    o.gauge(
        "num_requests_running",
        "Number of requests in model execution batches.",
        engines,
        |e| one(e.running.len() as f64),
    );
    o.gauge(
        "num_requests_waiting",
        "Number of requests waiting to be processed.",
        engines,
        |e| one(e.waiting.len() as f64),
    );
    o.gauge("num_requests_waiting_by_reason", "Number of waiting requests by reason. Reason labels: 'capacity' = waiting for scheduling capacity; 'deferred' = deferred by transient constraints (LoRA budget, KV transfer, blocked status). Sum of all reasons equals vllm:num_requests_waiting.", engines, |e| {
        vec![(vec![("reason", "capacity")], e.waiting.len() as f64), (vec![("reason", "deferred")], 0.0)]
    });
    o.gauge("engine_sleep_state", "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is awake; weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2.", engines, |_| {
        vec![(vec![("sleep_state", "awake")], 1.0), (vec![("sleep_state", "weights_offloaded")], 0.0), (vec![("sleep_state", "discard_all")], 0.0)]
    });
    o.gauge(
        "kv_cache_usage_perc",
        "KV-cache usage. 1 means 100 percent usage.",
        engines,
        |e| one(e.kv_usage_fraction()),
    );
    o.counter(
        "prefix_cache_queries",
        "Prefix cache queries, in terms of number of queried tokens.",
        engines,
        |e| one(e.metrics.prefix_queries as f64),
    );
    o.counter(
        "prefix_cache_hits",
        "Prefix cache hits, in terms of number of cached tokens.",
        engines,
        |e| one(e.metrics.prefix_hits as f64),
    );
    o.counter("external_prefix_cache_queries", "External prefix cache queries from KV connector cross-instance cache sharing, in terms of number of queried tokens.", engines, |_| one(0.0));
    o.counter("external_prefix_cache_hits", "External prefix cache hits from KV connector cross-instance cache sharing, in terms of number of cached tokens.", engines, |_| one(0.0));
    o.counter(
        "mm_cache_queries",
        "Multi-modal cache queries, in terms of number of queried items.",
        engines,
        |_| one(0.0),
    );
    o.counter(
        "mm_cache_hits",
        "Multi-modal cache hits, in terms of number of cached items.",
        engines,
        |_| one(0.0),
    );
    o.counter(
        "num_preemptions",
        "Cumulative number of preemption from the engine.",
        engines,
        |e| one(e.metrics.preemptions as f64),
    );
    o.counter(
        "prompt_tokens",
        "Number of prefill tokens processed.",
        engines,
        |e| one(e.metrics.prompt_tokens as f64),
    );
    o.counter(
        "prompt_tokens_by_source",
        "Number of prompt tokens by source.",
        engines,
        |e| {
            vec![
                (
                    vec![("source", "local_compute")],
                    e.metrics.prompt_tokens_computed as f64,
                ),
                (
                    vec![("source", "local_cache_hit")],
                    e.metrics.prompt_tokens_cached as f64,
                ),
                (vec![("source", "external_kv_transfer")], 0.0),
            ]
        },
    );
    o.counter(
        "prompt_tokens_cached",
        "Number of cached prompt tokens (local + external).",
        engines,
        |e| one(e.metrics.prompt_tokens_cached as f64),
    );
    o.counter(
        "generation_tokens",
        "Number of generation tokens processed.",
        engines,
        |e| one(e.metrics.generation_tokens as f64),
    );
    o.counter(
        "request_success",
        "Count of successfully processed requests.",
        engines,
        |e| {
            vec![
                (
                    vec![("finished_reason", "stop")],
                    e.metrics.success_stop as f64,
                ),
                (
                    vec![("finished_reason", "length")],
                    e.metrics.success_length as f64,
                ),
                (vec![("finished_reason", "abort")], 0.0),
                (vec![("finished_reason", "error")], 0.0),
                (vec![("finished_reason", "repetition")], 0.0),
            ]
        },
    );
    o.histogram(
        "request_prompt_tokens",
        "Number of prefill tokens processed.",
        engines,
        |e| &e.metrics.prompt_len,
    );
    o.histogram(
        "request_generation_tokens",
        "Number of generation tokens processed.",
        engines,
        |e| &e.metrics.generation_len,
    );
    o.histogram(
        "iteration_tokens_total",
        "Histogram of number of tokens per engine_step.",
        engines,
        |e| &e.metrics.iteration_tokens,
    );
    o.histogram(
        "request_max_num_generation_tokens",
        "Histogram of maximum number of requested generation tokens.",
        engines,
        |e| &e.metrics.max_generation_len,
    );
    o.histogram(
        "request_params_n",
        "Histogram of the n request parameter.",
        engines,
        |e| &e.metrics.params_n,
    );
    o.histogram(
        "request_params_max_tokens",
        "Histogram of the max_tokens request parameter.",
        engines,
        |e| &e.metrics.params_max_tokens,
    );
    o.histogram(
        "time_to_first_token_seconds",
        "Histogram of time to first token in seconds.",
        engines,
        |e| &e.metrics.ttft,
    );
    o.histogram(
        "inter_token_latency_seconds",
        "Histogram of inter-token latency in seconds.",
        engines,
        |e| &e.metrics.itl,
    );
    o.histogram(
        "request_time_per_output_token_seconds",
        "Histogram of time_per_output_token_seconds per request.",
        engines,
        |e| &e.metrics.tpot,
    );
    o.histogram(
        "e2e_request_latency_seconds",
        "Histogram of e2e request latency in seconds.",
        engines,
        |e| &e.metrics.e2e,
    );
    o.histogram(
        "request_queue_time_seconds",
        "Histogram of time spent in WAITING phase for request.",
        engines,
        |e| &e.metrics.queue,
    );
    o.histogram(
        "request_inference_time_seconds",
        "Histogram of time spent in RUNNING phase for request.",
        engines,
        |e| &e.metrics.inference,
    );
    o.histogram(
        "request_prefill_time_seconds",
        "Histogram of time spent in PREFILL phase for request.",
        engines,
        |e| &e.metrics.prefill,
    );
    o.histogram(
        "request_decode_time_seconds",
        "Histogram of time spent in DECODE phase for request.",
        engines,
        |e| &e.metrics.decode,
    );
    o.histogram(
        "request_prefill_kv_computed_tokens",
        "Histogram of new KV tokens computed during prefill (excluding cached tokens).",
        engines,
        |e| &e.metrics.prefill_kv_computed,
    );
    // `--kv-cache-metrics`: the residency histograms, sampled blocks only.
    if !engines.is_empty() && engines.iter().all(|e| e.residency.is_some()) {
        const SAMPLED: &str = "Sampled metrics (controlled by --kv-cache-metrics-sample).";
        fn res(e: &Engine) -> &Residency {
            e.residency.as_ref().unwrap_or(&EMPTY)
        }
        o.histogram(
            "kv_block_lifetime_seconds",
            &format!("Histogram of KV cache block lifetime from allocation to eviction. {SAMPLED}"),
            engines,
            |e| &res(e).lifetime,
        );
        o.histogram(
            "kv_block_idle_before_evict_seconds",
            &format!("Histogram of idle time before KV cache block eviction. {SAMPLED}"),
            engines,
            |e| &res(e).idle,
        );
        o.histogram(
            "kv_block_reuse_gap_seconds",
            &format!("Histogram of time gaps between consecutive KV cache block accesses. Only the most recent accesses are recorded (ring buffer). {SAMPLED}"),
            engines,
            |e| &res(e).reuse_gap,
        );
    }
    let _ = writeln!(
        o.buf,
        "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n# TYPE vllm:cache_config_info gauge"
    );
    // As vLLM 0.26 writes it: every CacheConfig field as a label (sorted here as on a real
    // page), once per engine, with `num_gpu_blocks` the sum over data-parallel engines
    // (vllm/v1/engine/core_client.py) while `kv_cache_size_tokens` is per engine.
    let total_blocks: u64 = engines
        .iter()
        .map(|e| u64::from(e.cfg.num_gpu_blocks))
        .sum();
    for (i, e) in engines.iter().enumerate() {
        let c = &e.cfg;
        let tokens = c.num_gpu_blocks as u64 * c.block_size as u64;
        let _ = writeln!(
            o.buf,
            "vllm:cache_config_info{{_block_size_resolved=\"True\",block_size=\"{}\",cache_dtype=\"auto\",calculate_kv_scales=\"False\",enable_prefix_caching=\"{}\",engine=\"{i}\",gpu_memory_utilization=\"{}\",is_attention_free=\"False\",kv_cache_dtype_skip_layers=\"[]\",kv_cache_max_concurrency=\"{}\",kv_cache_memory_bytes=\"None\",kv_cache_size_tokens=\"{tokens}\",kv_offloading_backend=\"native\",kv_offloading_size=\"None\",kv_sharing_fast_prefill=\"False\",mamba_block_size=\"None\",mamba_cache_dtype=\"auto\",mamba_cache_mode=\"none\",mamba_page_size_padded=\"None\",mamba_ssm_cache_dtype=\"auto\",num_cpu_blocks=\"None\",num_gpu_blocks=\"{total_blocks}\",num_gpu_blocks_override=\"None\",prefix_caching_hash_algo=\"sha256\",prefix_match_unit=\"None\",skip_page_size_padded=\"None\",sliding_window=\"None\",user_specified_block_size=\"True\",user_specified_mamba_block_size=\"False\"}} 1.0",
            c.block_size,
            if c.enable_prefix_caching {
                "True"
            } else {
                "False"
            },
            c.gpu_memory_utilization,
            go_float(tokens as f64 / c.max_model_len.max(1) as f64),
        );
    }
    o.buf
}

/// `process_cpu_seconds_total` of the API server process (prometheus_client's process
/// collector, on every vLLM `/metrics` page).
pub fn render_process_cpu(page: &mut String, cpu_s: f64) {
    let _ = writeln!(
        page,
        "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {}\n# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}",
        go_float(cpu_s),
        go_float(2.6e9)
    );
}

/// prometheus-fastapi-instrumentator's request counter, as vLLM's API server exposes it:
/// every `/v1/completions` request once its response ended, finished or abandoned by its
/// client (the stream had sent its 200 already).
pub fn render_http(page: &mut String, engines: &[Engine]) {
    let answered: u64 = engines
        .iter()
        .map(|e| e.metrics.success_length + e.metrics.success_stop + e.metrics.client_aborts)
        .sum();
    let _ = writeln!(
        page,
        "# HELP http_requests_total Total number of requests by method, status and handler.\n# TYPE http_requests_total counter"
    );
    if answered > 0 {
        let _ = writeln!(
            page,
            "http_requests_total{{handler=\"/v1/completions\",method=\"POST\",status=\"2xx\"}} {}",
            go_float(answered as f64)
        );
    }
}

/// Framebuffer of the simulated GPU (an 80 GB H100), MiB.
const FB_TOTAL_MIB: f64 = 81559.0;
/// Boost SM clock, MHz.
const SM_CLOCK_MHZ: f64 = 1980.0;
/// `DCGM_FI_DEV_CLOCK_THROTTLE_REASONS` bits: GPU idle, HW thermal slowdown.
const THROTTLE_IDLE: u32 = 0x1;
const THROTTLE_HW_THERMAL: u32 = 0x40;

/// The page NVIDIA's dcgm-exporter serves for one GPU per engine, consistent with the
/// step model: utilization is the share of time a step ran, SM activity weighs each step
/// by how much of the GPU its tokens fill, the framebuffer holds what vLLM reserved at
/// start (`gpu_memory_utilization` of it, whatever the load), and a slowdown fault reads as
/// thermal throttling with a lower SM clock.
pub fn render_dcgm(engines: &[Engine], now: f64, seg: &Segment) -> String {
    let mut buf = String::with_capacity(4096);
    type Field = (&'static str, &'static str, &'static str);
    const FIELDS: &[Field] = &[
        ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %)."),
        (
            "DCGM_FI_DEV_SM_CLOCK",
            "gauge",
            "SM clock frequency (in MHz).",
        ),
        ("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C)."),
        ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W)."),
        (
            "DCGM_FI_DEV_FB_FREE",
            "gauge",
            "Framebuffer memory free (in MiB).",
        ),
        (
            "DCGM_FI_DEV_FB_USED",
            "gauge",
            "Framebuffer memory used (in MiB).",
        ),
        (
            "DCGM_FI_DEV_XID_ERRORS",
            "gauge",
            "Value of the last XID error encountered.",
        ),
        (
            "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",
            "gauge",
            "Current clock throttle reasons.",
        ),
        (
            "DCGM_FI_PROF_SM_ACTIVE",
            "gauge",
            "The ratio of cycles an SM has at least 1 warp assigned (in %).",
        ),
        (
            "DCGM_FI_PROF_SM_OCCUPANCY",
            "gauge",
            "The ratio of number of warps resident on an SM (in %).",
        ),
        (
            "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
            "gauge",
            "Ratio of cycles the tensor (HMMA) pipe is active (in %).",
        ),
    ];
    for (name, kind, help) in FIELDS {
        let _ = writeln!(buf, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (i, e) in engines.iter().enumerate() {
            let (util, sm) = e.activity.at(now);
            let throttled = seg.slowdown > 1.0;
            let used = (e.cfg.gpu_memory_utilization * FB_TOTAL_MIB).round();
            let v: f64 = match *name {
                "DCGM_FI_DEV_GPU_UTIL" => (util * 100.0).round(),
                "DCGM_FI_DEV_SM_CLOCK" if throttled => (SM_CLOCK_MHZ / seg.slowdown).round(),
                "DCGM_FI_DEV_SM_CLOCK" => SM_CLOCK_MHZ,
                "DCGM_FI_DEV_GPU_TEMP" if throttled => 88.0,
                "DCGM_FI_DEV_GPU_TEMP" => (34.0 + 36.0 * util).round(),
                "DCGM_FI_DEV_POWER_USAGE" => 72.0 + 580.0 * sm + 60.0 * util,
                "DCGM_FI_DEV_FB_FREE" => FB_TOTAL_MIB - used,
                "DCGM_FI_DEV_FB_USED" => used,
                "DCGM_FI_DEV_XID_ERRORS" => 0.0,
                "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS" if throttled => f64::from(THROTTLE_HW_THERMAL),
                "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS" if util < 0.01 => f64::from(THROTTLE_IDLE),
                "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS" => 0.0,
                "DCGM_FI_PROF_SM_ACTIVE" => sm,
                "DCGM_FI_PROF_SM_OCCUPANCY" => sm * 0.45,
                _ => sm * 0.6,
            };
            let _ = writeln!(
                buf,
                "{name}{{gpu=\"{i}\",UUID=\"GPU-5f1c0b1e-0000-4000-8000-00000000000{i}\",pci_bus_id=\"00000000:{:02X}:00.0\",device=\"nvidia{i}\",modelName=\"NVIDIA H100 80GB HBM3\",Hostname=\"sim\",DCGM_FI_DRIVER_VERSION=\"550.54.15\"}} {}",
                0x18 + i,
                if v.fract() == 0.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.6}")
                }
            );
        }
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::go_float;

    #[test]
    fn floats_like_prometheus_client() {
        assert_eq!(go_float(6.0), "6.0");
        assert_eq!(go_float(467988.0), "467988.0");
        assert_eq!(go_float(2384988.0), "2.384988e+06");
        assert_eq!(go_float(1795439261.9987886), "1.7954392619987886e+09");
        assert_eq!(go_float(0.9071358748778103), "0.9071358748778103");
        assert_eq!(go_float(f64::INFINITY), "+Inf");
    }
}
