//! Every real `/metrics` page parses and normalizes, with values read by hand.

use kvscope::adapter::{self, Hist, Normalizer};
use kvscope::source::prom::{self, MetricType};
use kvscope::store::schema::Sample;

use crate::common::{ROUTER_PAGE, fixture_text};

struct Page {
    exp: prom::Exposition<'static>,
    reading: adapter::Reading,
    rows: Vec<Sample>,
}

fn page(name: &str) -> Page {
    // The exposition borrows the page; a test's pages live for the whole run.
    let text: &'static str = Box::leak(fixture_text(name).into_boxed_str());
    let exp = prom::parse(text);
    let reading = adapter::read(&exp);
    let rows = Normalizer::new()
        .normalize("srv", 1_000_000, 0.0, None, &reading)
        .samples;
    Page { exp, reading, rows }
}

fn one(p: &Page) -> &Sample {
    assert_eq!(p.rows.len(), 1, "one series expected");
    &p.rows[0]
}

fn skipped_lines(p: &Page) -> Vec<usize> {
    p.exp.skipped.iter().map(|s| s.line).collect()
}

#[test]
fn f01_v0_fork_idle() {
    let p = page("01-v0.5-fork-idle-bsc.prom");
    assert!(p.exp.skipped.is_empty());
    let s = one(&p);
    assert_eq!(
        s.model_name,
        "/gpfs/scratch/bsc98/bsc098069/llm_benchmarking/models/llama/llama-2-13b"
    );
    assert_eq!(s.engine, "0");
    assert_eq!(s.kv_cache_usage_pct, Some(0.0));
    assert_eq!(s.requests_running, Some(0));
    assert_eq!(s.requests_swapped, Some(0));
    assert_eq!(s.preemptions_total, Some(0));
    // −1 means "no data" in V0's hit-rate gauge.
    assert_eq!(s.prefix_cache_hit_rate_pct, None);
    // Two non-upstream fork gauges are ignored and counted.
    assert!(p.reading.unknown_vllm.contains("vllm:scheduler_total_time"));
    assert!(
        p.reading
            .unknown_vllm
            .contains("vllm:model_forward_total_time")
    );
    assert_eq!(p.reading.kv_capacity_tokens(), Some(2657.0 * 16.0));
}

#[test]
fn f02_docs_elided_iteration_tokens() {
    let p = page("02-v0-0.6-docs-iteration-tokens-elided.prom");
    assert_eq!(skipped_lines(&p), vec![12]);
    let f = p.exp.family("vllm:iteration_tokens_total").unwrap();
    assert_eq!(f.kind, MetricType::Histogram);
    // No running/waiting/KV on this excerpt: not a full vLLM page.
    assert_eq!(p.reading.missing_required().len(), 3);
}

#[test]
fn f03_v0_07_light_use() {
    let p = page("03-v0-0.7-aibrix-runtime-doc-truncated.prom");
    assert!(p.exp.skipped.is_empty());
    let s = one(&p);
    assert_eq!(s.model_name, "Qwen/Qwen2.5-Coder-1.5B-Instruct");
    assert_eq!(s.prompt_tokens_total, Some(148));
    assert_eq!(s.generation_tokens_total, Some(955));
    assert_eq!(s.requests_finished_total, Some(4));
    assert_eq!(s.kv_cache_usage_pct, Some(0.0));
    assert_eq!(p.reading.kv_capacity_tokens(), Some(81767.0 * 16.0));
}

#[test]
fn f04_v1_docs_under_load() {
    let p = page("04-v1-docs-design-example-under-load-elided.prom");
    assert_eq!(skipped_lines(&p), vec![4, 8, 14]);
    let s = one(&p);
    assert_eq!(s.model_name, "meta-llama/Llama-3.1-8B-Instruct");
    assert_eq!(s.requests_running, Some(8));
    assert_eq!(s.generation_tokens_total, Some(27453));
    assert_eq!(s.requests_finished_total, Some(132));
}

