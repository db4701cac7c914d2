//! `kvscope worker`: serve this machine to a cluster (feature `cluster`): a
//! datafusion-distributed worker that `analyze|doctor --cluster URL` hand shards of
//! sessions, or whole sessions, to.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (IP:PORT; port 0 picks a free one). Prints
    /// `listening on http://IP:PORT` once it accepts connections.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub listen: String,
}

#[cfg(feature = "cluster")]
pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    use anyhow::Context as _;
    use std::io::Write as _;
    let addr: std::net::SocketAddr = a
        .listen
        .parse()
        .with_context(|| format!("--listen {}: not an address (IP:PORT)", a.listen))?;
    crate::cluster::worker::serve(addr, |bound| {
        println!("listening on http://{bound}");
        let _ = std::io::stdout().flush();
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "cluster"))]
pub async fn run(_: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("worker: {}", super::common::NO_CLUSTER)
}
