//! `kvscope export`: sessions into one Hive-partitioned Parquet dataset. A bad session
//! is reported and skipped; the others are still exported (exit 2).

use std::process::ExitCode;

use super::common;
use crate::store::export::{self, ExportReport, PartitionKey};
use crate::store::location::Location;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Session directories or s3:// URLs, or directories/prefixes holding sessions.
    #[arg(required = true)]
    pub sessions: Vec<String>,
    /// Dataset root: a local directory or s3:// prefix.
    #[arg(long)]
    pub out: String,
    /// Hive partition columns, comma-separated: server, date.
    #[arg(long, value_delimiter = ',', value_parser = PartitionKey::parse, default_value = "server,date")]
    pub partition_by: Vec<PartitionKey>,
    #[command(flatten)]
    pub cluster: common::ClusterArgs,
}

pub struct Outcome {
    pub out: Location,
    pub report: ExportReport,
    pub failures: Vec<(String, anyhow::Error)>,
    pub elapsed_s: f64,
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let o = execute(&a).await?;
    for (loc, e) in &o.failures {
        eprintln!("error: exporting {loc}: {}", super::error_message(e));
    }
    let r = &o.report;
    eprintln!(
        "exported {} session(s): {} rows in {} file(s), {:.1} MB, {:.2} s",
        r.sessions,
        r.rows,
        r.files,
        r.bytes as f64 / 1e6,
        o.elapsed_s
    );
    println!("{}", o.out);
    Ok(if o.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

pub async fn execute(a: &Args) -> anyhow::Result<Outcome> {
    let sessions = common::find_sessions(&a.sessions).await?;
    let out = Location::parse(&a.out)?;
    let pb = common::progress(sessions.len(), "export");
    let mut report = ExportReport::default();
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    #[cfg(feature = "cluster")]
    if let Some(cluster) = a.cluster.get()? {
        pb.finish_and_clear();
        let results = cluster.export(&sessions, &out, &a.partition_by).await?;
        for (loc, r) in sessions.iter().zip(results) {
            match r {
                Ok(r) => {
                    report.sessions += r.sessions;
                    report.files += r.files;
                    report.rows += r.rows;
                    report.bytes += r.bytes;
                }
                Err(e) => failures.push((loc.to_string(), anyhow::Error::msg(e))),
            }
        }
        return Ok(Outcome {
            out,
            report,
            failures,
            elapsed_s: started.elapsed().as_secs_f64(),
        });
    }
    #[cfg(not(feature = "cluster"))]
    if let Some(never) = a.cluster.get()? {
        match never {}
    }
    for loc in &sessions {
        if let Err(e) = export::export_session(loc, &out, &a.partition_by, &mut report).await {
            failures.push((loc.to_string(), e.into()));
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(Outcome {
        out,
        report,
        failures,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}