#[test]
fn f05_v1_010_old_and_new_names() {
    let p = page("05-v1-0.10-nvidia-25.09-after-6-requests.prom");
    assert!(p.exp.skipped.is_empty());
    let s = one(&p);
    assert_eq!(s.model_name, "Qwen/Qwen3-4B-Instruct-2507-FP8");
    // 0.0011764705882353343 fraction → percent, from kv_cache_usage_perc (preferred).
    assert!((s.kv_cache_usage_pct.unwrap() - 0.11764705882353343).abs() < 1e-12);
    // Old and new prefix-cache names side by side are not double counted.
    assert_eq!(s.prefix_cache_queries_total, Some(246));
    assert_eq!(s.prefix_cache_hits_total, Some(80));
    assert_eq!(s.prompt_tokens_total, Some(246));
    assert_eq!(s.generation_tokens_total, Some(1739));
    assert_eq!(s.requests_finished_total, Some(6));
    // ITL comes from the deprecated TPOT family on this version.
    let itl = p.reading.engines[0].histogram(Hist::Itl).unwrap();
    assert!(itl.count > 0.0);
    assert_eq!(p.reading.kv_capacity_tokens(), Some(850.0 * 16.0));
}

#[test]
fn f06_v1_011_idle() {
    let p = page("06-v1-0.11.0-idle-full.prom");
    assert!(p.exp.skipped.is_empty());
    let s = one(&p);
    assert_eq!(s.model_name, "Qwen/Qwen1.5-0.5B-Chat");
    assert_eq!(s.kv_cache_usage_pct, Some(0.0));
    assert_eq!(s.requests_finished_total, Some(0));
    assert_eq!(p.reading.kv_capacity_tokens(), Some(2452.0 * 16.0));
    assert!(
        p.reading.unknown_vllm.is_empty(),
        "{:?}",
        p.reading.unknown_vllm
    );
}

#[test]
fn f07_v1_029_prefix_hits() {
    let p = page("07-v1-0.29-after-10-requests-prefix-hits.prom");
    assert!(p.exp.skipped.is_empty());
    let s = one(&p);
    assert_eq!(s.model_name, "qwen2.5-1.5b");
    assert_eq!(s.prefix_cache_queries_total, Some(530));
    assert_eq!(s.prefix_cache_hits_total, Some(432));
    assert_eq!(s.prompt_tokens_total, Some(530));
    assert_eq!(s.generation_tokens_total, Some(584));
    assert_eq!(s.requests_finished_total, Some(10));
    let ttft = p.reading.engines[0].histogram(Hist::Ttft).unwrap();
    assert_eq!(ttft.count, 10.0);
    assert_eq!(ttft.buckets.last().unwrap().0, f64::INFINITY);
    assert_eq!(p.reading.kv_capacity_tokens(), Some(20184.0 * 16.0));
}

#[test]
fn f08_triton_reexport() {
    let p = page("08-triton-vllm-backend-reexport-elided.prom");
    assert_eq!(skipped_lines(&p), vec![12, 19, 26, 33, 40, 47]);
    let s = one(&p);
    // Triton labels the model `model`, not `model_name`.
    assert_eq!(s.model_name, "vllm_model");
    assert_eq!(s.prompt_tokens_total, Some(10));
    assert_eq!(s.generation_tokens_total, Some(16));
}

#[test]
fn f09_v1_026_queue_pressure() {
    let p = page("09-v1-0.26-h100-queue-pressure.prom");
    assert!(p.exp.skipped.is_empty());
    let s = one(&p);
    assert_eq!(s.model_name, "dummy-llama");
    assert_eq!(s.requests_running, Some(64));
    assert_eq!(s.requests_waiting, Some(192));
    assert_eq!(s.requests_waiting_capacity, Some(192));
    assert_eq!(s.requests_waiting_deferred, Some(0));
    assert!((s.kv_cache_usage_pct.unwrap() - 37.5366568914956).abs() < 1e-9);
    assert_eq!(s.prefix_cache_queries_total, Some(253264));
    assert_eq!(s.generation_tokens_total, Some(127142));
    assert_eq!(p.reading.kv_capacity_tokens(), Some(1024.0 * 16.0));
}

#[test]
fn f10_v1_026_kv_saturation() {
    let p = page("10-v1-0.26-h100-kv-saturation-preempting.prom");
    assert!(p.exp.skipped.is_empty());
    let s = one(&p);
    assert!((s.kv_cache_usage_pct.unwrap() - 90.71358748778103).abs() < 1e-9);
    assert_eq!(s.requests_running, Some(6));
    assert_eq!(s.requests_waiting, Some(26));
    assert_eq!(s.preemptions_total, Some(17));
    assert_eq!(s.prompt_tokens_total, Some(467988));
    assert_eq!(s.generation_tokens_total, Some(246499));
    assert_eq!(s.requests_finished_total, Some(6600));
    let ttft = p.reading.engines[0].histogram(Hist::Ttft).unwrap();
    assert_eq!(ttft.count, 6673.0);
    assert_eq!(ttft.buckets.len(), 23);
}

