//! The vocabulary: every phase, condition, event, event type, hypothesis, severity and
//! doctor status KVScope names, defined once.
//!
//! The SQL catalog in `queries/` emits these names as string literals; a test reads the
//! catalog and checks that every name it can emit is here and that every value here is
//! emitted by some query. Everything in Rust (rules, presenters, the simulator's ground
//! truth, summaries) names them through these enums, so a rename is a compile error, not a
//! rule that silently stops firing. On the wire (JSON, Parquet, SQL) each value is its
//! [`as_str`](Phase::as_str) name; ordering is by that name, so maps keyed by these enums
//! serialize exactly as maps keyed by the names did.

use std::fmt;
use std::str::FromStr;

/// A name that is not in the vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{name}` (known: {known})")]
pub struct UnknownName {
    pub kind: &'static str,
    pub name: String,
    pub known: String,
}

macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident, $kind:literal {
        $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];
            /// What this value is called in the vocabulary's text.
            pub const KIND: &'static str = $kind;

            /// The wire name (`events.jsonl`, `summary.json`, SQL).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(UnknownName {
                        kind: $kind,
                        name: s.to_string(),
                        known: Self::ALL
                            .iter()
                            .map(|v| v.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    }),
                }
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Ord for $name {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                self.as_str().cmp(other.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

vocabulary! {
    /// One per sample and server; classification priority `IDLE` → `SATURATED` →
    /// `QUEUE_PRESSURE` → `KV_PRESSURE_RISING` → `HEALTHY` (`queries/02_timeline.sql`).
    /// `NO_DATA` marks a failed scrape.
    Phase, "phase" {
        Idle = "IDLE",
        Saturated = "SATURATED",
        QueuePressure = "QUEUE_PRESSURE",
        KvPressureRising = "KV_PRESSURE_RISING",
        Healthy = "HEALTHY",
        NoData = "NO_DATA",
    }
}

vocabulary! {
    /// States concurrent with the phase; changes and sustained episodes are events.
    Condition, "condition" {
        PrefillPressure = "PREFILL_PRESSURE",
        HighPromptIngestion = "HIGH_PROMPT_INGESTION",
        TtftElevated = "TTFT_ELEVATED",
        QueueDelay = "QUEUE_DELAY",
        EngineStalled = "ENGINE_STALLED",
    }
}

vocabulary! {
    /// Transient and data-quality events (`event` in `events.jsonl`).
    EventName, "event" {
        TtftSpike = "TTFT_SPIKE",
        E2eLatencySpike = "E2E_LATENCY_SPIKE",
        KvSaturation = "KV_SATURATION",
        DecodeThroughputDrop = "DECODE_THROUGHPUT_DROP",
        PreemptionBurst = "PREEMPTION_BURST",
        ClientAbortSurge = "CLIENT_ABORT_SURGE",
        KvBlockChurn = "KV_BLOCK_CHURN",
        ScrapeGap = "SCRAPE_GAP",
        CounterReset = "COUNTER_RESET",
    }
}

impl EventName {
    /// What an event's `baseline` field holds, as the text output names it: a rolling
    /// median for the spikes, what the batch generated before for a decode drop, the
    /// median scrape interval for a gap, and for the events that fire on a fixed
    /// threshold that threshold (13_transient_events.sql, 14_data_quality_events.sql
    /// choose the values; "95" after a KV saturation is the threshold crossed, not a
    /// baseline the server had; a test in `analysis` checks the two agree).
    pub const fn baseline_label(self) -> &'static str {
        match self {
            Self::TtftSpike | Self::E2eLatencySpike => "baseline",
            Self::DecodeThroughputDrop => "expected",
            Self::ScrapeGap => "median interval",
            Self::KvSaturation
            | Self::PreemptionBurst
            | Self::ClientAbortSurge
            | Self::KvBlockChurn
            | Self::CounterReset => "threshold",
        }
    }
}

vocabulary! {
    /// The `type` of an `events.jsonl` line.
    EventType, "event type" {
        PhaseTransition = "phase_transition",
        ConditionChange = "condition_change",
        ConditionEpisode = "condition_episode",
        Transient = "transient",
        DataQuality = "data_quality",
    }
}

vocabulary! {
    /// Doctor's hypotheses (`id` in `doctor.json`), one rule each under
    /// `src/diagnosis/rules/`.
    Hypothesis, "hypothesis" {
        StuckEngine = "STUCK_ENGINE",
        KvCacheThrashing = "KV_CACHE_THRASHING",
        KvCapacityUndersized = "KV_CAPACITY_UNDERSIZED",
        QueueSaturation = "QUEUE_SATURATION",
        PrefillStarvation = "PREFILL_STARVATION",
        DecodeThroughputCollapse = "DECODE_THROUGHPUT_COLLAPSE",
        TtftInstability = "TTFT_INSTABILITY",
        PrefixCacheIneffective = "PREFIX_CACHE_INEFFECTIVE",
        KvLeak = "KV_LEAK",
        ClientAborts = "CLIENT_ABORTS",
        AdmissionRejections = "ADMISSION_REJECTIONS",
        ServerDown = "SERVER_DOWN",
        ServerRestart = "SERVER_RESTART",
        TelemetryGaps = "TELEMETRY_GAPS",
        GpuUnderutilized = "GPU_UNDERUTILIZED",
        ApiServerSaturated = "API_SERVER_SATURATED",
        KvCacheChurn = "KV_CACHE_CHURN",
        Healthy = "HEALTHY",
    }
}

vocabulary! {
    /// A finding's severity, from its score and the `severity_*_score` cutoffs. (An old
    /// `doctor.json` without one reads as `info`.)
    #[derive(Default)]
    Severity, "severity" {
        #[default]
        Info = "info",
        Low = "low",
        Medium = "medium",
        High = "high",
    }
}

impl Severity {
    /// Rank for "worst of": info < low < medium < high.
    pub fn rank(self) -> u8 {
        match self {
            Self::Info => 0,
            Self::Low => 1,
            Self::Medium => 2,
            Self::High => 3,
        }
    }
    /// Medium or high: a finding that decides the verdict.
    pub fn is_loud(self) -> bool {
        self.rank() >= Self::Medium.rank()
    }
}

vocabulary! {
    /// `status` of `doctor.json`. (An old `doctor.json` without one reads as
    /// `indeterminate`.)
    #[derive(Default)]
    Status, "status" {
        Findings = "findings",
        Healthy = "healthy",
        #[default]
        Indeterminate = "indeterminate",
        NoData = "no_data",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_order_by_name() {
        for p in Phase::ALL {
            assert_eq!(p.as_str().parse::<Phase>(), Ok(*p));
            assert_eq!(serde_json::to_string(p).unwrap(), format!("\"{p}\""));
        }
        assert!(Phase::Healthy < Phase::Idle);
        let err = "PREFIL_PRESSURE".parse::<Condition>().unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown condition `PREFIL_PRESSURE`")
        );
        assert!(serde_json::from_str::<Severity>("\"severe\"").is_err());
        assert_eq!(
            serde_json::from_str::<Severity>("\"medium\"").unwrap(),
            Severity::Medium
        );
    }
}