#[test]
fn rates_and_interval_quantiles_from_two_pages() {
    // Page 09 then page 10 of the same server, 10 s apart: counters advance.
    let mut n = Normalizer::new();
    let a = adapter::read(&prom::parse(&fixture_text(
        "09-v1-0.26-h100-queue-pressure.prom",
    )));
    let b = adapter::read(&prom::parse(&fixture_text(
        "10-v1-0.26-h100-kv-saturation-preempting.prom",
    )));
    n.normalize("srv", 0, 0.0, None, &a);
    let rows = n.normalize("srv", 10_000_000, 10.0, None, &b).samples;
    let s = &rows[0];
    assert_eq!(s.interval_s, Some(10.0));
    assert!(!s.counter_reset);
    assert_eq!(s.preemptions_per_s, Some(1.7));
    assert!((s.generation_tokens_per_s.unwrap() - (246499.0 - 127142.0) / 10.0).abs() < 1e-9);
    assert!(s.ttft_p95_s.is_some());
    // The reverse order is a counter reset: rates use the new values as the increase.
    let mut n = Normalizer::new();
    n.normalize("srv", 0, 0.0, None, &b);
    let rows = n.normalize("srv", 10_000_000, 10.0, None, &a).samples;
    assert!(rows[0].counter_reset);
    assert_eq!(rows[0].preemptions_per_s, Some(0.0));
    assert!((rows[0].generation_tokens_per_s.unwrap() - 12714.2).abs() < 1e-6);
}

#[test]
fn ray_prefix_and_openmetrics_counter_names() {
    let text = "# TYPE ray_vllm:num_requests_running gauge\nray_vllm:num_requests_running{model_name=\"m\",WorkerId=\"w\"} 3.0\n# TYPE ray_vllm:num_requests_waiting gauge\nray_vllm:num_requests_waiting{model_name=\"m\"} 1.0\n# TYPE ray_vllm:gpu_cache_usage_perc gauge\nray_vllm:gpu_cache_usage_perc{model_name=\"m\"} 0.5\n# TYPE vllm:num_preemptions counter\nvllm:num_preemptions_total{model_name=\"m\"} 4.0\nvllm:num_preemptions_created{model_name=\"m\"} 1.7e9\n# EOF\n";
    let r = adapter::read(&prom::parse(text));
    let rows = Normalizer::new().normalize("s", 0, 0.0, None, &r).samples;
    assert_eq!(rows[0].requests_running, Some(3));
    assert_eq!(rows[0].kv_cache_usage_pct, Some(50.0));
    assert_eq!(rows[0].preemptions_total, Some(4));
    assert!(r.missing_required().is_empty());
}

#[test]
fn data_parallel_engines_are_separate_rows() {
    let text = "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{engine=\"0\",model_name=\"m\"} 3.0\nvllm:num_requests_running{engine=\"1\",model_name=\"m\"} 5.0\n# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.2\nvllm:kv_cache_usage_perc{engine=\"1\",model_name=\"m\"} 0.6\n";
    let r = adapter::read(&prom::parse(text));
    let rows = Normalizer::new().normalize("s", 0, 0.0, None, &r).samples;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].engine, "0");
    assert_eq!(rows[1].requests_running, Some(5));
    assert_eq!(rows[1].kv_cache_usage_pct, Some(60.0));
}

#[test]
fn blocks_era_prefix_counters_become_tokens() {
    // 0.8.x: gpu_prefix_cache_* counted blocks; cache_config_info has no engine label.
    let text = "# TYPE vllm:gpu_prefix_cache_queries_total counter\nvllm:gpu_prefix_cache_queries_total{model_name=\"m\"} 10.0\n# TYPE vllm:gpu_prefix_cache_hits_total counter\nvllm:gpu_prefix_cache_hits_total{model_name=\"m\"} 4.0\n# TYPE vllm:cache_config_info gauge\nvllm:cache_config_info{block_size=\"16\",num_gpu_blocks=\"100\"} 1.0\n";
    let r = adapter::read(&prom::parse(text));
    let rows = Normalizer::new().normalize("s", 0, 0.0, None, &r).samples;
    assert_eq!(rows[0].prefix_cache_queries_total, Some(160));
    assert_eq!(rows[0].prefix_cache_hits_total, Some(64));
}

#[test]
fn a_routers_reexported_gauges_are_not_read_as_an_engine() {
    // Summed, the router's two backends would read as one engine running 15 requests
    // with 40 waiting and no KV usage.
    let r = adapter::read(&prom::parse(ROUTER_PAGE));
    assert!(r.engines.is_empty(), "{:?}", r.engines);
    assert_eq!(
        r.router_backends.iter().collect::<Vec<_>>(),
        ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]
    );
    assert_eq!(r.missing_required().len(), 3);
    // A `server` label on vLLM's own series (a relabelling scrape) changes nothing.
    let text = "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{model_name=\"m\",server=\"gpu-7\"} 3.0\n# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name=\"m\",server=\"gpu-7\"} 1.0\n# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\",server=\"gpu-7\"} 0.25\n";
    let r = adapter::read(&prom::parse(text));
    assert!(r.router_backends.is_empty());
    assert!(r.missing_required().is_empty());
    // Router series beside an engine's (one merged page): the engine alone is read.
    let merged = format!("{ROUTER_PAGE}{text}");
    let r = adapter::read(&prom::parse(&merged));
    assert_eq!(r.router_backends.len(), 2);
    let rows = Normalizer::new().normalize("s", 0, 0.0, None, &r).samples;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].requests_running, Some(3));
    assert_eq!(rows[0].requests_waiting, Some(1));
    assert_eq!(rows[0].kv_cache_usage_pct, Some(25.0));
}

#[test]
fn several_servers_on_one_page_are_not_summed_into_one_engine() {
    // Two pods' series for the same model and engine (a federation, or an aggregating
    // sidecar): summed, KV usage would read 150 % and the requests of both as one.
    let text = "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{engine=\"0\",model_name=\"m\",pod=\"vllm-0\"} 3.0\nvllm:num_requests_running{engine=\"0\",model_name=\"m\",pod=\"vllm-1\"} 5.0\n# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{engine=\"0\",model_name=\"m\",pod=\"vllm-0\"} 0.0\nvllm:num_requests_waiting{engine=\"0\",model_name=\"m\",pod=\"vllm-1\"} 7.0\n# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\",pod=\"vllm-0\"} 0.6\nvllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\",pod=\"vllm-1\"} 0.9\n";
    let r = adapter::read(&prom::parse(text));
    assert!(r.engines.is_empty(), "{:?}", r.engines);
    assert_eq!(
        r.mixed_servers.as_deref(),
        Some(
            "2 series of vllm:num_requests_running for model_name `m`, engine 0, differing in `pod`: several servers on one page (a federation or aggregating endpoint)"
        )
    );
    // Data-parallel engines, and a counter split by a label of its own, are one server.
    let dp = "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{engine=\"0\",model_name=\"m\"} 3.0\nvllm:num_requests_running{engine=\"1\",model_name=\"m\"} 5.0\n# TYPE vllm:request_success counter\nvllm:request_success_total{engine=\"0\",finished_reason=\"stop\",model_name=\"m\"} 4.0\nvllm:request_success_total{engine=\"0\",finished_reason=\"length\",model_name=\"m\"} 2.0\n";
    let r = adapter::read(&prom::parse(dp));
    assert_eq!(r.mixed_servers, None);
    assert_eq!(r.engines.len(), 2);
    // Every real page of the corpus reads as one server.
    for name in [
        "01-v0.5-fork-idle-bsc.prom",
        "05-v1-0.10-nvidia-25.09-after-6-requests.prom",
        "06-v1-0.11.0-idle-full.prom",
        "07-v1-0.29-after-10-requests-prefix-hits.prom",
        "08-triton-vllm-backend-reexport-elided.prom",
        "09-v1-0.26-h100-queue-pressure.prom",
        "10-v1-0.26-h100-kv-saturation-preempting.prom",
    ] {
        let p = page(name);
        assert_eq!(p.reading.mixed_servers, None, "{name}");
        assert!(p.reading.router_backends.is_empty(), "{name}");
        assert!(!p.reading.engines.is_empty(), "{name}");
    }
}

#[test]
fn two_vllm_models_on_one_page_are_two_servers() {
    // vLLM labels every series of a server with its one served model name: two are two
    // servers (here under one `job`), not two engines of one.
    let text = "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{engine=\"0\",instance=\"a:8000\",model_name=\"llama\"} 3.0\nvllm:num_requests_running{engine=\"0\",instance=\"b:8000\",model_name=\"qwen\"} 5.0\n# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{engine=\"0\",instance=\"a:8000\",model_name=\"llama\"} 0.0\nvllm:num_requests_waiting{engine=\"0\",instance=\"b:8000\",model_name=\"qwen\"} 7.0\n";
    let r = adapter::read(&prom::parse(text));
    assert!(r.engines.is_empty(), "{:?}", r.engines);
    assert_eq!(
        r.mixed_servers.as_deref(),
        Some(
            "2 series of vllm:num_requests_running for 2 models (`llama`, `qwen`), differing in `instance`, `model_name`: several servers on one page (a federation or aggregating endpoint)"
        )
    );
    // Triton's vLLM backend hosts several models in one server, each labelled `model`.
    let triton = "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{model=\"a\",version=\"1\"} 3.0\nvllm:num_requests_running{model=\"b\",version=\"1\"} 5.0\n";
    let r = adapter::read(&prom::parse(triton));
    assert_eq!(r.mixed_servers, None);
    assert_eq!(r.engines.len(), 2);
}

/// What the API server's HTTP counter says, page by page: generation requests answered
/// 2xx (finished or abandoned), other handlers and statuses left out; a page without the
/// family has no count, a family without a generation request yet counts 0.
#[test]
fn http_completions_of_the_real_pages() {
    let counted = |name: &str| page(name).reading.http_completed;
    // vLLM 0.5's fork: no instrumentator counter on the page.
    assert_eq!(counted("01-v0.5-fork-idle-bsc.prom"), None);
    // 0.10: 27 `/v1/models` GETs are not requests to the engine; 6 chat completions are.
    assert_eq!(
        counted("05-v1-0.10-nvidia-25.09-after-6-requests.prom"),
        Some(6.0)
    );
    // 0.11, idle: the family with no sample yet.
    assert_eq!(counted("06-v1-0.11.0-idle-full.prom"), Some(0.0));
    assert_eq!(
        counted("07-v1-0.29-after-10-requests-prefix-hits.prom"),
        Some(10.0)
    );
    assert_eq!(counted("09-v1-0.26-h100-queue-pressure.prom"), Some(3770.0));
    assert_eq!(
        counted("10-v1-0.26-h100-kv-saturation-preempting.prom"),
        Some(6855.0)
    );
    let other = "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{engine=\"0\",model_name=\"m\"} 1.0\n# TYPE http_requests_total counter\nhttp_requests_total{handler=\"/v1/chat/completions\",method=\"POST\",status=\"4xx\"} 9.0\nhttp_requests_total{handler=\"/tokenize\",method=\"POST\",status=\"2xx\"} 5.0\nhttp_requests_total{handler=\"/v1/embeddings\",method=\"POST\",status=\"2xx\"} 5.0\nhttp_requests_total{handler=\"/v1/completions\",method=\"POST\",status=\"200\"} 3.0\n# TYPE http_requests_created gauge\nhttp_requests_created{handler=\"/v1/completions\",method=\"POST\",status=\"200\"} 1.7e9\n";
    assert_eq!(adapter::read(&prom::parse(other)).http_completed, Some(3.0));
}

/// A vLLM 0.26-like page: one engine's gauges, its finished requests (`length`, and the
/// `abort` series vLLM keeps at 0 for disconnects) and the HTTP counter.
fn served(running: u32, waiting: u32, finished: u32, engine_aborts: u32, http: u32) -> String {
    format!(
        "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{{engine=\"0\",model_name=\"m\"}} {running}.0\n\
         # TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{{engine=\"0\",model_name=\"m\"}} {waiting}.0\n\
         # TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{{engine=\"0\",model_name=\"m\"}} 0.5\n\
         # TYPE vllm:request_success_total counter\n\
         vllm:request_success_total{{engine=\"0\",finished_reason=\"length\",model_name=\"m\"}} {finished}.0\n\
         vllm:request_success_total{{engine=\"0\",finished_reason=\"abort\",model_name=\"m\"}} {engine_aborts}.0\n\
         # TYPE http_requests_total counter\n\
         http_requests_total{{handler=\"/v1/chat/completions\",method=\"POST\",status=\"2xx\"}} {http}.0\n"
    )
}

fn abandoned_per_s(n: &mut Normalizer, server: &str, t: u32, page: &str) -> Vec<Option<f64>> {
    let r = adapter::read(&prom::parse(page));
    n.normalize(server, i64::from(t) * 1_000_000, f64::from(t), None, &r)
        .samples
        .iter()
        .map(|s| s.requests_abandoned_per_s)
        .collect()
}

/// Clients that give up while their requests wait, each replaced by a retry, move no
/// gauge: running and waiting stand still, every request that got a first token
/// finished. Only the HTTP counter sees them leave.
#[test]
fn an_abort_storm_of_retries_is_counted_from_http_completions() {
    // (t, running, waiting, finished, counted as `abort`, answered over HTTP) → what
    // left per second over the interval to t.
    let pages: [(u32, [u32; 5], Option<f64>); 9] = [
        (0, [8, 20, 100, 0, 150], None),
        // The engines' books count what the gauges show: 8 running requests left with
        // none finished (4/s over 2 s). Their streams close by the next scrape: the
        // HTTP book sees the same 8 then, and they are not counted twice.
        (2, [0, 20, 100, 0, 150], Some(4.0)),
        (4, [0, 20, 100, 0, 158], Some(0.0)),
        // The storm: 10 requests finish and 15 waiting ones are abandoned every 2 s,
        // their places taken by retries. 5 of them are counted as `abort` by a later
        // vLLM, which changes nothing.
        (6, [8, 20, 110, 0, 183], Some(7.5)),
        (8, [8, 20, 120, 5, 208], Some(7.5)),
        // vLLM records a step's finished requests before their streams close: a scrape
        // between the two reads 6 of 10 answered (a dip), the next one all of them.
        // Neither is an abort.
        (10, [8, 20, 130, 5, 214], Some(0.0)),
        (12, [8, 20, 140, 5, 228], Some(0.0)),
        // A restart: the counters start over, and so do the books.
        (14, [0, 0, 0, 0, 0], None),
        (16, [2, 3, 4, 0, 10], Some(3.0)),
    ];
    let mut n = Normalizer::new();
    for (t, [r, w, f, a, h], want) in pages {
        let got = abandoned_per_s(&mut n, "s", t, &served(r, w, f, a, h));
        assert_eq!(got, [want], "t = {t} s");
    }
    // A server never answered a generation request over HTTP (the family appears with
    // the first one): nothing counted before, the books start from there.
    let mut n = Normalizer::new();
    let quiet = served(0, 0, 0, 0, 0).replace(
        "http_requests_total{handler=\"/v1/chat/completions\",method=\"POST\",status=\"2xx\"} 0.0\n",
        "",
    );
    let quiet = quiet.replace("# TYPE http_requests_total counter\n", "");
    assert_eq!(abandoned_per_s(&mut n, "q", 0, &quiet), [None]);
    assert_eq!(abandoned_per_s(&mut n, "q", 1, &quiet), [Some(0.0)]);
    assert_eq!(
        abandoned_per_s(&mut n, "q", 2, &served(1, 0, 3, 0, 3)),
        [Some(0.0)]
    );
    assert_eq!(
        abandoned_per_s(&mut n, "q", 3, &served(1, 0, 5, 0, 9)),
        [Some(4.0)]
    );
}

/// The HTTP counter belongs to the server, not to an engine: on a data-parallel server
/// what it finds beyond the engines' books goes where those books found requests leave
/// (to the first engine when they found none), so the server's sum is the HTTP count.
#[test]
fn the_http_book_of_a_data_parallel_server_is_shared_among_its_engines() {
    let dp = |r0: u32, f0: u32, r1: u32, f1: u32, http: u32| {
        let one = |e: &str, r: u32, f: u32| {
            served(r, 0, f, 0, 0)
                .replace("engine=\"0\"", &format!("engine=\"{e}\""))
                .lines()
                .filter(|l| l.starts_with("vllm:"))
                .map(|l| format!("{l}\n"))
                .collect::<String>()
        };
        format!(
            "{}{}# TYPE http_requests_total counter\nhttp_requests_total{{handler=\"/v1/completions\",method=\"POST\",status=\"2xx\"}} {http}.0\n",
            one("0", r0, f0),
            one("1", r1, f1)
        )
    };
    let mut n = Normalizer::new();
    assert_eq!(
        abandoned_per_s(&mut n, "dp", 0, &dp(4, 10, 4, 10, 20)),
        [None, None]
    );
    // 6 left beyond what finished (HTTP 20 → 36, finished 20 → 30), no gauge moved.
    assert_eq!(
        abandoned_per_s(&mut n, "dp", 1, &dp(4, 15, 4, 15, 36)),
        [Some(6.0), Some(0.0)]
    );
    // Engine 1's running fell by 4 with none finished (its book: 4), and HTTP says 8
    // left: 8 shared 0 : 4.
    assert_eq!(
        abandoned_per_s(&mut n, "dp", 2, &dp(4, 15, 0, 15, 44)),
        [Some(0.0), Some(8.0)]
    );
}
